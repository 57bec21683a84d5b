"""Telling the task queue which executions to look at.

The queue delivers at least once and may lose or repeat a message; the execution rows are
the truth. A message only says "look at execution N now", so a repeated message costs one
UPDATE that matches nothing, and a lost one is sent again by the reaper.
"""

import contextlib
import datetime
import logging

from django.db import DatabaseError, transaction

logger = logging.getLogger(__name__)


def send(execution_ids, *, run_after: datetime.datetime | None = None) -> int:
    """Enqueue one task per execution now (not on commit). Returns how many were sent.

    Callers set `dispatched_at` in the same UPDATE that makes the execution claimable.
    """
    task = _task(run_after)
    sent = []
    for execution_id in execution_ids:
        try:
            task.enqueue(execution_id)
        except Exception:
            # The row stays claimable; the reaper sends another message later.
            logger.exception("could not enqueue execution %s", execution_id)
        else:
            sent.append(execution_id)
    return len(sent)


def send_on_commit(
    execution_ids, *, run_after: datetime.datetime | None = None, isolated: bool = True
) -> None:
    """Enqueue so that no worker sees a message before its execution row.

    With the database queue (django-tasks-db) inside a transaction, the messages are
    written in that transaction (a transactional outbox): they commit or roll back with
    the executions, and ingestion needs one commit instead of two. If writing them fails,
    `isolated` rolls back only their savepoint (the rows stay claimable and the reaper
    sends again); otherwise the error reaches the caller and its transaction fails.
    With Redis, or outside a transaction, they are sent once the data is committed.
    """
    ids = list(execution_ids)
    if not ids:
        return
    if not (transaction.get_connection().in_atomic_block and _queue_in_database()):
        transaction.on_commit(lambda: send(ids, run_after=run_after))
        return
    task = _task(run_after)
    try:
        with transaction.atomic() if isolated else contextlib.nullcontext():
            for execution_id in ids:
                task.enqueue(execution_id)
    except DatabaseError:
        if not isolated:
            raise
        logger.exception("could not enqueue executions %s", ids)


def _task(run_after: datetime.datetime | None):
    from events.tasks import run_execution

    return run_execution.using(run_after=run_after) if run_after else run_execution


def _queue_in_database() -> bool:
    from django_tasks_db import DatabaseBackend

    from events.tasks import run_execution

    return isinstance(run_execution.get_backend(), DatabaseBackend)


def queue_behind(cutoff: datetime.datetime) -> bool:
    """True if the database queue holds a runnable execution message enqueued before
    `cutoff` (always False with Redis, whose queue is not inspected)."""
    if not _queue_in_database():
        return False
    from django_tasks_db.models import DBTaskResult

    from events.tasks import run_execution

    return (
        DBTaskResult.objects.ready()
        .filter(task_path=run_execution.module_path, enqueued_at__lt=cutoff)
        .exists()
    )
