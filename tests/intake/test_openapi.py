"""The OpenAPI schema at /api/schema/: what it describes, and a schemathesis run that holds
the running server to it (no 5xx, no status code, header or body the schema does not name).
"""

import json
import time
import uuid
from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from lib import signatures

ERROR = "#/components/schemas/Error"
INGESTION_ERRORS = ("400", "401", "405", "413", "415", "503")
OPERATOR_ERRORS = ("401", "403", "405", "503")


@pytest.fixture
def document(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    return response.json()


def body_ref(operation: dict, status: str) -> str:
    return operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]


def test_the_schema_is_public_json_by_default(client):
    response = client.get("/api/schema/", HTTP_AUTHORIZATION="Bearer not-a-token")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert json.loads(response.content)["openapi"].startswith("3.")


def test_the_schema_is_also_served_as_yaml(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/yaml")

    assert response.status_code == 200
    assert response.content.startswith(b"openapi: 3.")


def test_the_schema_is_a_valid_openapi_document(document):
    loaded = schemathesis.openapi.from_dict(document)

    loaded.validate()  # against the OpenAPI 3.0 meta-schema; raises if invalid
    problems = [op.err() for op in loaded.get_all_operations() if isinstance(op, Err)]
    assert problems == []


def test_the_schema_lists_the_webhook_operator_and_probe_endpoints(document):
    paths = document["paths"]

    assert set(paths["/webhook"]) == {"post"}
    assert set(paths["/webhook/{source}"]) == {"post"}
    assert set(paths["/admin/status"]) == {"get"}
    assert set(paths["/admin/kill_switch"]) == {"post"}
    assert set(paths["/health"]) == {"get"}
    assert set(paths["/ready"]) == {"get"}
    # The trailing-slash alias of /webhook is the same operation, listed once.
    assert "/webhook/" not in paths
    assert "/api/schema/" not in paths


@pytest.mark.parametrize("path", ["/webhook", "/webhook/{source}"])
def test_the_webhooks_describe_their_acknowledgements_and_errors(document, path):
    operation = document["paths"][path]["post"]
    responses = operation["responses"]

    assert body_ref(operation, "202") == "#/components/schemas/WebhookAck"
    assert body_ref(operation, "409") == "#/components/schemas/WebhookConflict"
    for status in INGESTION_ERRORS:
        assert body_ref(operation, status) == ERROR, status
    assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
    assert "Retry-After" in responses["503"]["headers"]
    assert {"application/json", "application/*+json"} <= set(operation["requestBody"]["content"])


@pytest.mark.django_db
def test_a_host_the_server_does_not_answer_to_gets_a_documented_json_400(client, document):
    response = client.get("/health", HTTP_HOST="P,;F3|1:&q")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "400" in operation["responses"], f"{method.upper()} {path} lists no 400"


def test_the_api_key_webhook_names_its_key_header_and_idempotency_key(document):
    operation = document["paths"]["/webhook"]["post"]

    assert operation["security"] == [{"ApiKey": []}]
    assert document["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "One of the source's API keys; it also names the source.",
    }
    assert body_ref(operation, "200") == "#/components/schemas/WebhookAck"
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert "Idempotency-Key" in headers
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["type"]
    assert body["additionalProperties"] is True


def test_the_source_webhook_documents_every_signature_scheme(document):
    operation = document["paths"]["/webhook/{source}"]["post"]
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}

    assert {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "X-Hub-Signature-256",
        "X-GitHub-Delivery",
        "X-GitHub-Event",
        "Stripe-Signature",
        "X-Shopify-Hmac-Sha256",
        "X-Shopify-Webhook-Id",
        "X-Shopify-Topic",
        "X-Slack-Signature",
        "X-Slack-Request-Timestamp",
    } <= headers
    source = next(p for p in operation["parameters"] if p["in"] == "path")
    assert source["name"] == "source" and source["schema"]["maxLength"] == 100
    assert "application/x-www-form-urlencoded" in operation["requestBody"]["content"]
    assert body_ref(operation, "200") == "#/components/schemas/SourceWebhookOk"
    ok = document["components"]["schemas"]["SourceWebhookOk"]["oneOf"]
    assert {"$ref": "#/components/schemas/SlackChallenge"} in ok


def test_the_operator_endpoints_take_a_bearer_token_or_a_session(document):
    schemes = document["components"]["securitySchemes"]

    assert schemes["OperatorToken"]["type"] == "http"
    assert schemes["OperatorToken"]["scheme"] == "bearer"
    for path, method in (("/admin/status", "get"), ("/admin/kill_switch", "post")):
        operation = document["paths"][path][method]
        assert operation["security"] == [{"OperatorToken": []}, {"cookieAuth": []}]
        for status in OPERATOR_ERRORS:
            assert body_ref(operation, status) == ERROR, (path, status)


