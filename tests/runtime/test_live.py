"""The runtime from the outside: real gunicorn and worker processes, real HTTP, a real database.

Runs on SQLite by default and on PostgreSQL when DATABASE_URL points at it. Every request
goes to 127.0.0.1; the database is read directly, as an operator's SQL console would.
"""

import http.client
import json
import socket
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.support.live import ROOT, LiveRuntime

pytestmark = pytest.mark.live

EXAMPLES = Path(ROOT) / "examples"
LIMIT = 262144  # MAX_BODY_BYTES default: 256 KiB
CLIENTS = 32


# -- shared runtime ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    """One runtime (4 sync web workers + worker) shared by tests that use distinct event ids."""
    rt = LiveRuntime(tmp_path_factory.mktemp("live-shared"), web_workers=4)
    try:
        rt.prepare().start()
        # Warm every web worker (imports, database connection) so that the races below
        # hit workers that are all ready at the same moment.
        warm_up = [
            json.dumps({"event_id": f"evt_warm_up_{i}", "type": "warm.up"}).encode()
            for i in range(CLIENTS)
        ]
        assert {r.status_code for r in post_all_at_once(rt, warm_up)} == {202}
        yield rt
    finally:
        rt.close()


# -- helpers -----------------------------------------------------------------------------


def sql_text(value: str) -> str:
    """A SQL string literal (test-controlled values only)."""
    return "'" + value.replace("'", "''") + "'"


def stored_events(rt: LiveRuntime, event_id: str) -> int:
    return rt.query(
        f"SELECT count(*) FROM events_event WHERE event_id = {sql_text(event_id)}"  # noqa: S608
    )[0][0]


def stored_executions(rt: LiveRuntime, event_id: str) -> list[str]:
    """The statuses of the executions of the stored event with this event id."""
    rows = rt.query(
        "SELECT x.status FROM events_execution x "  # noqa: S608
        "JOIN events_event e ON e.id = x.event_id "
        f"WHERE e.event_id = {sql_text(event_id)}"
    )
    return [status for (status,) in rows]


def total_rows(rt: LiveRuntime) -> tuple[int, int]:
    events = rt.query("SELECT count(*) FROM events_event")[0][0]
    executions = rt.query("SELECT count(*) FROM events_execution")[0][0]
    return events, executions


def status_of(rt: LiveRuntime) -> dict:
    response = rt.operator("GET", "/admin/status")
    assert response.status_code == 200, response.text
    return response.json()


def kill_switch(rt: LiveRuntime, *, enabled: bool, reason: str) -> requests.Response:
    return rt.operator(
        "POST",
        "/admin/kill_switch",
        params={"enabled": "true" if enabled else "false", "reason": reason},
    )


def assert_error(response, status: int, code: str) -> dict:
    """The one error shape: {"status": "error", "error": {"code": str, "message": str}}."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body == {
        "status": "error",
        "error": {"code": code, "message": body["error"]["message"]},
    }
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return body


def accepted(response, event_id: str, status: str = "accepted") -> str:
    """Assert a 202 for this event id; returns the stored event's id (a UUID)."""
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == status
    assert body["event_id"] == event_id
    return str(uuid.UUID(body["id"]))


class RawResponse:
    def __init__(self, status: int, headers, body: bytes):
        self.status_code = status
        self.headers = headers
        self.text = body.decode("utf-8", "replace")
        self._body = body

    def json(self):
        return json.loads(self._body)


def post_all_at_once(rt: LiveRuntime, bodies: list[bytes]) -> list[RawResponse]:
    """POST every body to /webhook at the same moment, each from its own connection.

    Every client connects first and waits at a barrier, so the requests reach the
    server's workers together instead of trickling in one connection at a time.
    """
    barrier = threading.Barrier(len(bodies))

    def send(body: bytes) -> RawResponse:
        conn = http.client.HTTPConnection("127.0.0.1", rt.port, timeout=60)
        try:
            conn.connect()
            barrier.wait(timeout=30)
            conn.request(
                "POST",
                "/webhook",
                body=body,
                headers={"Content-Type": "application/json", "X-API-Key": "demo-key"},
            )
            response = conn.getresponse()
            return RawResponse(response.status, response.headers, response.read())
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(send, bodies))


