"""Chaos, short: what the runtime promises while its processes and its database fail.

The scenarios are those of `bench/chaos.py` (`make chaos`) at their quick sizes, on the
database DATABASE_URL names (SQLite otherwise): each starts real gunicorn and `runworker
--concurrency 32` processes on a database of its own and a sink that honours
Idempotency-Key on 127.0.0.1, and fails with the evidence it found. Select them with
`-m chaos`.
"""

import dataclasses
import os
import sys
from pathlib import Path

import pytest

from tests.support.live import is_postgres

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import chaos  # bench/ is a folder of scripts, not a package

pytestmark = [pytest.mark.chaos, pytest.mark.live]

if sys.platform != "linux":  # pragma: no cover
    pytestmark.append(pytest.mark.skip("process signals and /proc as on Linux"))

KIND = "postgres" if is_postgres() else "sqlite"
# On PostgreSQL each scenario creates its own database on this server and drops it.
PG_URL = os.environ.get("DATABASE_URL", "")
SIZES = chaos.QUICK


def run(scenario: str, sizes: "chaos.Sizes" = SIZES) -> chaos.Outcome:
    outcome = chaos.run(scenario, KIND, sizes, PG_URL)
    assert outcome.passed, outcome.report()
    return outcome


def test_workers_sigkilled_with_32_in_flight_lose_no_event_and_repeat_no_side_effect():
    outcome = run("worker-kills")
    assert SIZES.concurrency == 32
    assert outcome.side_effects == outcome.executions == SIZES.kill_events
    # Every kill hit a worker with all 32 slots busy (what came back is checked in there).
    assert outcome.facts["held_at_kills"] == [32] * SIZES.worker_kills


@pytest.mark.skipif(
    KIND == "sqlite",
    reason="SQLite is a file in the workers' own processes: there is no database server "
    "to restart (on PostgreSQL the scenario restarts a private cluster of its own)",
)
@pytest.mark.parametrize(
    "lease",
    [SIZES.restart_lease, 5],
    ids=["leases-outlast-the-outage", "leases-expire-during-the-outage"],
)
def test_a_database_restart_with_32_in_flight_leaves_each_worker_running_and_resuming(lease):
    # With leases shorter than the outage, the reapers must still leave live workers'
    # work alone once the database is back (it cut every worker off, not one).
    outcome = run("db-restart", dataclasses.replace(SIZES, restart_lease=lease))
    assert outcome.side_effects == outcome.executions == SIZES.restart_events
    assert outcome.facts["held_at_stop"] == dict.fromkeys(chaos.WORKERS, 32)
    assert outcome.absorbed == 0  # nothing ran twice: every worker kept its leases


def test_gunicorn_sigkilled_mid_flood_keeps_every_acknowledged_event_whole():
    outcome = run("gunicorn-kills")
    assert outcome.executions == outcome.acks


def test_a_duplicate_storm_is_stored_run_and_delivered_once_per_event():
    outcome = run("duplicate-storm")
    assert outcome.side_effects == outcome.executions == SIZES.storm_ids


def test_a_two_step_chain_under_sigkills_emits_each_follow_up_once_and_runs_each_step_once():
    outcome = run("chain-kills")
    # Two executions (the step and its follow-up's step) and two side effects per event.
    assert outcome.executions == outcome.side_effects == 2 * outcome.acks
