"""Guardrails under concurrency: 4 worker processes against one database."""

import datetime
import time

import pytest

from tests.support.live import add_route, start_workers, statuses

pytestmark = pytest.mark.live


def flood(rt, prefix, n, event_type):
    for i in range(n):
        assert rt.post_event({"event_id": f"{prefix}-{i}", "type": event_type}).status_code == 202


def attempt_starts(rt):
    rows = rt.query("SELECT started_at FROM events_attempt ORDER BY started_at")
    return [
        value if isinstance(value, datetime.datetime) else datetime.datetime.fromisoformat(value)
        for (value,) in rows
    ]


def aware(value):
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def test_no_attempt_starts_after_the_kill_switch_is_acknowledged(runtime, sink):
    # 16 in flight at most (the default max_in_flight), 0.2 s each: 300 take about 4 s.
    add_route(runtime, "busy.job", "sink", "post", {"url": sink.url, "sleep": 0.2})
    flood(runtime, "busy", 300, "busy.job")
    start_workers(runtime, 4)
    runtime.wait_for(lambda: len(sink.requests) >= 20, timeout=30)

    response = runtime.operator("POST", "/admin/kill_switch?enabled=true&reason=race")
    acknowledged = datetime.datetime.now(datetime.UTC)
    assert response.status_code == 200
    time.sleep(3)

    late = [s for s in attempt_starts(runtime) if aware(s) > acknowledged]
    assert late == []
    counts = statuses(runtime)
    assert counts.get("held", 0) > 0, counts
    assert "running" not in counts, counts
    assert sum(counts.values()) == 300
    assert len(sink.keys()) == counts.get("succeeded", 0)


def test_a_rate_limit_is_never_exceeded_in_any_window(runtime, sink):
    limit, window = 5, 2
    add_route(runtime, "limited.job", "sink", "post", {"url": sink.url})
    runtime.manage(
        "shell",
        "-c",
        "from guardrails.models import RateLimit; "
        f"RateLimit.objects.create(scope='route', name='limited-job', limit={limit}, "
        f"window_seconds={window})",
    )
    flood(runtime, "lim", 24, "limited.job")
    start_workers(runtime, 4)

    runtime.wait_for(lambda: statuses(runtime) == {"succeeded": 24}, timeout=60, interval=0.5)

    starts = [aware(s) for s in attempt_starts(runtime)]
    assert len(starts) == 24  # deferrals spent no attempts
    span = datetime.timedelta(seconds=window)
    for i, start in enumerate(starts):
        in_window = [s for s in starts[i:] if s < start + span]
        assert len(in_window) <= limit, (start, in_window)
    assert set(sink.keys().values()) == {1}
