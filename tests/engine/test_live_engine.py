"""The engine with real processes: SIGKILLed workers, SIGTERM, several workers."""

import datetime
import json
import signal
import sys
import time

import pytest

from tests.support.live import (
    add_route,
    is_postgres,
    start_workers,
    statuses,
)

pytestmark = pytest.mark.live


def worker_names(rt):
    return [name for name in rt.procs if name.startswith("worker")]


def test_a_worker_killed_mid_action_is_replaced_and_the_action_completes_once(runtime, sink):
    add_route(runtime, "slow.job", "sink", "post", {"url": sink.url, "sleep": 2})
    start_workers(runtime, 1)
    assert runtime.post_event({"event_id": "slow-1", "type": "slow.job"}).status_code == 202
    runtime.wait_for(
        lambda: runtime.query("SELECT COUNT(*) FROM events_attempt")[0][0], timeout=15
    )

    runtime.stop(worker_names(runtime)[0], sig=signal.SIGKILL)
    time.sleep(0.5)
    assert statuses(runtime) == {"running": 1}  # nobody else has it while the lease lasts
    start_workers(runtime, 1)

    runtime.wait_for(lambda: statuses(runtime) == {"succeeded": 1}, timeout=30)
    assert list(sink.keys().values()) == [1]
    outcomes = runtime.query("SELECT number, outcome FROM events_attempt ORDER BY number")
    assert outcomes == [(1, "lost"), (2, "succeeded")], outcomes


def test_retries_follow_the_backoff_and_keep_the_idempotency_key(runtime, sink):
    sink.script = [503, 503]
    add_route(
        runtime,
        "flaky.job",
        "sink",
        "post",
        {"url": sink.url},
        backoff_base_seconds=0.5,
        backoff_cap_seconds=1.0,
    )
    start_workers(runtime, 1)
    runtime.post_event({"event_id": "flaky-1", "type": "flaky.job"})

    runtime.wait_for(lambda: statuses(runtime) == {"succeeded": 1}, timeout=30)
    assert [r["status"] for r in sink.requests] == [503, 503, 200]
    assert len({r["key"] for r in sink.requests}) == 1
    outcomes = runtime.query("SELECT outcome FROM events_attempt ORDER BY number")
    assert [o for (o,) in outcomes] == ["retryable_error", "retryable_error", "succeeded"]


def test_exhausted_attempts_end_failed_with_the_last_error(runtime, sink):
    sink.script = [500] * 10
    add_route(
        runtime,
        "doomed.job",
        "sink",
        "post",
        {"url": sink.url},
        max_attempts=3,
        backoff_base_seconds=0.1,
        backoff_cap_seconds=0.2,
    )
    start_workers(runtime, 1)
    runtime.post_event({"event_id": "doomed-1", "type": "doomed.job"})

    runtime.wait_for(lambda: statuses(runtime) == {"failed": 1}, timeout=30)
    assert len(sink.requests) == 3
    (last_error,) = runtime.query("SELECT last_error FROM events_execution")[0]
    assert "sink answered 500" in last_error


def test_sigterm_lets_the_current_action_finish_and_removes_the_heartbeat(runtime, sink):
    add_route(runtime, "slow.job", "sink", "post", {"url": sink.url, "sleep": 1.5})
    start_workers(runtime, 1)
    runtime.wait_for(
        lambda: len(runtime.operator("GET", "/admin/status").json()["workers"]) == 1, timeout=15
    )
    assert runtime.operator("GET", "/ready").json()["workers"]
    runtime.post_event({"event_id": "slow-2", "type": "slow.job"})
    runtime.wait_for(lambda: statuses(runtime).get("running") == 1, timeout=15)

    runtime.stop(worker_names(runtime)[0], sig=signal.SIGTERM)

    assert statuses(runtime) == {"succeeded": 1}
    assert list(sink.keys().values()) == [1]
    assert runtime.operator("GET", "/admin/status").json()["workers"] == []


def moment(value) -> datetime.datetime:
    """A timestamp read from either database (SQLite gives text)."""
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def signal_worker(rt, name, *signals, pause=0.3):
    """Send these signals to a worker's process group, `pause` seconds apart."""
    import os

    for sig in signals:
        os.killpg(rt.procs[name].pid, sig)
        time.sleep(pause)


