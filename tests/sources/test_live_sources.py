"""Signed sources from the outside: `manage.py source create`, real HTTP to gunicorn, and the
database read directly."""

import json
import time

import pytest
import requests

from lib import signatures

pytestmark = pytest.mark.live


def _secret_from(output: str) -> str:
    return next(line.split()[-1] for line in output.splitlines() if "Secret:" in line)


def test_signed_sources_created_from_the_cli_accept_good_requests_and_refuse_bad_ones(live):
    sw_secret = _secret_from(
        live.manage("source", "create", "billing", "--scheme", "standard_webhooks").stdout
    )
    gh_secret = _secret_from(live.manage("source", "create", "repo", "--scheme", "github").stdout)

    def post(name, body, headers):
        return requests.post(
            f"{live.url}/webhook/{name}",
            data=body,
            headers={"Content-Type": "application/json", **headers},
            timeout=10,
        )

    invoice = json.dumps({"type": "invoice.paid", "data": {"amount": 100}}).encode()
    push = json.dumps({"ref": "refs/heads/main", "commits": []}).encode()
    gh_headers = {"X-GitHub-Delivery": "d-1", "X-GitHub-Event": "push"}

    good_sw = post(
        "billing", invoice, signatures.sign("standard_webhooks", sw_secret, invoice, msg_id="m-1")
    )
    good_gh = post("repo", push, {**gh_headers, **signatures.sign("github", gh_secret, push)})
    again_gh = post("repo", push, {**gh_headers, **signatures.sign("github", gh_secret, push)})
    tampered = post(
        "repo",
        push.replace(b"main", b"mail"),
        {**gh_headers, "X-GitHub-Delivery": "d-2", **signatures.sign("github", gh_secret, push)},
    )
    stale = post(
        "billing",
        invoice,
        signatures.sign(
            "standard_webhooks",
            sw_secret,
            invoice,
            msg_id="m-2",
            timestamp=int(time.time()) - 600,
        ),
    )

    assert good_sw.status_code == 202, good_sw.text
    assert good_gh.status_code == 202, good_gh.text
    assert again_gh.status_code == 200 and again_gh.json()["status"] == "duplicate"
    assert tampered.status_code == 401 and stale.status_code == 401
    assert tampered.json() == stale.json()
    stored = live.query("SELECT event_id, type FROM events_event ORDER BY event_id")
    assert stored == [("d-1", "push"), ("m-1", "invoice.paid")], "nothing refused is stored"
    rejected = live.query(
        "SELECT source_name, reason, count FROM events_rejectedrequest ORDER BY source_name"
    )
    assert rejected == [("billing", "stale_timestamp", 1), ("repo", "bad_signature", 1)]
    listing = live.manage("source", "list").stdout
    assert "billing" in listing and "repo" in listing and gh_secret not in listing
