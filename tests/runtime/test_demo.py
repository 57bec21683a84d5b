"""`make run`'s supervisor (bin/run-demo) as a user and a process manager meet it: its
settings in a .env that commands beside it read, and a graceful stop on SIGTERM."""

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from lib import signatures
from tests.support.live import ROOT, free_port

pytestmark = pytest.mark.live


@pytest.fixture
def demo(tmp_path):
    port = free_port()
    # As a user's shell has it: not the test run's settings module, key or demo mode.
    unset = ("SECRET_KEY", "AUTOMATION_DEMO", "DJANGO_SETTINGS_MODULE", "CONNECTORS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(
        PORT=str(port),
        BIND=f"127.0.0.1:{port}",
        DATABASE_URL=f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        ENV_FILE=str(tmp_path / ".env"),
        WEB_CONCURRENCY="1",
        PYTHONUNBUFFERED="1",
    )
    log = (tmp_path / "demo.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "bin/run-demo"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as under a process manager
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.2)
    else:
        log.seek(0)
        pytest.fail(f"the demo did not answer /health in 60 s:\n{log.read()}")
    yield SimpleNamespace(proc=proc, url=url, env=env, tmp=tmp_path, log=log)
    if proc.poll() is None:
        # gunicorn and the worker run in sessions of their own: kill them by pid too.
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        for pid in [proc.pid, *map(int, children)]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        proc.wait()


def output(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()


def test_commands_beside_the_demo_share_its_settings_through_the_env_file(demo):
    stored = (demo.tmp / ".env").read_text()
    assert "AUTOMATION_DEMO=1" in stored and "SECRET_KEY=" in stored
    assert oct((demo.tmp / ".env").stat().st_mode)[-3:] == "600"

    # Nothing exported: a signed source needs the demo's SECRET_KEY to seal its secret.
    beside = {k: v for k, v in demo.env.items() if k not in ("PORT", "BIND")}
    created = subprocess.run(
        [sys.executable, "manage.py", "source", "create", "hooks", "--scheme", "github"],
        cwd=ROOT,
        env=beside,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    secret = next(line.split()[-1] for line in created.stdout.splitlines() if "Secret:" in line)

    body = b'{"zen": "Keep it logically awesome."}'
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": "d-1",
        **signatures.sign("github", secret, body),
    }
    answer = requests.post(demo.url + "/webhook/hooks", data=body, headers=headers, timeout=10)
    rejected = sqlite3.connect(demo.tmp / "demo.sqlite3").execute(
        "SELECT reason FROM events_rejectedrequest"
    )
    assert answer.status_code == 202, list(rejected)  # the server read the same key


def test_sigterm_stops_it_cleanly_even_when_it_arrives_twice(demo):
    proc = demo.proc

    # A process manager signals the whole group; make forwards the signal once more.
    os.killpg(proc.pid, signal.SIGTERM)
    time.sleep(0.3)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)

    assert proc.wait(timeout=60) == 0, output(demo.log)
    assert "Stopped cleanly." in output(demo.log)
    with pytest.raises(requests.ConnectionError):
        requests.get(demo.url + "/health", timeout=2)


SYSTEM_PYTHON = "/usr/bin/python3"


def test_manage_py_outside_the_venv_says_how_to_run_it():
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"needs {SYSTEM_PYTHON}")
    if subprocess.run([SYSTEM_PYTHON, "-c", "import django"], capture_output=True).returncode == 0:
        pytest.skip(f"{SYSTEM_PYTHON} has Django installed")

    done = subprocess.run(
        [SYSTEM_PYTHON, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True
    )

    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"Django is not installed for {SYSTEM_PYTHON}. Run commands with the project's "
        "virtualenv: .venv/bin/python manage.py ... (`make venv` creates it)."
    )
