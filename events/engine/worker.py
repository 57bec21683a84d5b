"""The worker loop of one `manage.py runworker` process.

Threads and database connections (at most four, whatever the concurrency):
- the main thread claims, starts and settles executions and renews leases, all in one
  transaction per turn of the loop (connection 1): on SQLite the write lock is taken once
  for a whole batch of results and new claims, not once per action;
- `concurrency` action threads call connectors and touch no database (the built-in
  connectors need none; a connection a custom connector opens is closed after its call);
- the keeper writes the heartbeat and runs the reaper (connection 2);
- the side thread runs bulk operations (connection 3);
- on PostgreSQL the listener waits for NOTIFY (connection 4).

Stopping: the first SIGTERM (or Ctrl-C) stops claiming and lets the actions in flight
finish, up to WORKER_GRACE_SECONDS; a second one, or the end of the grace period,
abandons those still running: their attempts are recorded as `abandoned` and their
executions go back to the queue for another worker.
"""

import logging
import os
import queue
import signal
import socket
import threading
import time
import uuid
from collections import Counter

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction

from events.engine import claims, heartbeat, leases, runner, wake
from guardrails.models import RuntimeState

logger = logging.getLogger("events.engine")


# How long finished calls may wait to be settled together (see _worth_waiting_for_more).
GATHER_SECONDS = 0.01


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"[:64]