def post_declaring_a_huge_body(rt: LiveRuntime, declared: int, sent: int) -> RawResponse:
    """POST with Content-Length `declared` but write only `sent` body bytes, then read.

    A server that waited for the whole body would never answer: the read times out.
    """
    head = (
        "POST /webhook HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{rt.port}\r\n"
        "Content-Type: application/json\r\n"
        "X-API-Key: demo-key\r\n"
        f"Content-Length: {declared}\r\n"
        "\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", rt.port), timeout=10) as sock:
        sock.sendall(head + b" " * sent)
        response = http.client.HTTPResponse(sock)
        response.begin()
        try:
            body = response.read()
        except ConnectionResetError:  # pragma: no cover - the server dropped the unread rest
            body = b""
        return RawResponse(response.status, response.headers, body)


# -- the README walk-through -------------------------------------------------------------


def test_it_runs_the_readme_demo_walk_through(live):
    health = requests.get(live.url + "/health", timeout=10)
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}

    first = (EXAMPLES / "sample_webhook.json").read_bytes()
    event_uuid = accepted(live.post_event(first), "evt_demo_0001")

    again = live.post_event(first)
    assert again.status_code == 200, again.text
    assert again.json() == {"status": "duplicate", "id": event_uuid, "event_id": "evt_demo_0001"}

    live.wait_for(lambda: status_of(live)["processed"] == 1, timeout=20)
    assert stored_executions(live, "evt_demo_0001") == ["succeeded"]

    engaged = kill_switch(live, enabled=True, reason="demo: stop everything")
    assert engaged.status_code == 200, engaged.text
    assert engaged.json()["mode"] == "killed"
    assert engaged.json()["changed"] is True

    second = (EXAMPLES / "second_webhook.json").read_bytes()
    accepted(live.post_event(second), "evt_demo_0002", status="held")

    time.sleep(2)  # the worker is running: give it every chance to (wrongly) execute it
    status = status_of(live)
    assert status["mode"] == "killed"
    assert status["processed"] == 1
    assert status["executions"]["held"] == 1
    assert stored_executions(live, "evt_demo_0002") == ["held"]

    released = kill_switch(live, enabled=False, reason="demo: resume")
    assert released.status_code == 200, released.text
    assert released.json()["mode"] == "running"
    assert status_of(live)["mode"] == "running"


# -- concurrency -------------------------------------------------------------------------


def test_it_stores_an_event_once_when_32_clients_deliver_it_at_the_same_moment(runtime):
    event_id = "evt_race_same_body"
    body = json.dumps({"event_id": event_id, "type": "order.created", "n": 1}).encode()

    responses = post_all_at_once(runtime, [body] * CLIENTS)

    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * (CLIENTS - 1) + [202], [
        r.text for r in responses if r.status_code >= 300
    ]
    winner = next(r for r in responses if r.status_code == 202)
    event_uuid = accepted(winner, event_id)
    for response in responses:
        if response is not winner:
            assert response.json() == {
                "status": "duplicate",
                "id": event_uuid,
                "event_id": event_id,
            }
    assert stored_events(runtime, event_id) == 1
    assert len(stored_executions(runtime, event_id)) == 1


