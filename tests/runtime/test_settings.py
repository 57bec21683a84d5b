"""Settings come from the environment and fail loudly."""

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from automation_runtime.env import envbool, envint
from tests.support.live import ROOT, run_check


def test_the_server_refuses_to_start_without_a_secret_key_when_debug_is_off():
    base = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    done = subprocess.run(
        [sys.executable, "-c", "import automation_runtime.wsgi"],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "automation_runtime.settings", "DEBUG": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode != 0
    assert "SECRET_KEY is not set" in done.stderr


def test_maintenance_commands_run_without_a_secret_key():
    done = run_check(DEBUG="0")

    assert done.returncode == 0, done.stderr


def test_debug_mode_has_a_development_secret_key():
    assert run_check(DEBUG="1").returncode == 0


def test_a_bad_boolean_fails_loudly(monkeypatch):
    monkeypatch.setenv("X_FLAG", "perhaps")

    with pytest.raises(ImproperlyConfigured):
        envbool("X_FLAG", False)


def test_a_bad_integer_fails_loudly(monkeypatch):
    monkeypatch.setenv("MAX_BODY_BYTES", "lots")

    with pytest.raises(ImproperlyConfigured):
        envint("MAX_BODY_BYTES", 262144)


def test_the_body_limit_defaults_to_256_kib():
    from django.conf import settings

    if "MAX_BODY_BYTES" not in os.environ:
        assert settings.MAX_BODY_BYTES == 262144


def test_sqlite_databases_run_in_wal_mode(tmp_path):
    code = (
        "import django; django.setup(); from django.db import connection; "
        "c = connection.cursor(); c.execute('PRAGMA journal_mode'); print(c.fetchone()[0])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "automation_runtime.settings",
            "SECRET_KEY": "x",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'wal.sqlite3'}",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.stdout.strip() == "wal", done.stderr


def test_models_and_migrations_agree(db):
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def _sqlite_synchronous(tmp_path, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    script = (
        "import django; django.setup(); from django.db import connection; "
        "print(connection.cursor().execute('PRAGMA synchronous').fetchone()[0])"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={
            **base,
            "DJANGO_SETTINGS_MODULE": "automation_runtime.settings",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'sync.sqlite3'}",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_sqlite_syncs_at_every_commit_when_asked_and_refuses_an_unknown_mode(tmp_path):
    # PRAGMA synchronous: 1 is NORMAL, 2 is FULL.
    assert _sqlite_synchronous(tmp_path).stdout.strip() == "1"
    assert _sqlite_synchronous(tmp_path, SQLITE_SYNCHRONOUS="full").stdout.strip() == "2"
    refused = _sqlite_synchronous(tmp_path, SQLITE_SYNCHRONOUS="OFF")
    assert refused.returncode != 0
    assert "SQLITE_SYNCHRONOUS must be FULL or NORMAL" in refused.stderr
