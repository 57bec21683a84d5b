"""The webhook edge against what real senders (and people replaying their requests) send:
Svix's header names, Shopify's event id, a signed body replayed under a new id, two GitHub
hooks on one source, Slack interactivity, and headers that carry secrets."""

import datetime
import http.client
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest
from django.core.management import call_command
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from connectors.models import Route
from events.intake import ingest
from events.intake.parsing import ParsedEvent
from events.models import Event, Execution, RejectedRequest, SignedBody, Source
from events.operate import retention
from events.sources import credentials
from lib import signatures
from lib.redaction import REDACTED, is_secret_header
from tests.support.senders import create

pytestmark = pytest.mark.django_db


@pytest.fixture
def everything(db):
    """A route for every event type, so each accepted event makes one execution."""
    return Route.objects.create(name="all", event_type="*", connector="log", action="record")


def send(client, name, body, headers, content_type="application/json"):
    return client.post(f"/webhook/{name}", data=body, content_type=content_type, headers=headers)


def rejections(source_name, reason):
    return sum(
        RejectedRequest.objects.filter(source_name=source_name, reason=reason).values_list(
            "count", flat=True
        )
    )


# -- 1. Svix's default header names ------------------------------------------------------------

SVIX_BODY = b'{"type": "invoice.paid", "data": {"invoice": 7}}'


def svix_headers(secret, msg_id="msg_2aXq", body=SVIX_BODY, prefix="svix-"):
    """Signed by the standardwebhooks library itself, sent under Svix's default names."""
    now = datetime.datetime.now(tz=datetime.UTC)
    signature = Webhook(secret).sign(msg_id, now, body.decode())
    return {
        f"{prefix}id": msg_id,
        f"{prefix}timestamp": str(int(now.timestamp())),
        f"{prefix}signature": signature,
    }


def test_a_standard_webhooks_source_accepts_svix_header_names(client, everything):
    _, secret = create("standard_webhooks", name="svix")
    headers = svix_headers(secret)

    first = send(client, "svix", SVIX_BODY, headers)
    again = send(client, "svix", SVIX_BODY, headers)

    assert first.status_code == 202, first.content
    assert first.json()["event_id"] == "msg_2aXq", "the event id is svix-id"
    assert Event.objects.get().type == "invoice.paid"
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert Execution.objects.count() == 1
    assert Event.objects.get().headers["svix-signature"] == REDACTED


def test_svix_and_webhook_header_sets_that_agree_are_accepted(client, everything):
    _, secret = create("standard_webhooks", name="svix")
    both = {**svix_headers(secret), **svix_headers(secret, prefix="webhook-")}

    response = send(client, "svix", SVIX_BODY, both)

    assert response.status_code == 202, response.content
    assert response.json()["event_id"] == "msg_2aXq"


@pytest.mark.parametrize("field", ["id", "timestamp", "signature"])
def test_svix_and_webhook_header_sets_that_disagree_are_refused(client, everything, field):
    _, secret = create("standard_webhooks", name="svix")
    svix = svix_headers(secret)
    other = svix_headers(secret, msg_id="msg_other")
    webhook = {
        f"webhook-{name}": svix[f"svix-{name}"] for name in ("id", "timestamp", "signature")
    }
    webhook[f"webhook-{field}"] = other["svix-id" if field == "id" else f"svix-{field}"]
    if field == "timestamp":
        webhook["webhook-timestamp"] = str(int(svix["svix-timestamp"]) - 1)

    response = send(client, "svix", SVIX_BODY, {**svix, **webhook})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert Event.objects.count() == 0
    assert rejections("svix", "conflicting_headers") == 1


# -- 2. Shopify's deduplication key ------------------------------------------------------------

SHOPIFY_BODY = json.dumps({"id": 820982911946154508, "email": "jon@example.com"}).encode()


def shopify_headers(secret, *, event_id=None, webhook_id=None, topic="orders/create"):
    headers = {"X-Shopify-Topic": topic, **signatures.sign("shopify", secret, SHOPIFY_BODY)}
    if event_id:
        headers["X-Shopify-Event-Id"] = event_id
    if webhook_id:
        headers["X-Shopify-Webhook-Id"] = webhook_id
    return headers


