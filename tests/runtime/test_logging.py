"""LOG_FORMAT=json: one JSON object per line, carrying the event id and execution id."""

import io
import json
import logging
import os
import subprocess
import sys

import pytest
from django.core.management import call_command

from connectors.models import Route
from events.intake import ingest
from events.models import Execution
from lib.logcontext import JsonFormatter, LogContextFilter, bind, log_context
from tests.support.helpers import ORDER, post
from tests.support.live import ROOT


@pytest.fixture
def json_log():
    """The root logger writing JSON lines, as LOG_FORMAT=json configures it, into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(LogContextFilter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def lines(stream) -> list[dict]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.django_db(transaction=True)
def test_an_ingest_and_its_executions_log_json_lines_with_their_ids(
    client, source, route, json_log, monkeypatch, django_capture_on_commit_callbacks
):
    Route.objects.create(
        name="crashes",
        event_type="order.*",
        connector="scripted",
        action="run",
        params={"script": ["crash"]},
    )
    decide = ingest.policy.decide_ingest

    def decide_and_log(**kwargs):
        logging.getLogger("guardrails.policy").info("deciding")
        return decide(**kwargs)

    monkeypatch.setattr(ingest.policy, "decide_ingest", decide_and_log)

    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, ORDER, key=source.api_key)
    assert response.status_code == 202
    call_command("runworker", no_loop=True, verbosity=0)

    logged = lines(json_log)  # every line is one JSON object
    for line in logged:
        assert {"time", "level", "logger", "message"} <= line.keys()
        assert line["time"].endswith("Z")
    deciding = next(line for line in logged if line["message"] == "deciding")
    assert deciding["event_id"] == "evt_1"
    assert deciding["source"] == "shop"

    executions = {e.route.name: e for e in Execution.objects.select_related("route")}
    logged_by_connector = next(line for line in logged if line["logger"] == "connectors")
    assert logged_by_connector["event_id"] == "evt_1"
    assert logged_by_connector["event_uuid"] == response.json()["id"]
    assert logged_by_connector["execution_id"] == executions["orders-to-log"].pk
    assert logged_by_connector["route"] == "orders-to-log"
    assert logged_by_connector["attempt"] == 1
    assert logged_by_connector["worker"]

    crash = next(line for line in logged if "connector raised" in line["message"])
    assert crash["level"] == "ERROR"
    assert crash["execution_id"] == executions["crashes"].pk
    assert crash["event_id"] == "evt_1"
    assert crash["exc_info"].startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: bug in connector" in crash["exc_info"]


def test_the_context_ends_with_its_block_and_extra_fields_win(json_log):
    log = logging.getLogger("tests")
    with log_context(execution_id=7, event_id="evt_outer"):
        bind(attempt=2)
        with log_context(event_id="evt_inner"):
            log.info("inner")
        log.info("outer", extra={"route": "r1"})
    log.info("after")

    inner, outer, after = lines(json_log)
    assert (inner["event_id"], inner["execution_id"], inner["attempt"]) == ("evt_inner", 7, 2)
    assert (outer["event_id"], outer["route"]) == ("evt_outer", "r1")
    assert "event_id" not in after and "execution_id" not in after


def test_a_message_with_newlines_stays_on_one_line(json_log):
    logging.getLogger("tests").warning('two\nlines and a quote " and ünïcode')

    [line] = lines(json_log)
    assert line["message"] == 'two\nlines and a quote " and ünïcode'


def _django_process(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
            "DJANGO_SETTINGS_MODULE": "automation_runtime.test_settings",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_log_format_json_in_the_environment_makes_the_console_log_json():
    done = _django_process(
        "import logging; logging.getLogger('events.execution').warning('lease lost')",
        LOG_FORMAT="json",
    )

    assert done.returncode == 0, done.stderr
    [line] = [json.loads(text) for text in done.stderr.splitlines()]
    assert line["message"] == "lease lost"
    assert line["logger"] == "events.execution"
    assert line["level"] == "WARNING"


def test_the_default_log_format_is_plain_and_a_bad_one_is_refused():
    plain = _django_process("import logging; logging.getLogger('x').warning('hello')")
    bad = _django_process("pass", LOG_FORMAT="xml")

    assert plain.returncode == 0 and "WARNING x hello" in plain.stderr
    assert bad.returncode != 0 and "LOG_FORMAT must be 'plain' or 'json'" in bad.stderr


@pytest.mark.live
def test_every_process_logs_one_json_object_per_line(tmp_path):
    """gunicorn's own lines, the web workers' and the execution worker's: all JSON."""
    from tests.support.live import LiveRuntime

    runtime = LiveRuntime(tmp_path)
    runtime.env["LOG_FORMAT"] = "json"
    try:
        runtime.prepare().start()
        response = runtime.post_event({"event_id": "json-log-1", "type": "order.created"})
        assert response.status_code == 202
        runtime.wait_for(
            lambda: runtime.query("SELECT status FROM events_execution") == [("succeeded",)]
        )
    finally:
        runtime.close()
    logs = sorted(tmp_path.glob("*.log"))
    assert any(p.name.startswith("worker-") for p in logs), logs
    lines = [line for path in logs for line in path.read_text().splitlines() if line.strip()]
    assert lines, "the processes wrote log lines"
    records = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    assert {"gunicorn.error"} <= {r["logger"] for r in records}
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
