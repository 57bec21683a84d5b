import argparse
import logging

from django.conf import settings
from django.core.management.base import BaseCommand

from events.engine import leases
from events.engine.worker import Worker
from events.operate import bulk, operations

logger = logging.getLogger(__name__)


def positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number; got {value!r}") from None
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"must be zero or more; got {value!r}")
    return number


def concurrency(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number; got {value!r}") from None
    if not 1 <= number <= 1000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 1000; got {number}")
    return number


class Command(BaseCommand):
    help = (
        "Run a worker: claims due executions from the executions table and runs up to "
        "--concurrency actions at once; beside them keeps a heartbeat, runs the reaper "
        "(expired leases), bulk operations and the expiry of executions not approved in "
        "time. SIGTERM or Ctrl-C stops claiming and lets "
        "the actions in flight finish (up to WORKER_GRACE_SECONDS); a second one abandons "
        "them and gives their executions back."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--concurrency",
            type=concurrency,
            default=None,
            help="Actions run at once by this process (default: WORKER_CONCURRENCY, "
            f"now {settings.WORKER_CONCURRENCY}).",
        )
        parser.add_argument(
            "--interval",
            type=positive_float,
            default=0.05,
            help="Seconds between polls for due work when idle (default: %(default)r). "
            "On PostgreSQL new work also wakes the worker at once (LISTEN/NOTIFY).",
        )
        parser.add_argument(
            "--no-loop",
            action="store_true",
            help="Reap and expire once, run what is due until nothing is left, then exit "
            "(for tests and cron).",
        )

    def handle(self, *args, concurrency, interval, no_loop, **options):
        worker = Worker(
            concurrency=concurrency or settings.WORKER_CONCURRENCY,
            poll_interval=interval,
            side_jobs=[bulk.run_next, operations.expire_approvals],
        )
        worker.install_signal_handlers()
        if no_loop:
            leases.reap()
            while bulk.run_next():
                pass
            while operations.expire_approvals():
                pass
            worker.run(until_idle=True, housekeeping=False)
            self.stdout.write(f"ran {worker.executions_run} execution(s)")
            return
        worker.run()
