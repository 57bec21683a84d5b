"""Real processes for end-to-end tests: a fresh database, gunicorn and the worker.

Each LiveRuntime gets its own database (an SQLite file in a temp folder, or a new
PostgreSQL database when DATABASE_URL points at PostgreSQL), migrated and loaded with
the demo fixtures and credentials exactly as `make run` does, and talks to it only over
HTTP on 127.0.0.1.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import requests

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_postgres() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


class LiveRuntime:
    def __init__(self, tmp_path: Path, *, web_workers: int = 2, with_worker: bool = True):
        self.tmp_path = tmp_path
        self.web_workers = web_workers
        self.with_worker = with_worker
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self._pg_db = None
        self.env = {
            **os.environ,
            "SECRET_KEY": "live-test-secret-key",
            "DEBUG": "0",
            "AUTOMATION_DEMO": "1",
            "PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
        }
        if is_postgres():
            base = urlparse(os.environ["DATABASE_URL"])
            self._pg_db = f"ar_live_{uuid.uuid4().hex[:12]}"
            self._pg_admin_url = os.environ["DATABASE_URL"]
            self.env["DATABASE_URL"] = urlunparse(base._replace(path="/" + self._pg_db))
            self._psql(f'CREATE DATABASE "{self._pg_db}"')
        else:
            self.db_path = tmp_path / "live.sqlite3"
            self.env["DATABASE_URL"] = f"sqlite:///{self.db_path}"

    # -- database -------------------------------------------------------------------
    def _psql(self, sql: str, url: str | None = None):
        import psycopg

        with psycopg.connect(url or self._pg_admin_url, autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else None

    def query(self, sql: str) -> list[tuple]:
        """Read the runtime's database directly, as an operator's SQL console would."""
        if self._pg_db:
            return self._psql(sql, self.env["DATABASE_URL"])
        import sqlite3

        with sqlite3.connect(self.db_path) as conn:
            return conn.execute(sql).fetchall()

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [PY, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def prepare(self) -> "LiveRuntime":
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("loaddata", "demo", "-v", "0")
        self.manage("demo_credentials")
        return self

    # -- processes ------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]):
        log = open(self.tmp_path / f"{name}.log", "ab")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self) -> "LiveRuntime":
        self._spawn(
            "gunicorn",
            [
                GUNICORN,
                "-c",
                "automation_runtime/gunicorn.conf.py",
                "--workers",
                str(self.web_workers),
            ],
        )
        if self.with_worker:
            self.start_worker()
        self.wait_ready()
        return self

    def start_worker(self, *args: str) -> str:
        """Start one more worker process (extra runworker arguments in args); returns its
        name in self.procs."""
        name = f"worker-{time.monotonic_ns()}"
        self._spawn(name, [PY, "manage.py", "runworker", "--interval", "0.1", *args])
        return name

    def wait_ready(self, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs["gunicorn"]
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.log('gunicorn')}")
            try:
                if requests.get(self.url + "/ready", timeout=5).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or still importing
                pass
            time.sleep(0.1)
        raise TimeoutError(f"runtime not ready:\n{self.log('gunicorn')}")

    def log(self, name: str) -> str:
        path = self.tmp_path / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str | None = None, sig: int = signal.SIGTERM):
        for key in [name] if name else list(self.procs):
            proc = self.procs.pop(key, None)
            if proc is None or proc.poll() is not None:
                continue
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def restart(self):
        self.stop()
        return self.start()  # same port and database, as a restarted server would have

    def close(self):
        self.stop()
        if self._pg_db:
            self._psql(f'DROP DATABASE IF EXISTS "{self._pg_db}" WITH (FORCE)')

    # -- HTTP helpers ---------------------------------------------------------------
    def post_event(self, body, *, key: str = "demo-key", headers: dict | None = None, **kwargs):
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        hdrs = {"Content-Type": "application/json", "X-API-Key": key, **(headers or {})}
        return requests.post(self.url + "/webhook", data=data, headers=hdrs, timeout=30, **kwargs)

    def operator(self, method: str, path: str, **kwargs):
        headers = {"Authorization": "Bearer demo-operator-token", **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def wait_for(self, predicate, timeout: float = 30, interval: float = 0.1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError("condition not met in time")


ENGINE_ENV = {
    "EXECUTION_LEASE_SECONDS": "3",
    "REAPER_INTERVAL_SECONDS": "1",
    "WORKER_STALE_SECONDS": "5",
}


def add_route(rt, event_type, connector, action, params, **fields):
    code = (
        "from connectors.models import Route; "
        f"Route.objects.create(name={event_type.replace('.', '-')!r}, event_type={event_type!r}, "
        f"connector={connector!r}, action={action!r}, params={json.loads(json.dumps(params))!r}, "
        + ", ".join(f"{k}={v!r}" for k, v in fields.items())
        + ")"
    )
    rt.manage("shell", "-c", code)


def start_workers(rt, n=1):
    for _ in range(n):
        rt.start_worker()


def statuses(rt):
    return dict(rt.query("SELECT status, COUNT(*) FROM events_execution GROUP BY status"))


def run_check(**env):
    base = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "automation_runtime.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextlib.contextmanager
def demo_sink(tmp_path: Path, port: int, fail_first: int):
    """`manage.py demo_sink` on 127.0.0.1:port, as the README and docs run it; yields the
    file its output goes to (open for reading), and stops it on the way out."""
    log = (tmp_path / "sink.log").open("w+")
    argv = ["manage.py", "demo_sink", "--port", str(port), "--fail-first", str(fail_first)]
    process = subprocess.Popen(
        [sys.executable, *argv],
        cwd=ROOT,
        env={"PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin", "ENV_FILE": ""},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield log
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def load_example(rt: "LiveRuntime", tmp_path: Path, name: str, port: int) -> str:
    """Load examples/<name> into the runtime with `port` in place of the demo sink's 9000;
    returns the fixture's text as the docs show it."""
    fixture = (ROOT / "examples" / name).read_text()
    (tmp_path / name).write_text(fixture.replace(":9000/", f":{port}/"))
    rt.manage("loaddata", str(tmp_path / name))
    return fixture