def test_a_shopify_retry_under_a_new_webhook_id_is_a_duplicate_of_its_event(client, everything):
    _, secret = create("shopify")
    event_id = "98880550-7158-44d4-b7cd-2c97c8a091b5"

    first = send(
        client,
        "shopify",
        SHOPIFY_BODY,
        shopify_headers(secret, event_id=event_id, webhook_id="b54557e4-1"),
    )
    retry = send(
        client,
        "shopify",
        SHOPIFY_BODY,
        shopify_headers(secret, event_id=event_id, webhook_id="b54557e4-2"),
    )

    assert first.status_code == 202, first.content
    assert first.json()["event_id"] == event_id
    assert retry.status_code == 200
    assert retry.json() == {**first.json(), "status": "duplicate"}
    assert Execution.objects.count() == 1
    assert rejections("shopify", "replay") == 0, "a retry of one event is no replay"


def test_a_shopify_delivery_without_an_event_id_falls_back_to_its_webhook_id(client, everything):
    _, secret = create("shopify")

    response = send(client, "shopify", SHOPIFY_BODY, shopify_headers(secret, webhook_id="wh-1"))

    assert response.status_code == 202, response.content
    assert response.json()["event_id"] == "wh-1"


# -- 3. A signed body replayed under a new id --------------------------------------------------

GITHUB_BODY = json.dumps({"action": "opened", "issue": {"number": 1347}}).encode()


def github_headers(secret, delivery, event="issues", body=GITHUB_BODY):
    return {
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": event,
        **signatures.sign("github", secret, body),
    }


def test_a_github_body_replayed_under_a_new_delivery_id_is_a_duplicate_of_the_original(
    client, everything
):
    _, secret = create("github")
    original = send(client, "github", GITHUB_BODY, github_headers(secret, "d-1"))

    replayed = [
        send(client, "github", GITHUB_BODY, github_headers(secret, "d-2")),
        send(client, "github", GITHUB_BODY, github_headers(secret, "d-3", event="push")),
    ]

    assert original.status_code == 202, original.content
    for response in replayed:
        assert response.status_code == 200, response.content
        assert response.json() == {**original.json(), "status": "duplicate"}
    assert list(Event.objects.values_list("event_id", "type")) == [("d-1", "issues")]
    assert Execution.objects.count() == 1, "nothing runs for a replay"
    assert rejections("github", "replay") == 2


def test_a_shopify_body_replayed_under_a_new_event_id_is_a_duplicate_of_the_original(
    client, everything
):
    _, secret = create("shopify")
    original = send(client, "shopify", SHOPIFY_BODY, shopify_headers(secret, event_id="e-1"))

    replayed = send(
        client, "shopify", SHOPIFY_BODY, shopify_headers(secret, event_id="e-2", topic="x/y")
    )

    assert replayed.status_code == 200, replayed.content
    assert replayed.json() == {**original.json(), "status": "duplicate"}
    assert Event.objects.count() == Execution.objects.count() == 1
    assert rejections("shopify", "replay") == 1


def test_a_github_redelivery_under_its_own_delivery_id_is_a_plain_duplicate(client, everything):
    _, secret = create("github")
    headers = github_headers(secret, "d-1")
    original = send(client, "github", GITHUB_BODY, headers)

    redelivered = send(client, "github", GITHUB_BODY, headers)

    assert redelivered.status_code == 200
    assert redelivered.json() == {**original.json(), "status": "duplicate"}
    assert rejections("github", "replay") == 0
    assert not RejectedRequest.objects.exists()


def test_other_bodies_and_other_schemes_are_not_replays(client, everything):
    _, secret = create("github")
    _, key = create("api_key", name="crm")
    other = json.dumps({"action": "closed", "issue": {"number": 1347}}).encode()

    assert send(client, "github", GITHUB_BODY, github_headers(secret, "d-1")).status_code == 202
    assert send(
        client, "github", other, github_headers(secret, "d-2", body=other)
    ).status_code == (202)
    # An api_key sender may send the same bytes under two idempotency keys: two events.
    body = b'{"type": "order.created"}'
    for n in (1, 2):
        response = send(client, "crm", body, {"X-API-Key": key, "Idempotency-Key": f"k-{n}"})
        assert response.status_code == 202, response.content
    assert Event.objects.count() == 4
    assert not RejectedRequest.objects.exists()