def test_it_stores_one_body_when_32_clients_race_one_event_id_with_two_bodies(runtime):
    event_id = "evt_race_two_bodies"
    variants = ["a" if i % 2 else "b" for i in range(CLIENTS)]
    bodies = [
        json.dumps({"event_id": event_id, "type": "order.created", "variant": v}).encode()
        for v in variants
    ]

    responses = post_all_at_once(runtime, bodies)

    assert all(r.status_code < 500 for r in responses), [r.text for r in responses]
    winners = [(v, r) for v, r in zip(variants, responses, strict=True) if r.status_code == 202]
    assert len(winners) == 1, [r.text for r in responses]
    won_variant, winner = winners[0]
    event_uuid = accepted(winner, event_id)
    conflicts = 0
    for variant, response in zip(variants, responses, strict=True):
        if response is winner:
            continue
        body = response.json()
        assert body["id"] == event_uuid
        if variant == won_variant:
            assert response.status_code == 200, response.text
            assert body["status"] == "duplicate"
        else:
            assert response.status_code == 409, response.text
            assert body["status"] == "conflict"
            assert body["error"]["code"] == "event_id_conflict"
            conflicts += 1
    assert conflicts == CLIENTS // 2

    assert stored_events(runtime, event_id) == 1
    assert len(stored_executions(runtime, event_id)) == 1
    [(payload, counted)] = runtime.query(
        "SELECT payload, conflicts FROM events_event "  # noqa: S608
        f"WHERE event_id = {sql_text(event_id)}"
    )
    payload = json.loads(payload) if isinstance(payload, str) else payload
    assert payload["variant"] == won_variant
    assert counted == conflicts


# -- the kill switch across a restart ----------------------------------------------------


def test_it_keeps_the_kill_switch_engaged_across_a_server_restart(live):
    reason = "incident 42: downstream is double-charging"
    engaged = kill_switch(live, enabled=True, reason=reason)
    assert engaged.status_code == 200, engaged.text
    assert engaged.json()["mode"] == "killed"

    live.restart()

    status = status_of(live)
    assert status["mode"] == "killed"
    assert status["kill_switch"]["engaged"] is True
    assert status["kill_switch"]["reason"] == reason
    assert status["kill_switch"]["changed_by"] == "admin"
    audit = live.query(
        "SELECT actor, reason FROM guardrails_operatoraction "
        "WHERE action = 'kill_switch.engage' AND via = 'api'"
    )
    assert audit == [("admin", reason)]
    # ... and it still holds new events after the restart.
    accepted(
        live.post_event({"event_id": "evt_after_restart", "type": "order.created"}),
        "evt_after_restart",
        status="held",
    )
    assert stored_executions(live, "evt_after_restart") == ["held"]


# -- the ingestion contract, over real HTTP ----------------------------------------------


@contextmanager
def stores_nothing(rt: LiveRuntime, *event_ids: str):
    before = total_rows(rt)
    yield
    assert total_rows(rt) == before
    for event_id in event_ids:
        assert stored_events(rt, event_id) == 0


VALID = json.dumps({"event_id": "bad_unauthorized", "type": "order.created"}).encode()


@pytest.mark.parametrize(
    "key", [None, "wrong-key", ""], ids=["missing key", "wrong key", "empty key"]
)
def test_it_refuses_a_sender_without_a_valid_api_key(runtime, key):
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["X-API-Key"] = key
    with stores_nothing(runtime, "bad_unauthorized"):
        response = requests.post(runtime.url + "/webhook", data=VALID, headers=headers, timeout=10)
        assert_error(response, 401, "unauthorized")
        assert "WWW-Authenticate" in response.headers


def test_it_refuses_a_body_that_is_not_sent_as_json(runtime):
    body = json.dumps({"event_id": "bad_text_plain", "type": "order.created"})
    with stores_nothing(runtime, "bad_text_plain"):
        response = runtime.post_event(body, headers={"Content-Type": "text/plain"})
        assert_error(response, 415, "unsupported_media_type")


DEEP = ("[" * 10_000 + "]" * 10_000).encode()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(b"", "empty_body", id="empty body"),
        pytest.param(b"[]", "not_an_object", id="a list"),
        pytest.param(b'"x"', "not_an_object", id="a string"),
        pytest.param(
            b'{"event_id":"bad_deep","type":"order.created","a":' + DEEP + b"}",
            "too_deep",
            id="nested 10,000 deep",
        ),
        pytest.param(b'{"event_id":"\xff","type":"t"}', "invalid_utf8", id="invalid UTF-8"),
        pytest.param(b'{"event_id":"bad_no_type"}', "missing_type", id="no type"),
        pytest.param(
            json.dumps({"event_id": "bad_" + "x" * 9996, "type": "order.created"}).encode(),
            "invalid_event_id",
            id="10,000-char event id",
        ),
        pytest.param(
            json.dumps({"event_id": "bad_\x07bell", "type": "order.created"}).encode(),
            "invalid_event_id",
            id="control character in event id",
        ),
    ],
)
def test_it_refuses_a_body_that_is_not_a_valid_event(runtime, body, code):
    ids = ["bad_deep", "bad_no_type", "bad_" + "x" * 9996, "bad_\x07bell", "\xff", "\ufffd"]
    with stores_nothing(runtime, *ids):
        assert_error(runtime.post_event(body), 400, code)