class Worker:
    def __init__(
        self,
        *,
        concurrency: int,
        poll_interval: float = 0.05,
        grace_seconds: float | None = None,
        side_jobs=(),
        worker_id: str | None = None,
    ):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.id = worker_id or new_worker_id()
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.grace_seconds = (
            settings.WORKER_GRACE_SECONDS if grace_seconds is None else grace_seconds
        )
        self.side_jobs = list(side_jobs)
        self.nudge = threading.Event()
        self.notified = False
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        self.in_flight: dict[int, runner.Job] = {}
        self.unsettled: list[runner.Outcome] = []
        self.claims = 0
        self.executions_run = 0
        self.stopping = False
        self.abandon_now = False
        self.grace_deadline = float("inf")
        self.left_behind = True
        self.last_claim_came_back_empty = False
        self.next_poll = 0.0
        self.next_renewal = 0.0
        self._threads: list[threading.Thread] = []
        self._first_done_at = 0.0
        self._interrupt = threading.Event()  # set by a stop request
        self._db_errors = 0

    # -- signals --------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_notify(self):
        self.notified = True
        self.nudge.set()

    def _on_signal(self, signum, frame):
        self.request_stop()

    def request_stop(self) -> None:
        """First call: stop claiming, finish what is in flight. Second: abandon it."""
        if self.stopping:
            self.abandon_now = True
        else:
            self.stopping = True
            self.grace_deadline = time.monotonic() + self.grace_seconds
            logger.info(
                "worker %s stopping: %d action(s) in flight, %.0f s to finish",
                self.id,
                len(self.in_flight),
                self.grace_seconds,
            )
        self._interrupt.set()
        self.nudge.set()

    # -- threads --------------------------------------------------------------------------
    def _action_thread(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            outcome = runner.call(job)
            if connection.connection is not None:
                # A custom connector used the database: give the connection back, so
                # the worker's connections stay bounded whatever the concurrency.
                _close_quietly()
            self.done.put(outcome)
            self.nudge.set()

    def _keeper(self, stopped: threading.Event):
        passes = 0
        # After a database outage every worker was cut off, not only this one: a lease
        # that ran out meanwhile says nothing about its worker. Reap again only once the
        # others have had time to renew (their loops retry at least every 2 s).
        settle_after_outage = settings.EXECUTION_LEASE_SECONDS / 3 + 2.0
        reap_from = 0.0
        while True:
            try:
                close_old_connections()
                heartbeat.beat(
                    self.id,
                    concurrency=self.concurrency,
                    in_flight=len(self.in_flight),
                    claims=self.claims,
                    run=self.executions_run,
                )
                # Not our own leases: this process is alive, and its main loop renews
                # them as soon as it can reach the database again (after an outage).
                if time.monotonic() >= reap_from:
                    done = leases.reap(spare_owner=self.id)
                    if any(done.values()):
                        logger.info("reaper: %s", done)
                if passes % 60 == 0:
                    heartbeat.prune_stale()
                passes += 1
            except DatabaseError as exc:
                logger.warning("housekeeping skipped: database unavailable (%s)", exc)
                _close_quietly()
                reap_from = time.monotonic() + settle_after_outage
            except Exception:
                logger.exception("housekeeping failed")
            if stopped.wait(settings.REAPER_INTERVAL_SECONDS):
                break
        _close_quietly()

    def _side(self, stopped: threading.Event):
        while not stopped.is_set():
            for job in self.side_jobs:
                try:
                    close_old_connections()
                    while job() and not stopped.is_set():
                        pass
                except DatabaseError as exc:
                    logger.warning("side job skipped: database unavailable (%s)", exc)
                    _close_quietly()
                except Exception:
                    logger.exception("side job %s failed", getattr(job, "__name__", job))
            stopped.wait(1.0)
        _close_quietly()

    def _start_threads(self, *, housekeeping: bool):
        for n in range(self.concurrency):
            t = threading.Thread(target=self._action_thread, name=f"action-{n}", daemon=True)
            t.start()
        self._stopped = threading.Event()
        self._listener = None
        if housekeeping:
            for name, target in (("keeper", self._keeper), ("side", self._side)):
                t = threading.Thread(target=target, args=(self._stopped,), name=name, daemon=True)
                t.start()
                self._threads.append(t)
        if connection.vendor == "postgresql":
            self._listener = wake.Listener(self._on_notify)
            self._listener.start()

    def _stop_threads(self):
        for _ in range(self.concurrency):
            self.jobs.put(None)
        self._stopped.set()
        if self._listener is not None:
            self._listener.stop()
        for t in self._threads:
            t.join(timeout=15)

    # -- the loop -------------------------------------------------------------------------
    def run(self, *, until_idle: bool = False, housekeeping: bool = True) -> None:
        """Work until stopped (or, with until_idle, until nothing is due or in flight)."""
        self._start_threads(housekeeping=housekeeping)
        logger.info("worker %s started: concurrency %d", self.id, self.concurrency)
        try:
            while True:
                if self.abandon_now or (self.stopping and time.monotonic() > self.grace_deadline):
                    self._abandon()
                    return
                if self.stopping and not self.in_flight:
                    return
                self._gather()
                if self._worth_waiting_for_more():
                    continue
                claimed_any = self._turn()
                # With until_idle, done when nothing is due, or what is due could not be
                # claimed (it waits for room under max_in_flight held by another worker).
                if (
                    until_idle
                    and not self.in_flight
                    and not claimed_any
                    and (self.last_claim_came_back_empty or not self._due())
                ):
                    return
                self._wait()
        finally:
            self._stop_threads()
            try:
                heartbeat.gone(self.id)
            except DatabaseError:
                logger.warning("could not remove the heartbeat of %s", self.id)
            logger.info("worker %s stopped", self.id)

    def _gather(self):
        while True:
            try:
                outcome = self.done.get_nowait()
            except queue.Empty:
                return
            if not self.unsettled:
                self._first_done_at = time.monotonic()
            self.unsettled.append(outcome)

    def _worth_waiting_for_more(self) -> bool:
        """Hold a few finished calls back for up to GATHER_SECONDS, so that a turn (one
        write transaction) settles several at once: on SQLite the write lock is then taken
        a few dozen times a second instead of once per action. Never while stopping, nor
        once a quarter of the slots are waiting to be settled and refilled."""
        if not self.unsettled or self.stopping or self.abandon_now:
            return False
        if len(self.unsettled) >= max(1, self.concurrency // 4):
            return False
        if len(self.unsettled) == len(self.in_flight):
            return False  # nothing else is running: nothing more will come
        if connection.vendor != "sqlite":
            return False  # other databases have no single writer lock to spare
        left = self._first_done_at + GATHER_SECONDS - time.monotonic()
        if left <= 0:
            return False
        self.nudge.wait(left)
        self.nudge.clear()
        return True

    def _due(self) -> bool:
        try:
            return claims.due_exists()
        except DatabaseError:
            return True

    @staticmethod
    def _frees_more(outcome) -> bool:
        """Settling it may make work claimable that no poll has seen: the next execution of
        its ordering key, or the executions of the follow-up event it emits."""
        execution = outcome.job.execution
        return bool(execution.ordering_key or execution.route.emit_type)

    def _should_claim(self, now: float) -> bool:
        if self.stopping or self.concurrency - len(self.in_flight) + len(self.unsettled) <= 0:
            return False
        if self.notified:
            return True
        if self.left_behind and self.unsettled:
            return True  # what just finished may have made room for the work left behind
        if any(self._frees_more(o) for o in self.unsettled):
            return True  # the next of its ordering key, or its follow-up's, may run now
        if now < self.next_poll:
            return False
        self.next_poll = now + self.poll_interval
        if self.left_behind:
            return True  # room may have been made on another worker
        try:
            return claims.due_exists()
        except DatabaseError as exc:
            self._database_down(exc)
            return False

    def _turn(self) -> bool:
        """One transaction: settle what finished, renew leases if due, claim and start.
        Returns whether anything was claimed."""
        now = time.monotonic()
        claim = self._should_claim(now)
        renew = bool(self.in_flight) and now >= self.next_renewal
        if not (self.unsettled or claim or renew):
            return False
        self.notified = False
        settling = list(self.unsettled)
        slots = self.concurrency - len(self.in_flight) + len(settling)
        started = None
        claimed = claims.Claimed()
        try:
            with transaction.atomic():
                runner.settle(settling, owner=self.id)
                if renew:
                    settled = {o.job.execution.pk for o in settling}
                    still_running = [pk for pk in self.in_flight if pk not in settled]
                    for pk in leases.renew(self.id, still_running):
                        logger.warning("execution %s: lease lost while running", pk)
                if claim:
                    local = Counter(
                        job.execution.route_id
                        for pk, job in self.in_flight.items()
                        if pk not in {o.job.execution.pk for o in settling}
                    )
                    claimed = claims.claim_batch(
                        owner=self.id, slots=slots, concurrency=self.concurrency, local=local
                    )
                    if claimed.ids:
                        started = runner.start(
                            claimed.ids, owner=self.id, state=RuntimeState.for_claim()
                        )
        except DatabaseError as exc:
            self._database_down(exc)
            return False
        except Exception:
            # A bug, not the database: nothing of this turn was committed. Keep going
            # rather than crash-loop; the results are settled again next turn.
            logger.exception("worker %s: a turn of the loop failed", self.id)
            self._database_down(RuntimeError("see the error above"))
            return False
        self._db_errors = 0
        for o in settling:
            self.in_flight.pop(o.job.execution.pk, None)
        self.executions_run += len(settling)
        del self.unsettled[: len(settling)]
        if renew:
            self.next_renewal = now + settings.EXECUTION_LEASE_SECONDS / 3
        if claim:
            self.last_claim_came_back_empty = not claimed.ids
            self.left_behind = claimed.left_behind
            self.claims += len(claimed.ids)
        if started:
            for job in started.jobs:
                self.in_flight[job.execution.pk] = job
                self.jobs.put(job)
        return bool(claimed.ids)

    def _wait(self):
        if not self.done.empty() or self.abandon_now:
            return
        if self.stopping:
            timeout = max(0.0, min(1.0, self.grace_deadline - time.monotonic()))
        elif self.concurrency - len(self.in_flight) > 0:
            timeout = max(0.0, self.next_poll - time.monotonic())
        else:
            timeout = 1.0
        if self.in_flight:
            timeout = min(timeout, max(0.0, self.next_renewal - time.monotonic()))
        self.nudge.wait(timeout)
        self.nudge.clear()

    def _database_down(self, exc):
        self._db_errors += 1
        delay = min(0.5 * 2 ** min(self._db_errors - 1, 5), 2.0)
        logger.warning(
            "worker: database unavailable (%s: %s); trying again in %.1f s",
            type(exc).__name__,
            str(exc).strip().splitlines()[0] if str(exc).strip() else "",
            delay,
        )
        _close_quietly()
        # Only a stop request cuts the wait short: finished calls would otherwise wake
        # the loop for one failing try after another and push the back-off to its cap.
        self._interrupt.wait(delay)

    def _abandon(self):
        self._gather()
        running = [
            job
            for pk, job in self.in_flight.items()
            if pk not in {o.job.execution.pk for o in self.unsettled}
        ]
        why = "the worker stopped mid-action"
        for _ in range(5):
            try:
                with transaction.atomic():
                    runner.settle(self.unsettled, owner=self.id)
                    n = runner.abandon(running, owner=self.id, why=why)
                    if n:
                        wake.notify()
                logger.warning("worker %s: abandoned %d action(s) in flight", self.id, n)
                return
            except DatabaseError as exc:
                logger.warning("worker: could not give executions back (%s)", exc)
                _close_quietly()
                time.sleep(1)
        logger.error(
            "worker %s: gave up giving back %d execution(s); the reaper will",
            self.id,
            len(running),
        )


def _close_quietly():
    try:
        connection.close()
    except Exception:  # already broken: nothing to release
        logger.debug("closing a broken connection failed", exc_info=True)
