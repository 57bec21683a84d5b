"""A throwaway runtime for benchmarks: a fresh database, gunicorn and workers on 127.0.0.1.

Like tests/support/live.py, but the database kind is an argument rather than the environment,
any number of workers can run side by side, and the database can be read with SQL while
it runs. Use it as a context manager: processes are stopped and the database (SQLite file
or PostgreSQL database) is removed on the way out, also after an error.
"""

import contextlib
import http.client
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
HOST = "127.0.0.1"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
API_KEY = "demo-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = math.ceil(pct / 100 * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def as_utc(value) -> datetime | None:
    """A timestamp read from either database as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def post_event(port: int, event_id: str, event_type: str, timeout: float = 10) -> int:
    """POST one event to /webhook on a new connection; returns the HTTP status."""
    body = json.dumps({"event_id": event_id, "type": event_type}).encode()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/webhook",
            body=body,
            headers={"Content-Type": "application/json", "X-API-Key": API_KEY},
        )
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


class Runtime:
    """One fresh database with the demo loaded, plus the processes started on it."""

    def __init__(self, kind: str, *, pg_admin_url: str | None = None, env: dict | None = None):
        if kind not in ("sqlite", "postgres"):
            raise ValueError(f"unknown database kind {kind!r}")
        self.kind = kind
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
        self.port = free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        self._pg_admin_url = pg_admin_url
        self._pg_db = None
        self._conn = None
        self.env = {
            **os.environ,
            "SECRET_KEY": "bench-secret-key-not-for-production",
            "DEBUG": "0",
            "AUTOMATION_DEMO": "1",
            "PORT": str(self.port),
            "BIND": f"{HOST}:{self.port}",
            "PYTHONUNBUFFERED": "1",
            "ENV_FILE": "",  # a checkout's .env (the demo's) stays out of the benchmark
            **(env or {}),
        }
        if kind == "postgres":
            base = urlparse(pg_admin_url or "")
            if base.scheme not in ("postgres", "postgresql") or base.hostname not in LOCAL_HOSTS:
                raise ValueError(f"need a postgres:// URL on 127.0.0.1, got {pg_admin_url!r}")
            self._pg_db = f"bench_engine_{uuid.uuid4().hex[:12]}"
            self.env["DATABASE_URL"] = urlunparse(base._replace(path="/" + self._pg_db))
        else:
            self.db_path = self.tmp / "bench.sqlite3"
            self.env["DATABASE_URL"] = f"sqlite:///{self.db_path}"

    # -- lifecycle --------------------------------------------------------------------
    def __enter__(self) -> "Runtime":
        try:
            if self._pg_db:
                self._pg_admin(f'CREATE DATABASE "{self._pg_db}"')
            for step in (
                ["migrate", "--noinput", "-v", "0"],
                ["loaddata", "demo", "-v", "0"],
                ["demo_credentials"],
            ):
                self.manage(*step)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info):
        self.close(keep_logs=exc_info[0] is not None)

    def close(self, keep_logs: bool = False):
        try:
            self.stop_all()
        finally:
            try:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                if self._pg_db:
                    self._pg_admin(f'DROP DATABASE IF EXISTS "{self._pg_db}" WITH (FORCE)')
                    self._pg_db = None
            finally:
                if keep_logs:
                    for path in self.tmp.glob("bench.sqlite3*"):
                        path.unlink()
                    print(f"logs kept in {self.tmp}", file=sys.stderr)
                else:
                    shutil.rmtree(self.tmp, ignore_errors=True)

    def manage(self, *args: str) -> str:
        return self.python("manage.py", *args)

    def python(self, *args: str) -> str:
        """Run Python with the runtime's environment; returns stdout, raises on failure."""
        done = subprocess.run(
            [PY, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    # -- database ---------------------------------------------------------------------
    def _pg_admin(self, sql: str):
        import psycopg

        with psycopg.connect(self._pg_admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Read the runtime's database. Write placeholders as %s for both databases."""
        if self._conn is None:
            if self.kind == "postgres":
                import psycopg

                self._conn = psycopg.connect(
                    self.env["DATABASE_URL"], autocommit=True, connect_timeout=5
                )
            else:
                self._conn = sqlite3.connect(self.db_path, timeout=20, isolation_level=None)
        if self.kind == "sqlite":
            sql = sql.replace("%s", "?")
        return self._conn.execute(sql, params).fetchall()

    # -- processes --------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        if name in self.procs:
            raise ValueError(f"a process named {name!r} is already running")
        with open(self.tmp / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def start_gunicorn(
        self, workers: int = 1, timeout: float = 30, *, app: tuple = (), probe=("GET", "/ready")
    ):
        """gunicorn with the runtime's config, ready once `probe` answers 200 (`app`: other
        arguments, such as another WSGI application; a probe of None takes any answer)."""
        self._spawn(
            "gunicorn",
            [
                GUNICORN,
                "-c",
                "automation_runtime/gunicorn.conf.py",
                "--workers",
                str(workers),
                *app,
            ],
        )
        method, path = probe or ("POST", "/")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs["gunicorn"].poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.log('gunicorn')}")
            conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
            try:
                conn.request(method, path)
                status = conn.getresponse().status  # an answer, not just an accepted socket
                if probe is None or status == 200:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.1)
        raise TimeoutError(f"gunicorn not ready in {timeout} s:\n{self.log('gunicorn')}")

    def start_worker(self, name: str, interval: float = 0.05, concurrency: int | None = None):
        argv = [PY, "manage.py", "runworker", "--interval", str(interval)]
        if concurrency is not None:
            argv += ["--concurrency", str(concurrency)]
        self._spawn(name, argv)

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def log_problems(self) -> dict[str, int]:
        """Lines mentioning ERROR, CRITICAL or a traceback, per process log."""
        found = {}
        for path in sorted(self.tmp.glob("*.log")):
            with open(path, errors="replace") as log:
                count = sum(
                    1
                    for line in log
                    if "Traceback" in line or " ERROR " in line or "CRITICAL" in line
                )
            if count:
                found[path.stem] = count
        return found

    def stop(self, name: str, timeout: float = 20):
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    def stop_all(self):
        for name in list(self.procs):
            try:
                self.stop(name)
            except Exception as exc:
                print(f"could not stop {name}: {exc}", file=sys.stderr)

    # -- faults (the chaos scenarios) ---------------------------------------------------
    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 10) -> int:
        """Send `sig` to the named process only (not its children), wait for it to end and
        forget it, so a process of that name can be started again. Returns its pid."""
        proc = self.procs.pop(name)
        proc.send_signal(sig)  # a no-op if it has ended already
        proc.wait(timeout=timeout)
        return proc.pid

    def children(self, name: str) -> list[int]:
        """Pids of the named process's children (gunicorn's workers). Linux only."""
        return [pid for pid, ppid, _ in _processes() if ppid == self.procs[name].pid]

    def group(self, pgid: int) -> list[int]:
        """Pids still alive in a process group: what a killed process left behind (each
        process here starts its own group, whose id is its pid). Linux only."""
        return [pid for pid, _, group in _processes() if group == pgid]

    def reset_connection(self):
        """Forget the SQL connection of query(), e.g. after the database restarted."""
        if self._conn is not None:
            with contextlib.suppress(Exception):  # it may be broken already
                self._conn.close()
            self._conn = None


def _processes() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every live process, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended meanwhile
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":  # a zombie has ended; only its parent has not reaped it yet
            found.append((int(entry.name), int(fields[1]), int(fields[2])))
    return found
