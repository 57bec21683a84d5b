"""Waking idle workers the moment work arrives.

On PostgreSQL whoever makes an execution claimable (ingest, a replay, the reaper) sends
NOTIFY on CHANNEL in its own transaction, so it is delivered when the rows are committed
and never before; each worker LISTENs on a connection of its own and claims at once. A
lost notification costs nothing but latency: every worker still polls the partial index.
On SQLite there is nothing to listen to, and the poll is the mechanism.
"""

import logging
import threading

import psycopg
from django.db import DatabaseError, connection, transaction

logger = logging.getLogger(__name__)

CHANNEL = "automation_runtime_executions"


def notify() -> None:
    """Tell listening workers that executions became claimable (on commit, if in a
    transaction). Nothing happens on SQLite."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {CHANNEL}")


def notify_after_commit() -> None:
    """notify() once the current transaction has committed, in a transaction of its own.

    For the hot path (ingest): PostgreSQL serialises the commits of transactions that
    sent NOTIFY behind one lock, which a transaction that also wrote rows holds across
    its WAL flush; a NOTIFY alone writes no WAL and holds it for an instant. A crash
    between the two costs only latency: the rows are committed and the poll finds them."""
    if connection.vendor == "postgresql":
        transaction.on_commit(notify)


class Listener(threading.Thread):
    """LISTENs on its own database connection and calls `on_notify` on every
    notification (and once each time it starts listening)."""

    def __init__(self, on_notify):
        super().__init__(name="listener", daemon=True)
        self.on_notify = on_notify
        self.stopped = threading.Event()
        self.listening = False

    def run(self):
        delay = 0.5
        while not self.stopped.is_set():
            try:
                self._listen()
                delay = 0.5
            except (DatabaseError, psycopg.Error, OSError) as exc:
                self.listening = False
                logger.warning("listener: database unavailable (%s); polling meanwhile", exc)
                _close()
                if self.stopped.wait(delay):
                    break
                delay = min(delay * 2, 10.0)
            except Exception:
                self.listening = False
                logger.exception("listener failed; polling meanwhile")
                _close()
                if self.stopped.wait(5):
                    break
        _close()

    def _listen(self):
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
        self.listening = True
        # Anything made claimable while we were not listening is found by this first poll.
        self.on_notify()
        raw = connection.connection
        while not self.stopped.is_set():
            for _ in raw.notifies(timeout=1.0, stop_after=1):
                self.on_notify()

    def stop(self):
        self.stopped.set()
        self.join(timeout=5)


def _close():
    try:
        connection.close()
    except Exception:  # the connection is already broken; nothing to release
        logger.debug("listener: closing a broken connection failed", exc_info=True)