def test_the_kill_switch_documents_its_parameters_and_both_answers(document):
    operation = document["paths"]["/admin/kill_switch"]["post"]
    query = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}

    assert query["enabled"]["required"] is True
    assert query["enabled"]["schema"]["type"] == "boolean"
    assert query["reason"]["required"] is True
    assert {"source", "route", "connector"} <= set(query)
    assert body_ref(operation, "400") == ERROR
    assert body_ref(operation, "415") == ERROR
    change = document["components"]["schemas"]["KillSwitchChange"]["oneOf"]
    assert len(change) == 2


def test_the_status_report_names_its_top_level_keys(document):
    report = document["components"]["schemas"]["StatusReport"]

    assert set(report["required"]) == {
        "mode",
        "kill_switch",
        "processed",
        "events",
        "executions",
        "queue_depth",
        "oldest_queued_seconds",
        "awaiting_approval",
        "oldest_awaiting_approval_seconds",
        "workers",
        "circuits",
        "in_flight_by_route",
        "guardrail_decisions",
        "scoped_kill_switches",
    }


def test_the_probes_are_public_and_ready_documents_its_503(document):
    for path in ("/health", "/ready"):
        assert document["paths"][path]["get"]["security"] == [{}]
    ready = document["paths"]["/ready"]["get"]
    assert body_ref(ready, "503") == "#/components/schemas/Readiness"


def test_the_schema_names_no_secret(client, demo, settings):
    text = client.get("/api/schema/").content.decode()

    for secret in ("demo-key", "demo-github-secret", "demo-operator-token", settings.SECRET_KEY):
        assert secret not in text
    assert "password" not in text.lower()


# -- answers the fuzzing may not reach, checked against the schema in-process --------------
def assert_conforms(document: dict, method: str, path: str, response) -> None:
    """The test client's `response` has a documented status code and matches its schema."""
    operation = schemathesis.openapi.from_dict(document)[path][method]
    assert str(response.status_code) in operation.responses.status_codes, response.status_code
    request = requests.Request(method, f"http://testserver{path}").prepare()
    operation.validate_response(
        schemathesis.Response(
            status_code=response.status_code,
            headers={name.lower(): [value] for name, value in response.headers.items()},
            content=response.content,
            request=request,
            elapsed=0.0,
            verify=True,
        )
    )  # raises FailureGroup with the mismatches


def test_a_busy_status_report_matches_the_schema(client, document, operator, source, route):
    from connectors import circuits
    from events.models import WorkerHeartbeat
    from guardrails.killswitch import set_kill_switch, set_scoped_kill_switch
    from tests.support.helpers import ORDER, post

    WorkerHeartbeat.objects.create(worker_id="w1", hostname="h", pid=1, concurrency=32)
    for _ in range(10):
        circuits.record_failure(route, "example", "boom")
    set_scoped_kill_switch(
        scope="route", name="orders-to-log", engaged=True, actor=None, reason="x", via="api"
    )
    set_kill_switch(engaged=True, actor=operator, reason="incident", via="api")
    assert post(client, ORDER, key=source.api_key).json()["status"] == "held"

    response = client.get("/admin/status", HTTP_AUTHORIZATION=f"Bearer {operator.token}")

    body = response.json()
    assert body["workers"] and body["circuits"] and body["guardrail_decisions"]
    assert body["scoped_kill_switches"]
    assert_conforms(document, "GET", "/admin/status", response)


def test_releasing_a_scoped_kill_switch_never_engaged_matches_the_schema(
    client, document, operator
):
    # Found by the fuzzing run: this answered 500 (the switch had no changed_at yet).
    response = client.post(
        "/admin/kill_switch?enabled=false&reason=tidy&connector=never-engaged",
        HTTP_AUTHORIZATION=f"Bearer {operator.token}",
    )

    assert response.status_code == 200
    assert response.json()["changed_at"] is None
    assert_conforms(document, "POST", "/admin/kill_switch", response)


def test_ready_when_not_ready_matches_the_schema(db, client, document, monkeypatch):
    from automation_runtime import views

    monkeypatch.setattr(views, "_migrations_seen_applied", False)
    monkeypatch.setattr(views, "_pending_migrations", lambda: 1)

    response = client.get("/ready")

    assert response.status_code == 503
    assert_conforms(document, "GET", "/ready", response)