def test_a_signed_body_older_than_the_dedup_window_is_taken_over_by_a_new_event(
    client, everything, settings
):
    _, secret = create("github")
    send(client, "github", GITHUB_BODY, github_headers(secret, "d-1"))
    settings.DEDUP_RETENTION_DAYS = 30
    SignedBody.objects.update(seen_at=timezone.now() - datetime.timedelta(days=31))

    response = send(client, "github", GITHUB_BODY, github_headers(secret, "d-2"))

    assert response.status_code == 202, response.content
    new = Event.objects.get(event_id="d-2")
    assert SignedBody.objects.get().event_id == new.pk
    again = send(client, "github", GITHUB_BODY, github_headers(secret, "d-3"))
    assert again.json() == {**response.json(), "status": "duplicate"}


def test_prune_forgets_a_signed_body_with_its_event(client, everything):
    _, secret = create("github")
    send(client, "github", GITHUB_BODY, github_headers(secret, "d-1"))
    Execution.objects.update(status="succeeded")
    Event.objects.update(received_at=timezone.now() - datetime.timedelta(days=400))

    result = retention.prune(older_than=datetime.timedelta(days=30))

    assert result.events_deleted == 1
    assert not SignedBody.objects.exists()
    response = send(client, "github", GITHUB_BODY, github_headers(secret, "d-2"))
    assert response.status_code == 202, "past the dedup window the body is new again"


def test_prune_dry_run_leaves_signed_bodies_alone(client, everything):
    _, secret = create("github")
    send(client, "github", GITHUB_BODY, github_headers(secret, "d-1"))
    Execution.objects.update(status="succeeded")
    Event.objects.update(received_at=timezone.now() - datetime.timedelta(days=400))

    retention.prune(older_than=datetime.timedelta(days=30), dry_run=True)

    assert SignedBody.objects.count() == 1


def parsed(event_id, body=GITHUB_BODY):
    payload = json.loads(body)
    return ParsedEvent(event_id=event_id, type="issues", payload=payload, body_hash=event_id)


def test_claiming_a_signed_body_is_one_conditional_insert(everything):
    # The ON CONFLICT path itself: the database's unique (source, digest) decides, not a
    # read before the write, so of two deliveries that both got this far only one stores.
    source, _ = create("github")
    first = ingest.ingest(source, parsed("d-1"), headers={}, raw=GITHUB_BODY)
    digest = SignedBody.objects.get().digest

    assert ingest._claim_signed_body(source, digest, uuid.uuid4(), timezone.now()) is False
    assert SignedBody.objects.get().event_id == first.event.pk
    second = ingest.ingest(source, parsed("d-2"), headers={}, raw=GITHUB_BODY)
    assert (second.outcome, second.event.pk) == ("duplicate", first.event.pk)
    assert Event.objects.count() == 1


@pytest.mark.live
def test_replays_sent_at_once_to_two_server_processes_store_one_event(live):
    # Real gunicorn (two sync worker processes, each with its own connection) on a file
    # SQLite database, or PostgreSQL when DATABASE_URL points at it.
    out = live.manage("source", "create", "repo", "--scheme", "github").stdout
    secret = next(line.split()[-1] for line in out.splitlines() if "Secret:" in line)
    deliveries = [f"d-{n}" for n in range(8)]
    barrier = threading.Barrier(len(deliveries))

    def deliver(delivery):
        conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=60)
        try:
            conn.connect()
            barrier.wait(timeout=30)
            headers = {"Content-Type": "application/json", **github_headers(secret, delivery)}
            conn.request("POST", "/webhook/repo", body=GITHUB_BODY, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=len(deliveries)) as pool:
        answers = list(pool.map(deliver, deliveries))

    assert sorted(status for status, _ in answers) == [200] * 7 + [202], answers
    assert len({body["id"] for _, body in answers}) == 1, "every answer names one event"
    assert live.query("SELECT COUNT(*) FROM events_event") == [(1,)]
    assert live.query("SELECT COUNT(*) FROM events_signedbody") == [(1,)]
    assert live.query("SELECT SUM(count) FROM events_rejectedrequest WHERE reason = 'replay'") == [
        (7,)
    ]


# -- 4. One GitHub delivery id, two hooks ------------------------------------------------------


