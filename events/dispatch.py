"""Telling the task queue which executions to look at.

The queue delivers at least once and may lose or repeat a message; the execution rows are
the truth. A message only says "look at execution N now", so a repeated message costs one
UPDATE that matches nothing, and a lost one is sent again by the reaper.
"""

import datetime
import logging

from django.db import transaction

logger = logging.getLogger(__name__)


def send(execution_ids, *, run_after: datetime.datetime | None = None) -> int:
    """Enqueue one task per execution now (not on commit). Returns how many were sent.

    Callers set `dispatched_at` in the same UPDATE that makes the execution claimable.
    """
    from events.tasks import run_execution

    task = run_execution.using(run_after=run_after) if run_after else run_execution
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


def send_on_commit(execution_ids, *, run_after: datetime.datetime | None = None) -> None:
    """Enqueue after the current transaction commits, so no worker sees a missing row."""
    ids = list(execution_ids)
    if ids:
        transaction.on_commit(lambda: send(ids, run_after=run_after))