def worker_with_8_in_flight(rt, sink, *, events: int, sleep: float) -> str:
    """`events` events to a route whose action takes `sleep` s, at most 8 at once; one
    worker started and holding 8 of them. Returns the worker's name."""
    add_route(rt, "slow.batch", "sink", "post", {"url": sink.url, "sleep": sleep}, max_in_flight=8)
    for i in range(events):
        assert rt.post_event({"event_id": f"b-{i}", "type": "slow.batch"}).status_code == 202
    name = rt.start_worker()
    rt.wait_for(lambda: statuses(rt).get("running") == 8, timeout=20)
    return name


def test_sigterm_finishes_the_actions_in_flight_and_claims_nothing_more(runtime, sink):
    name = worker_with_8_in_flight(runtime, sink, events=20, sleep=2)

    signal_worker(runtime, name, signal.SIGTERM)
    assert runtime.procs[name].wait(timeout=20) == 0

    assert statuses(runtime) == {"succeeded": 8, "queued": 12}
    assert len(sink.keys()) == 8
    assert runtime.query("SELECT COUNT(*) FROM events_attempt") == [(8,)]
    assert runtime.query("SELECT COUNT(*) FROM events_workerheartbeat") == [(0,)]


def test_a_second_sigterm_abandons_the_actions_and_gives_them_back(runtime, sink):
    name = worker_with_8_in_flight(runtime, sink, events=10, sleep=30)

    started = time.monotonic()
    signal_worker(runtime, name, signal.SIGTERM, signal.SIGTERM)
    assert runtime.procs[name].wait(timeout=20) == 0
    assert time.monotonic() - started < 10, "it did not wait for the 30 s actions"

    assert statuses(runtime) == {"queued": 10}
    outcomes = runtime.query("SELECT outcome, COUNT(*) FROM events_attempt GROUP BY outcome")
    assert outcomes == [("abandoned", 8)]
    assert sink.requests == []  # the sink connector sleeps before it sends


def test_max_in_flight_holds_across_two_worker_processes(runtime, sink):
    add_route(
        runtime, "narrow.job", "sink", "post", {"url": sink.url, "sleep": 0.3}, max_in_flight=3
    )
    # At concurrency 3 a worker gives one route at most 2 slots: only the two together
    # can reach the route's 3, and nothing lets them pass it.
    for _ in range(2):
        runtime.start_worker("--concurrency", "3")
    runtime.wait_for(
        lambda: len(runtime.operator("GET", "/admin/status").json()["workers"]) == 2, timeout=30
    )
    for i in range(30):
        assert runtime.post_event({"event_id": f"n-{i}", "type": "narrow.job"}).status_code == 202

    runtime.wait_for(lambda: statuses(runtime) == {"succeeded": 30}, timeout=60)
    rows = runtime.query("SELECT started_at, finished_at, worker FROM events_attempt")
    edges = sorted([(moment(a), 1) for a, _, _ in rows] + [(moment(b), -1) for _, b, _ in rows])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak == 3, "never more than max_in_flight at once, and it is used"
    assert len({w for _, _, w in rows}) == 2, "both workers took part"
    assert len(sink.keys()) == 30


def test_several_workers_share_the_work_and_run_each_execution_once(runtime, sink):
    n = 2000 if is_postgres() else 600
    add_route(
        runtime, "bulk.job", "sink", "post", {"url": sink.url, "sleep": 0.02}, max_in_flight=64
    )
    import concurrent.futures

    import requests

    start_workers(runtime, 4)
    runtime.wait_for(
        lambda: len(runtime.operator("GET", "/admin/status").json()["workers"]) == 4, timeout=30
    )

    def send(chunk):
        with requests.Session() as session:
            for i in chunk:
                r = session.post(
                    runtime.url + "/webhook",
                    data=json.dumps({"event_id": f"bulk-{i}", "type": "bulk.job"}),
                    headers={"X-API-Key": "demo-key", "Content-Type": "application/json"},
                    timeout=30,
                )
                assert r.status_code == 202, r.text

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(send, [range(k, n, 8) for k in range(8)]))

    runtime.wait_for(lambda: statuses(runtime) == {"succeeded": n}, timeout=240, interval=1)
    keys = sink.keys()
    assert len(keys) == n
    assert set(keys.values()) == {1}
    attempts = runtime.query("SELECT COUNT(*), COUNT(DISTINCT execution_id) FROM events_attempt")
    assert attempts == [(n, n)], "each execution was attempted exactly once"
    workers_used = runtime.query("SELECT COUNT(DISTINCT worker) FROM events_attempt")[0][0]
    assert workers_used >= 2, "the work was shared"


if sys.platform != "linux":  # pragma: no cover
    pytestmark = [pytestmark, pytest.mark.skip("process signals as on Linux")]
