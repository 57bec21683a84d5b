"""`GET /metrics`: the runtime's state in the Prometheus text format (docs/metrics.md).

The database tables are the truth, shared by every gunicorn worker and `runworker` on
every host, so the numbers are read from them at scrape time by one collector, not counted
in process memory: any web worker a scrape lands on answers the same, and nothing resets
when a process restarts. Counts from GROUP BY are gauges (prune deletes rows, so they go
down), named without `_total`.

Cost, with a million events:
- every aggregate is one GROUP BY or COUNT over indexed columns (status, type, source,
  route, the partial index on pending executions, `started_at` for attempts). The one
  that reads every row is events by (source, type, status): no index covers those three
  together yet, so it scans the table (measured on SQLite with 1,000,000 events: ~4 s;
  with an index on (source, type, status): ~0.45 s, an index-only scan). That index is
  worth adding to Event.Meta once events grow that large;
- label values are bounded: at most `MAX_TYPES_PER_SOURCE` event types per source (the
  rest summed as `type="other"`), routes, sources and scoped kill switches as operators
  configure them, the 20 largest guardrail decisions;
- each process keeps what it read for `METRICS_CACHE_SECONDS` (default 5), so a burst of
  scrapes, or several Prometheus servers, cost one set of queries per process.

Attempt durations: a cumulative histogram over every attempt ever made would be a full
scan of the attempts table at each scrape, and counting in process memory
(prometheus_client's multiprocess mode) only works for processes that share one
`PROMETHEUS_MULTIPROC_DIR` on one host, loses its files' meaning when workers die or are
replaced, and would need a scrape target per host for the `runworker` processes. So the
histogram covers the attempts *started in the last `ATTEMPT_WINDOW_SECONDS`* (5 minutes)
that have finished, read through the `started_at` index, and is a gauge histogram: its
window is in its name (`automation_attempt_duration_seconds_last_5m`); take quantiles of
it directly (`histogram_quantile(0.99, ..._bucket)`), not of its `rate()`. The trade-off:
an attempt is seen by scrapes for 5 minutes after it starts, so the scrape interval must
be shorter than that (15 s to 60 s is usual), and an attempt longer than the window is
only counted if it finished inside it.
"""

import datetime
import hmac
import ipaddress
import logging
import threading
import time

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Q, Sum
from django.http import HttpResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
)
from prometheus_client.utils import floatToGoString
from rest_framework import exceptions

from connectors import circuits
from connectors.models import Route
from events.engine.heartbeat import live_workers
from events.models import (
    Attempt,
    Event,
    Execution,
    Source,
)
from events.observe import stats
from guardrails import permissions
from guardrails.auth import OperatorTokenAuthentication
from guardrails.models import KillSwitch, Mode, RuntimeState
from lib.errors import error_response, read_only

logger = logging.getLogger(__name__)

MAX_TYPES_PER_SOURCE = 50
OTHER_TYPE = "other"
ATTEMPT_WINDOW_SECONDS = 300
# Upper bounds in seconds; an attempt's duration is stored in whole milliseconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
MAX_REASON_LENGTH = 200
MAX_SCOPED_SWITCHES = 100


def _events(families: list) -> None:
    names = dict(Source.objects.values_list("pk", "name"))
    rows = (
        Event.objects.order_by().values_list("source_id", "type", "status").annotate(n=Count("pk"))
    )
    # source -> type -> status -> count; then the busiest types kept, the rest summed.
    by_source: dict = {}
    for source_id, event_type, status, n in rows:
        by_source.setdefault(source_id, {}).setdefault(event_type, {})[status] = n
    gauge = GaugeMetricFamily(
        "automation_events",
        "Events stored, by source, type and status (at most "
        f'{MAX_TYPES_PER_SOURCE} types per source; the rest are type="{OTHER_TYPE}").',
        labels=["source", "type", "status"],
    )
    for source_id, types in sorted(by_source.items(), key=lambda item: names.get(item[0], "")):
        for event_type, statuses in _capped(types).items():
            for status, n in sorted(statuses.items()):
                gauge.add_metric([names.get(source_id, str(source_id)), event_type, status], n)
    families.append(gauge)