def test_two_github_hooks_on_one_source_get_a_conflict_that_says_what_to_do(client, everything):
    _, secret = create("github")
    repo_hook = json.dumps({"action": "opened", "hook_id": 1}).encode()
    org_hook = json.dumps({"action": "opened", "hook_id": 2}).encode()
    send(client, "github", repo_hook, github_headers(secret, "d-1", body=repo_hook))

    response = send(client, "github", org_hook, github_headers(secret, "d-1", body=org_hook))

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "event_id_conflict"
    assert "give each its own source" in error["message"]
    assert "organization hook" in error["message"]


# -- 5. Slack interactivity --------------------------------------------------------------------

BLOCK_ACTIONS = {
    "type": "block_actions",
    "user": {"id": "U0CA5", "username": "amy"},
    "api_app_id": "A0CA5",
    "container": {"type": "message", "message_ts": "1548261231.000200", "channel_id": "C0CA5"},
    "trigger_id": "12466734323.1395872398",
    "team": {"id": "T0CA5"},
    "response_url": "https://hooks.slack.com/actions/AABA1ABCD/1232321423432/D09sSasdasdAS9",
    "actions": [
        {
            "action_id": "approve",
            "block_id": "b1",
            "type": "button",
            "value": "yes",
            "action_ts": "1548426417.840180",
        }
    ],
}
VIEW_SUBMISSION = {
    "type": "view_submission",
    "team": {"id": "T0CA5"},
    "user": {"id": "U0CA5"},
    "trigger_id": "12321423423.333649436676.d8c1bb837935619ccad0f624c448ffb3",
    "view": {"id": "VNHU13V36", "hash": "156663117.cd33ad1f", "callback_id": "vote"},
}
SHORTCUT = {
    "type": "shortcut",
    "callback_id": "new_ticket",
    "trigger_id": "944799105734.773906753841.38b5894552bdd4a780554ee59d1f3638",
    "action_ts": "1581106241.371594",
    "team": {"id": "T0CA5"},
    "user": {"id": "U0CA5"},
}
VIEW_CLOSED = {
    "type": "view_closed",
    "team": {"id": "T0CA5"},
    "user": {"id": "U0CA5"},
    "view": {"id": "VNHU13V36", "hash": "156663117.cd33ad1f"},
    "is_cleared": False,
}


def slack_form(client, secret, payload):
    body = urlencode({"payload": json.dumps(payload)}).encode()
    return send(
        client,
        "slack",
        body,
        signatures.sign("slack", secret, body),
        content_type="application/x-www-form-urlencoded",
    )


@pytest.mark.parametrize(
    "payload", [BLOCK_ACTIONS, VIEW_SUBMISSION, SHORTCUT], ids=lambda p: p["type"]
)
def test_a_slack_interactivity_post_is_an_event_named_by_its_trigger_id(
    client, everything, payload
):
    _, secret = create("slack")

    response = slack_form(client, secret, payload)

    assert response.status_code == 202, response.content
    event = Event.objects.get()
    assert (event.event_id, event.type) == (payload["trigger_id"], payload["type"])
    assert event.payload == payload
    assert Execution.objects.count() == 1


def test_a_slack_view_closed_without_a_trigger_id_is_named_by_its_bytes(client, everything):
    _, secret = create("slack")

    response = slack_form(client, secret, VIEW_CLOSED)

    assert response.status_code == 202, response.content
    event = Event.objects.get()
    assert event.type == "view_closed" and len(event.event_id) == 64


def test_a_slack_events_api_delivery_still_uses_its_event_id(client, everything):
    _, secret = create("slack")
    body = json.dumps(
        {
            "type": "event_callback",
            "event_id": "Ev08MFMKH6",
            "trigger_id": "not-this",
            "event": {"type": "app_mention", "text": "hi"},
        }
    ).encode()

    response = send(client, "slack", body, signatures.sign("slack", secret, body))

    assert response.status_code == 202, response.content
    assert (Event.objects.get().event_id, Event.objects.get().type) == (
        "Ev08MFMKH6",
        "app_mention",
    )


# -- 13. Headers that carry secrets ------------------------------------------------------------

NEWLY_SECRET = [
    "X-Passwd",
    "X-Credential",
    "X-Creds",
    "X-Sig",
    "X-JWT",
    "X-Session-Id",
    "Sessionid",
    "X-Csrf",
    "X-Sid",
]
BENIGN = {
    "User-Agent": "GitHub-Hookshot/044aadd",
    "X-GitHub-Event": "issues",
    "X-Request-Id": "req-1",
    "Idempotency-Key": "k-1",
    "X-Signal-Type": "warning",
    "X-Credit-Limit": "100",
    "X-Bypass-Cache": "1",
}


