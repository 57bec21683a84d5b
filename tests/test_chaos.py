"""Chaos, short: what the runtime promises while its processes are SIGKILLed mid-flood.

The scenarios are those of `bench/chaos.py` (`make chaos`) at their quick sizes, on the
database DATABASE_URL names (SQLite otherwise): each starts real gunicorn and `runworker`
processes on a database of its own and a sink that honours Idempotency-Key on 127.0.0.1,
and fails with the evidence it found. Select them with `-m chaos`.
"""

import os
import sys
from pathlib import Path

import pytest

from tests.live import is_postgres

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import chaos  # bench/ is a folder of scripts, not a package

pytestmark = [pytest.mark.chaos, pytest.mark.live]

if sys.platform != "linux":  # pragma: no cover
    pytestmark.append(pytest.mark.skip("process signals and /proc as on Linux"))

KIND = "postgres" if is_postgres() else "sqlite"
# On PostgreSQL each scenario creates its own database on this server and drops it.
PG_URL = os.environ.get("DATABASE_URL", "")


def run(scenario: str) -> chaos.Outcome:
    outcome = chaos.run(scenario, KIND, chaos.QUICK, PG_URL)
    assert outcome.passed, outcome.report()
    return outcome


def test_workers_sigkilled_mid_flood_lose_no_event_and_repeat_no_side_effect():
    outcome = run("worker-kills")
    assert outcome.side_effects == outcome.executions == chaos.QUICK.events


def test_gunicorn_sigkilled_mid_flood_keeps_every_acknowledged_event_whole():
    outcome = run("gunicorn-kills")
    assert outcome.executions == outcome.acks


def test_a_duplicate_storm_is_stored_run_and_delivered_once_per_event():
    outcome = run("duplicate-storm")
    assert outcome.side_effects == outcome.executions == chaos.QUICK.storm_ids
