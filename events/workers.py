"""Worker heartbeats: which workers are alive, and the background reaper loop."""

import datetime
import logging
import os
import socket
import threading

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from events import bulk, execution
from events.models import WorkerHeartbeat

logger = logging.getLogger(__name__)


# Executions this process has run; the housekeeper writes it with each heartbeat.
executions_run = 0


def beat(worker_id: str, *, engine: str) -> None:
    """Record that this worker is alive."""
    now = timezone.now()
    updated = WorkerHeartbeat.objects.filter(worker_id=worker_id).update(
        last_seen_at=now, executions_run=executions_run
    )
    if not updated:
        WorkerHeartbeat.objects.update_or_create(
            worker_id=worker_id,
            defaults={
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "engine": engine,
                "started_at": now,
                "last_seen_at": now,
            },
        )


def gone(worker_id: str) -> None:
    WorkerHeartbeat.objects.filter(worker_id=worker_id).delete()


def live_workers():
    cutoff = timezone.now() - datetime.timedelta(seconds=settings.WORKER_STALE_SECONDS)
    return WorkerHeartbeat.objects.filter(last_seen_at__gte=cutoff)


def prune_stale(older_than_seconds: int = 3600) -> int:
    cutoff = timezone.now() - datetime.timedelta(seconds=older_than_seconds)
    return WorkerHeartbeat.objects.filter(last_seen_at__lt=cutoff).delete()[0]


def prune_task_results(*, older_than_seconds: int, limit: int = 1000) -> int:
    """Delete finished django-tasks-db rows; our own tables keep the history that matters."""
    if settings.TASKS_ENGINE != "db":
        return 0
    from django_tasks_db.models import DBTaskResult

    cutoff = timezone.now() - datetime.timedelta(seconds=older_than_seconds)
    pks = list(
        DBTaskResult.objects.finished()
        .filter(finished_at__lt=cutoff)
        .values_list("pk", flat=True)[:limit]
    )
    return DBTaskResult.objects.filter(pk__in=pks).delete()[0] if pks else 0


class Housekeeper(threading.Thread):
    """Beside the tasks worker: heartbeat and reaper every REAPER_INTERVAL_SECONDS."""

    def __init__(self, worker_id: str, *, engine: str):
        super().__init__(name="housekeeper", daemon=True)
        self.worker_id = worker_id
        self.engine = engine
        self.stopped = threading.Event()

    def run(self):
        passes = 0
        try:
            while True:
                try:
                    close_old_connections()
                    beat(self.worker_id, engine=self.engine)
                    done = execution.reap()
                    if any(done.values()):
                        logger.info("reaper: %s", done)
                    passes += 1
                    if passes % 12 == 1:
                        bulk.resume_stalled()
                        prune_task_results(
                            older_than_seconds=settings.TASK_RESULT_RETENTION_SECONDS
                        )
                except DatabaseError as exc:
                    logger.warning("housekeeping skipped: database unavailable (%s)", exc)
                    connection.close()
                except Exception:
                    logger.exception("housekeeping failed")
                if self.stopped.wait(settings.REAPER_INTERVAL_SECONDS):
                    return
        finally:
            connection.close()

    def stop(self):
        self.stopped.set()
        self.join(timeout=15)
