"""Ordering keys with real processes: two workers, a real HTTP sink, retries, `block` and
`skip`, and a replay that unblocks a key; on SQLite and on PostgreSQL."""

import datetime
import itertools
from collections import defaultdict

import pytest

from tests.support.live import add_route, statuses

pytestmark = pytest.mark.live

KEYS, PER_KEY = 8, 6


def moment(value) -> datetime.datetime:
    return (
        value if isinstance(value, datetime.datetime) else datetime.datetime.fromisoformat(value)
    )


def arrivals(sink) -> dict[str, list[int]]:
    """Per key, the sequence numbers of the requests in the order the sink received them."""
    seen = defaultdict(list)
    with sink.lock:
        for request in sink.requests:
            key, seq = request["body"]["event_id"].rsplit("-", 1)
            seen[key].append(int(seq))
    return seen


def test_two_workers_keep_each_keys_order_through_retries_block_and_skip(runtime, sink):
    common = {"max_in_flight": 16, "backoff_base_seconds": 0.2, "backoff_cap_seconds": 0.4}
    params = {"url": sink.url, "sleep": 0.05}
    add_route(
        runtime, "ordered.job", "sink", "post", params, ordering_key="{{ event.k }}", **common
    )
    add_route(
        runtime,
        "skipping.job",
        "sink",
        "post",
        params,
        ordering_key="{{ event.k }}",
        on_failure="skip",
        **common,
    )
    # Retries: the head of key k0 fails twice; the dead letters: b-0 (block), s-0 (skip).
    sink.by_event = {"k0-0": [503, 503], "b-0": [400], "s-0": [400]}
    for _ in range(2):
        runtime.start_worker("--concurrency", "8")
    runtime.wait_for(
        lambda: len(runtime.operator("GET", "/admin/status").json()["workers"]) == 2, timeout=30
    )

    for seq in range(PER_KEY):  # interleaved over the keys, one after the other per key
        for key in [f"k{n}" for n in range(KEYS)] + ["b"]:
            r = runtime.post_event({"event_id": f"{key}-{seq}", "type": "ordered.job", "k": key})
            assert r.status_code == 202, r.text
        r = runtime.post_event({"event_id": f"s-{seq}", "type": "skipping.job", "k": "s"})
        assert r.status_code == 202, r.text

    total = (KEYS + 2) * PER_KEY
    expected = {"succeeded": total - 2 - (PER_KEY - 1), "failed": 2, "queued": PER_KEY - 1}
    runtime.wait_for(lambda: statuses(runtime) == expected, timeout=90, interval=0.5)
    # The block key waits behind its dead letter; the skip key went on past its own.
    assert arrivals(sink)["b"] == [0]
    assert arrivals(sink)["s"] == list(range(PER_KEY))

    # The operator replays the dead letter: it runs, then the rest of its key in order.
    (failed,) = runtime.query(
        "SELECT x.id FROM events_execution x JOIN events_event e ON e.id = x.event_id "
        "WHERE e.event_id = 'b-0'"
    )[0:1]
    runtime.manage("replay", str(failed[0]), "--reason", "the ERP accepts it now")
    runtime.wait_for(
        lambda: statuses(runtime) == {"succeeded": total - 1, "failed": 1}, timeout=60
    )

    seen = arrivals(sink)
    for key, seqs in seen.items():
        assert seqs == sorted(seqs), f"key {key} out of order: {seqs}"
    assert seen["k0"][:3] == [0, 0, 0], "the retries of the head came before the next"
    assert seen["b"] == [0, *range(PER_KEY)]
    # Never two of one key at once; different keys did run at once; both workers worked.
    rows = runtime.query(
        "SELECT x.route_id, x.ordering_key, a.started_at, a.finished_at, a.worker "
        "FROM events_attempt a JOIN events_execution x ON x.id = a.execution_id"
    )
    by_key = defaultdict(list)
    for route, key, started, finished, _ in rows:
        by_key[route, key].append((moment(started), moment(finished)))
    for spans in by_key.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    edges = sorted(
        [(moment(s), 1) for _, _, s, _, _ in rows] + [(moment(f), -1) for _, _, _, f, _ in rows]
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak > 1, "keys ran side by side"
    assert len({w for *_, w in rows}) == 2, "both workers took part"