def test_it_answers_413_to_a_10_mb_body_without_reading_it(runtime):
    declared = 10 * 1024 * 1024
    with stores_nothing(runtime):
        started = time.monotonic()
        response = post_declaring_a_huge_body(runtime, declared=declared, sent=64 * 1024)
        assert_error(response, 413, "body_too_large")
        assert time.monotonic() - started < 5


def post_chunked(rt: LiveRuntime, body: bytes, size: int = 16 * 1024) -> requests.Response:
    """POST the body with Transfer-Encoding: chunked (no Content-Length), in 16 KiB pieces."""

    def pieces():
        for start in range(0, len(body), size):
            yield body[start : start + size]

    response = requests.post(
        rt.url + "/webhook",
        data=pieces(),
        headers={"Content-Type": "application/json", "X-API-Key": "demo-key"},
        timeout=30,
    )
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.request.headers
    return response


def test_it_answers_413_to_a_chunked_body_over_the_limit(runtime):
    body = json.dumps(
        {"event_id": "bad_chunked_big", "type": "order.created", "pad": "x" * (LIMIT + 1000)}
    ).encode()
    assert len(body) > LIMIT
    with stores_nothing(runtime, "bad_chunked_big"):
        assert_error(post_chunked(runtime, body), 413, "body_too_large")


def test_it_accepts_a_chunked_body_under_the_limit(runtime):
    event_id = "evt_chunked_small"
    body = json.dumps(
        {"event_id": event_id, "type": "order.created", "pad": "y" * 50_000}
    ).encode()
    accepted(post_chunked(runtime, body), event_id)
    assert stored_events(runtime, event_id) == 1


# -- the database going away -------------------------------------------------------------


@pytest.fixture
def runtime_without_worker(tmp_path):
    rt = LiveRuntime(tmp_path, with_worker=False)
    rt.env["SQLITE_TIMEOUT"] = "1"  # a locked SQLite file fails fast instead of waiting 20 s
    try:
        rt.prepare().start()
        yield rt
    finally:
        rt.close()


@contextmanager
def database_unavailable(rt: LiveRuntime):
    """Make the runtime's database refuse the server for the duration of the block."""
    if rt._pg_db:
        db = rt._pg_db
        rt._psql(f'ALTER DATABASE "{db}" WITH ALLOW_CONNECTIONS false')
        try:
            rt._psql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "  # noqa: S608
                f"WHERE datname = {sql_text(db)} AND pid <> pg_backend_pid()"
            )
            yield
        finally:
            rt._psql(f'ALTER DATABASE "{db}" WITH ALLOW_CONNECTIONS true')
    else:
        # In WAL mode an exclusive transaction still lets readers in but no writer.
        lock = sqlite3.connect(rt.db_path, isolation_level=None, timeout=10)
        try:
            lock.execute("BEGIN EXCLUSIVE")
            yield
        finally:
            lock.execute("ROLLBACK")
            lock.close()


def test_it_answers_503_and_stores_nothing_while_the_database_is_unavailable(
    runtime_without_worker,
):
    rt = runtime_without_worker
    event = {"event_id": "evt_db_down", "type": "order.created"}

    with database_unavailable(rt):
        response = rt.post_event(event)
        assert_error(response, 503, "database_unavailable")
        assert response.headers["Retry-After"] == "5"

    assert stored_events(rt, "evt_db_down") == 0
    assert total_rows(rt) == (0, 0)

    accepted(rt.post_event(event), "evt_db_down")
    assert stored_events(rt, "evt_db_down") == 1
    assert stored_executions(rt, "evt_db_down") == ["queued"]