def test_headers_named_like_common_secrets_are_redacted_when_stored(client, everything):
    _, key = create("api_key", name="crm")
    secrets = {name: f"value-of-{name}" for name in NEWLY_SECRET}

    response = send(
        client, "crm", b'{"type": "t", "event_id": "e"}', {"X-API-Key": key, **secrets, **BENIGN}
    )

    assert response.status_code == 202, response.content
    stored = Event.objects.get().headers
    for name in NEWLY_SECRET:
        assert stored[name.lower()] == REDACTED, name
    for name, value in BENIGN.items():
        assert stored[name.lower()] == value, name
    assert stored["content-type"] == "application/json"
    assert not any(value in json.dumps(stored) for value in secrets.values())


def test_a_source_names_extra_headers_to_redact(client, everything):
    _, key = create("api_key", name="crm", redact_headers=["X-Tenant-Pin", "x-Pager"])

    send(
        client,
        "crm",
        b'{"type": "t", "event_id": "e"}',
        {"X-API-Key": key, "X-Tenant-Pin": "4321", "X-Pager": "555", "X-Tenant": "acme"},
    )

    stored = Event.objects.get().headers
    assert stored["x-tenant-pin"] == stored["x-pager"] == REDACTED
    assert stored["x-tenant"] == "acme"
    assert Source.objects.get(name="crm").redact_headers == ["x-tenant-pin", "x-pager"]


@pytest.mark.parametrize("names", [["X Bad"], ["X-Ok", ""], "X-Not-A-List", [7], ["é"]], ids=repr)
def test_a_source_refuses_extra_redacted_headers_that_are_not_header_names(names):
    with pytest.raises(credentials.SourceError, match="redact_headers"):
        create("api_key", name="crm", redact_headers=names)
    assert not Source.objects.exists()


def test_source_create_takes_headers_to_redact_and_shows_them(db, capsys):
    from io import StringIO

    out = StringIO()
    call_command(
        "source",
        "create",
        "crm",
        "--scheme",
        "api_key",
        "--redact-header",
        "X-Tenant-Pin",
        "--redact-header",
        "X-Pager",
        stdout=out,
    )

    assert Source.objects.get().redact_headers == ["x-tenant-pin", "x-pager"]
    assert "Redacted:  x-tenant-pin, x-pager" in out.getvalue()
    shown = StringIO()
    call_command("source", "show", "crm", stdout=shown)
    assert "x-tenant-pin, x-pager" in shown.getvalue()
    assert credentials.summary(Source.objects.get())["redact_headers"] == [
        "x-tenant-pin",
        "x-pager",
    ]


def test_the_admin_edits_the_headers_a_source_redacts(admin_client):
    fields = {
        "name": "crm",
        "enabled": "on",
        "auth_scheme": "api_key",
        "api_key_header": "X-API-Key",
        "event_id_from": "default",
        "type_from": "default",
        "description": "",
        "redact_headers": "X-Tenant-Pin, X-Pager",
        "keys-TOTAL_FORMS": "0",
        "keys-INITIAL_FORMS": "0",
    }
    saved = admin_client.post("/admin/events/source/add/", fields)
    assert saved.status_code == 302, saved.content
    source = Source.objects.get()
    assert source.redact_headers == ["x-tenant-pin", "x-pager"]

    page = admin_client.get(f"/admin/events/source/{source.pk}/change/")
    assert b"x-tenant-pin, x-pager" in page.content
    refused = admin_client.post(
        f"/admin/events/source/{source.pk}/change/",
        {**fields, "redact_headers": "X-Ok, not a header"},
    )
    assert refused.status_code == 200
    assert b"is not a header name" in refused.content
    source.refresh_from_db()
    assert source.redact_headers == ["x-tenant-pin", "x-pager"]


@pytest.mark.parametrize("name", [n.lower() for n in NEWLY_SECRET] + ["x-hub-signature-256"])
def test_is_secret_header_covers(name):
    assert is_secret_header(name)


@pytest.mark.parametrize(
    "name", ["content-type", *(n.lower() for n in BENIGN), "x-github-delivery", "svix-id"]
)
def test_is_secret_header_spares(name):
    assert not is_secret_header(name)
