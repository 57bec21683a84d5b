import logging
import signal
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import DatabaseError, connections

from events import execution, workers

logger = logging.getLogger(__name__)


def positive_float(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError("must be zero or more")
    return number


class Command(BaseCommand):
    help = (
        "Run a worker: executes queued executions through the tasks backend's worker, and "
        "beside it keeps a heartbeat and runs the reaper (expired leases, lost task messages). "
        "SIGTERM or Ctrl-C lets the current action finish; a second one abandons it and "
        "gives its execution back."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--interval",
            type=positive_float,
            default=0.1,
            help="Seconds to wait between polls when the queue is empty (default: %(default)r).",
        )
        parser.add_argument(
            "--no-loop",
            action="store_true",
            help="Reap once, run what is queued now, then exit (for tests and cron).",
        )

    def handle(self, *args, interval, no_loop, verbosity, **options):
        engine = settings.TASKS_ENGINE
        worker_id = execution.WORKER_ID
        if no_loop:
            execution.reap()
            return self._run_engine(engine, worker_id, interval, batch=True, verbosity=verbosity)

        housekeeper = workers.Housekeeper(worker_id, engine=engine)
        housekeeper.start()
        logger.info("worker %s started (engine: %s)", worker_id, engine)
        try:
            self._run_engine(engine, worker_id, interval, batch=False, verbosity=verbosity)
        finally:
            housekeeper.stop()
            try:
                workers.gone(worker_id)
            except Exception:
                logger.warning("could not remove the heartbeat of %s", worker_id)
            logger.info("worker %s stopped", worker_id)

    def _run_engine(self, engine, worker_id, interval, *, batch, verbosity):
        if engine == "rq":
            # SimpleWorker runs jobs in this process: no fork per job, and the database
            # connection is reused like the db engine's.
            call_command(
                "rqworker",
                "default",
                burst=batch,
                with_scheduler=True,
                name=worker_id,
                worker_class="rq.worker.SimpleWorker",
                job_class="django_tasks_rq.Job",
                verbosity=verbosity,
            )
            return
        # django-tasks-db's worker exits on a database error it does not expect (the
        # database restarting, a dropped connection). Our tables are the truth and every
        # step is conditional, so wait and start it again instead of leaving the host
        # without a worker. A half-finished execution comes back when its lease expires.
        delay = 1.0
        while True:
            try:
                call_command(
                    "db_worker",
                    interval=interval,
                    batch=batch,
                    reload=False,
                    startup_delay=False,
                    worker_id=worker_id[:64],
                    verbosity=verbosity,
                )
                return
            except DatabaseError as exc:
                if batch:
                    raise
                logger.warning(
                    "worker: database unavailable (%s: %s); trying again in %.0f s",
                    type(exc).__name__,
                    exc,
                    delay,
                )
            connections.close_all()
            # db_worker's signal handlers only tell its own (ended) loop to stop: while
            # waiting here, SIGTERM and Ctrl-C stop the worker at once (nothing is running).
            signal.signal(signal.SIGTERM, _exit_now)
            signal.signal(signal.SIGINT, _exit_now)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _exit_now(signum, frame):
    sys.exit(0)
