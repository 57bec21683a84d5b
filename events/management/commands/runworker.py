from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Run a worker that executes queued executions (the django-tasks-db worker). "
        "Stops cleanly on SIGTERM or Ctrl-C after the current execution."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--interval",
            type=float,
            default=0.5,
            help="Seconds to wait when the queue is empty (default: %(default)r).",
        )
        parser.add_argument(
            "--no-loop",
            action="store_true",
            help="Run what is queued now, then exit (for tests and cron).",
        )

    def handle(self, *args, interval, no_loop, verbosity, **options):
        call_command(
            "db_worker",
            interval=interval,
            batch=no_loop,
            reload=False,
            startup_delay=not no_loop,
            verbosity=verbosity,
        )
