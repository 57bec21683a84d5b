"""Worker heartbeats: which workers are alive, and what each is doing."""

import os
import socket

from django.conf import settings
from django.utils import timezone

from events.models import WorkerHeartbeat


def beat(worker_id: str, *, concurrency: int, in_flight: int, claims: int, run: int) -> None:
    """Record that this worker is alive, with its figures."""
    now = timezone.now()
    figures = {
        "last_seen_at": now,
        "concurrency": concurrency,
        "in_flight": in_flight,
        "claims": claims,
        "executions_run": run,
    }
    if not WorkerHeartbeat.objects.filter(worker_id=worker_id).update(**figures):
        WorkerHeartbeat.objects.update_or_create(
            worker_id=worker_id,
            defaults={
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "started_at": now,
                **figures,
            },
        )


def gone(worker_id: str) -> None:
    WorkerHeartbeat.objects.filter(worker_id=worker_id).delete()


def live_workers():
    return WorkerHeartbeat.objects.live(settings.WORKER_STALE_SECONDS)


def prune_stale(older_than_seconds: int = 3600) -> int:
    return WorkerHeartbeat.objects.stale(older_than_seconds).delete()[0]