# -- the fuzzing run ----------------------------------------------------------------------
DEMO_CREDENTIALS = {"X-API-Key": "demo-key", "Authorization": "Bearer demo-operator-token"}
SIGNED_SOURCE, SIGNED_SECRET = "demo-github", "demo-github-secret"
MIN_REQUESTS = 1000
MAX_EXAMPLES = 1150  # each example is one request; the margin keeps MIN_REQUESTS a floor
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _strategies(schema):
    """Every operation in the schema, positive and negative, weighted by how much input it
    takes; operations with a `source` path parameter also get the demo source, so that most
    of their cases reach past authentication into parsing and storing."""
    strategies = []
    for result in schema.get_all_operations():
        operation = result.ok()
        has_input = bool(list(operation.iter_parameters())) or bool(operation.body)
        weight = 4 if has_input else 1
        by_source = operation.get_parameter("source", "path") is not None
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies += [operation.as_strategy(generation_mode=mode)] * weight
            if by_source:
                for name in ("demo", SIGNED_SOURCE):
                    strategies += [
                        operation.as_strategy(
                            generation_mode=mode, path_parameters={"source": name}
                        )
                    ] * weight
        strategies += operation.get_strategies_from_examples()
    return strategies


def _signed_call(case, url, session):
    """Send a case to the demo GitHub source signed with its secret, so that fuzzed bodies
    and headers also reach the code behind a valid signature."""
    body = case.body if isinstance(case.body, dict) else {"fuzzed": repr(case.body)}
    raw = json.dumps(body).encode()
    headers = {
        **{k: str(v) for k, v in (case.headers or {}).items()},
        "Content-Type": "application/json",
        "X-GitHub-Delivery": f"fuzz-{uuid.uuid4()}",
        "X-GitHub-Event": "fuzz.push",
        **signatures.sign("github", SIGNED_SECRET, raw),
    }
    return session.post(f"{url}/webhook/{SIGNED_SOURCE}", data=raw, headers=headers, timeout=30)


def _server_errors(log: str) -> list[str]:
    """The exception line of each traceback in the server's log: what the 5xx were."""
    errors, in_traceback = set(), False
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and line and not line[0].isspace():
            errors.add(line)
            in_traceback = False
    return sorted(errors)


FRAMING_HEADERS = {"content-length", "transfer-encoding", "connection", "host"}


@pytest.mark.live
def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_schema(live):
    # The demo credentials are no secret: show them in the curl commands of a failure.
    config = schemathesis.Config.from_dict({"output": {"sanitization": {"enabled": False}}})
    schema = schemathesis.openapi.from_url(f"{live.url}/api/schema/", config=config, timeout=30)
    operations = {result.ok().label for result in schema.get_all_operations()}
    assert len(operations) >= 6, operations
    session = requests.Session()
    sent = {label: Counter() for label in operations}  # status codes by operation
    # One report per (operation, kind of failure), with how often it happened.
    failures: dict[tuple, list] = {}
    started = time.monotonic()

    @given(
        case=st.one_of(_strategies(schema)),
        # Mostly the demo credentials; sometimes only what schemathesis made up.
        with_credentials=st.sampled_from([True, True, True, False]),
    )
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        # Failures are collected, not raised: nothing to shrink, and every case is sent.
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case, with_credentials):
        # A made-up Content-Length or Transfer-Encoding breaks the HTTP framing itself:
        # gunicorn answers it with its own plain-text 400 before the application sees the
        # request, so such cases test gunicorn's parser, not our contract.
        for name in list(case.headers or {}):
            if name.lower() in FRAMING_HEADERS:
                del case.headers[name]
        headers = DEMO_CREDENTIALS if with_credentials else None
        if (case.path_parameters or {}).get("source") == SIGNED_SOURCE and with_credentials:
            response = _signed_call(case, live.url, session)
        else:
            response = case.call(base_url=live.url, session=session, headers=headers, timeout=30)
        sent[case.operation.label][response.status_code] += 1
        try:
            case.validate_response(
                response,
                checks=CHECKS,
                headers=headers,
                transport_kwargs={"base_url": live.url, "session": session},
            )
        except FailureGroup as exc:
            kinds = tuple(sorted(f.title for f in exc.exceptions))
            report = failures.setdefault((case.operation.label, response.status_code, kinds), [0])
            report[0] += 1
            if len(report) == 1:
                report.append(exc.message)

    fuzz()
    elapsed = time.monotonic() - started
    total = sum(sum(statuses.values()) for statuses in sent.values())
    print(f"\nschemathesis: {total} requests in {elapsed:.1f}s")
    for label, statuses in sorted(sent.items()):
        print(f"  {label}: {dict(sorted(statuses.items()))}")

    assert not failures, (
        f"{sum(n for n, _ in failures.values())} of {total} responses were 5xx or broke the "
        f"schema, in {len(failures)} kinds; the first of each:\n\n"
        + "\n\n".join(
            f"== {operation} -> {status} ({n} times)\n{message}"
            for (operation, status, _), (n, message) in failures.items()
        )
        + "\n\nServer errors in the log:\n"
        + "\n".join(_server_errors(live.log("gunicorn")))
    )
    assert total >= MIN_REQUESTS, sent
    assert all(sent.values()), f"some operations were never called: {sent}"