def _capped(types: dict) -> dict:
    """The MAX_TYPES_PER_SOURCE types with most events, the others summed as `other`."""
    if len(types) <= MAX_TYPES_PER_SOURCE:
        return dict(sorted(types.items()))
    ranked = sorted(types.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    kept = {name: dict(statuses) for name, statuses in sorted(ranked[:MAX_TYPES_PER_SOURCE])}
    # A type really named "other" shares the label with the summed rest.
    other = kept.setdefault(OTHER_TYPE, {})
    for _, statuses in ranked[MAX_TYPES_PER_SOURCE:]:
        for status, n in statuses.items():
            other[status] = other.get(status, 0) + n
    return kept


def _executions(families: list, now) -> None:
    names = dict(Route.objects.values_list("pk", "name"))
    gauge = GaugeMetricFamily(
        "automation_executions",
        "Executions, by route and status.",
        labels=["route", "status"],
    )
    rows = Execution.objects.order_by().values_list("route_id", "status").annotate(n=Count("pk"))
    for route_id, status, n in sorted(rows, key=lambda r: (names.get(r[0], ""), r[1])):
        gauge.add_metric([names.get(route_id, str(route_id)), status], n)
    families.append(gauge)

    waiting = stats.queue_wait(now)
    families.append(
        GaugeMetricFamily(
            "automation_queue_depth",
            "Executions a worker may claim now: queued, or retrying and due.",
            value=waiting["depth"],
        )
    )
    families.append(
        GaugeMetricFamily(
            "automation_queue_oldest_age_seconds",
            "How long the longest-waiting claimable execution has waited (0 when none).",
            value=waiting["oldest_age_seconds"] or 0.0,
        )
    )
    approval = stats.approval_wait(now)
    families.append(
        GaugeMetricFamily(
            "automation_awaiting_approval",
            "Executions waiting for an operator to approve or reject them.",
            value=approval["awaiting"],
        )
    )
    families.append(
        GaugeMetricFamily(
            "automation_awaiting_approval_oldest_age_seconds",
            "How long the longest-waiting execution awaiting approval has waited (0 when none).",
            value=approval["oldest_age_seconds"] or 0.0,
        )
    )


def _attempt_durations(families: list, now) -> None:
    window = ATTEMPT_WINDOW_SECONDS
    buckets = {
        f"le_{i}": Count("pk", filter=Q(duration_ms__lte=round(b * 1000)))
        for i, b in enumerate(DURATION_BUCKETS)
    }
    rows = (
        Attempt.objects.filter(
            started_at__gte=now - datetime.timedelta(seconds=window),
            finished_at__isnull=False,
            duration_ms__isnull=False,
        )
        .order_by()
        .values("outcome")
        .annotate(count=Count("pk"), sum_ms=Sum("duration_ms"), **buckets)
    )
    minutes = f"{window // 60}m" if window % 60 == 0 else f"{window}s"
    histogram = GaugeHistogramMetricFamily(
        f"automation_attempt_duration_seconds_last_{minutes}",
        f"Duration of the attempts started in the last {window} s that have finished, "
        "by outcome. A gauge histogram over a sliding window: take quantiles of its "
        "buckets directly, not of their rate().",
        labels=["outcome"],
    )
    by_outcome = {row["outcome"]: row for row in rows}
    for outcome in sorted(by_outcome):
        row = by_outcome[outcome]
        histogram.add_metric(
            [outcome],
            [
                *((floatToGoString(b), row[f"le_{i}"]) for i, b in enumerate(DURATION_BUCKETS)),
                ("+Inf", row["count"]),
            ],
            gsum_value=(row["sum_ms"] or 0) / 1000,
        )
    families.append(histogram)


def _guardrails(families: list) -> None:

    state = RuntimeState.current()
    mode = GaugeMetricFamily(
        "automation_mode",
        "The runtime's global mode: 1 for the current one (running, killed, dry_run).",
        labels=["mode"],
    )
    for value in Mode.values:
        mode.add_metric([value], 1 if state.mode == value else 0)
    families.append(mode)

    switches = GaugeMetricFamily(
        "automation_kill_switch_engaged",
        "1 while a kill switch is engaged: the global one (scope=global) and each scoped "
        "one an operator has set (scope=source|route|connector).",
        labels=["scope", "name"],
    )
    switches.add_metric(["global", ""], 1 if state.mode == Mode.KILLED else 0)
    scoped = KillSwitch.objects.order_by("-engaged", "scope", "name").values_list(
        "scope", "name", "engaged"
    )[:MAX_SCOPED_SWITCHES]
    for scope, name, engaged in scoped:
        switches.add_metric([scope, name], 1 if engaged else 0)
    families.append(switches)

    decisions = GaugeMetricFamily(
        "automation_guardrail_decisions",
        "Guardrail decisions standing now, by reason: held and blocked events and "
        "executions, executions deferred by a rate limit or an open circuit (the 20 largest).",
        labels=["of", "status", "reason"],
    )
    for row in stats.decisions_by_reason():
        decisions.add_metric(
            [row["of"], row["status"], row["reason"][:MAX_REASON_LENGTH]], row["count"]
        )
    families.append(decisions)

    circuit_counts: dict = {}
    for circuit in circuits.summary():
        key = (circuit["connector"], circuit["state"])
        circuit_counts[key] = circuit_counts.get(key, 0) + 1
    open_circuits = GaugeMetricFamily(
        "automation_circuits",
        "Circuit breakers not closed (open or half-open), by connector and state.",
        labels=["connector", "state"],
    )
    for (connector, circuit_state), n in sorted(circuit_counts.items()):
        open_circuits.add_metric([connector, circuit_state], n)
    families.append(open_circuits)


def _workers(families: list) -> None:
    live = list(live_workers().order_by("worker_id"))
    families.append(
        GaugeMetricFamily(
            "automation_workers_live",
            "Workers whose heartbeat is more recent than WORKER_STALE_SECONDS.",
            value=len(live),
        )
    )
    per_worker = [
        ("automation_worker_concurrency", "Actions a live worker runs at once.", "concurrency"),
        (
            "automation_worker_in_flight",
            "Actions a live worker was running at its last heartbeat.",
            "in_flight",
        ),
    ]
    for name, help_text, field in per_worker:
        family = GaugeMetricFamily(name, help_text, labels=["worker"])
        for w in live:
            family.add_metric([w.worker_id], getattr(w, field))
        families.append(family)
    claims = CounterMetricFamily(
        "automation_worker_claims",
        "Executions a live worker has claimed since it started.",
        labels=["worker"],
    )
    for w in live:
        claims.add_metric([w.worker_id], w.claims)
    families.append(claims)
    by_route = GaugeMetricFamily(
        "automation_route_in_flight",
        "Executions of a route running now on all workers (routes with none are left out).",
        labels=["route"],
    )
    for row in stats.in_flight_by_route():
        by_route.add_metric([row["route"]], row["in_flight"])
    families.append(by_route)


def collect_families() -> list:
    """Every metric family, read from the database now. Raises DatabaseError."""
    now = timezone.now()
    families: list = []
    _events(families)
    _executions(families, now)
    _attempt_durations(families, now)
    _guardrails(families)
    _workers(families)
    return families


class DatabaseCollector:
    """Reads the metrics from the database at scrape time, at most once per
    METRICS_CACHE_SECONDS in this process (threads share the cached result)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._families: list = []
        self._expires = 0.0

    def collect(self):
        with self._lock:
            if time.monotonic() >= self._expires:
                self._families = collect_families()  # an error caches nothing
                self._expires = time.monotonic() + settings.METRICS_CACHE_SECONDS
            return list(self._families)

    def describe(self):
        return []  # collected at scrape time only, never at registration

    def clear(self) -> None:
        with self._lock:
            self._expires = 0.0


collector = DatabaseCollector()
# Our own registry: the default one adds this process's CPU, memory and GC, which flap
# from one scrape to the next as scrapes land on different gunicorn workers.
registry = CollectorRegistry(auto_describe=False)
registry.register(collector)


# -- access --------------------------------------------------------------------------------

_PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def _from_loopback(request) -> bool:
    """A direct connection from this host. A request that came through a proxy (it names
    the client it forwards) does not count, even though the proxy connects from 127.0.0.1."""
    if any(request.META.get(header) for header in _PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def _bearer(request) -> str | None:
    parts = request.META.get("HTTP_AUTHORIZATION", "").split()
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1]
    return None


def _refusal(request):
    """None when the request may read the metrics, else the 401 or 403 to answer."""
    if _from_loopback(request):
        return None
    token = _bearer(request)
    if token is not None:
        if settings.METRICS_TOKEN and hmac.compare_digest(
            token.encode(), settings.METRICS_TOKEN.encode()
        ):
            return None

        try:
            found = OperatorTokenAuthentication().authenticate(request)
        except exceptions.AuthenticationFailed:
            found = None
        if found is None:
            return error_response(
                401,
                "authentication_failed",
                "Invalid token.",
                WWW_Authenticate='Bearer realm="metrics"',
            )
        user = found[0]
    else:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return error_response(
                401,
                "not_authenticated",
                "Metrics are served to this host, to the METRICS_TOKEN and to operators.",
                WWW_Authenticate='Bearer realm="metrics"',
            )
    if not permissions.may_view_status(user):
        return error_response(
            403, "permission_denied", "You need permission to view the runtime status."
        )
    return None


@read_only
def metrics(request):
    """GET /metrics: the Prometheus text format (version 0.0.4), for loopback, the
    METRICS_TOKEN bearer, and operators or viewers; 503 when the database is down. Any
    other method is a JSON 405."""
    try:
        refused = _refusal(request)
        if refused is not None:
            return refused
        body = generate_latest(registry)
    except DatabaseError as exc:
        logger.warning("metrics: database unavailable (%s)", type(exc).__name__)
        return error_response(
            503, "database_unavailable", "The database is unavailable.", Retry_After="5"
        )
    return HttpResponse(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)
