"""Production: the deploy checks pass, HTTPS is one switch, and the deploy files stay true.

The settings tests run the real settings module in a subprocess with a production-like
environment, as a server would; the deploy-file tests parse the Procfile and the systemd
units so that a renamed command, option or path fails here instead of in production.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from configparser import ConfigParser
from pathlib import Path

import pytest
from django.core.management import get_commands, load_command_class

from tests.support.live import GUNICORN, ROOT

UNITS = ROOT / "deploy" / "systemd"
INSTALL_DIR = "/opt/automation-runtime"
PRODUCTION_KEY = "k3y-" + "x7Qp2vLr9sT4wZ8mN1bC6dF0gH5jK3" * 2  # over 50 varied characters
# Variables a test must not inherit from whoever runs it (the shared test DATABASE_URL
# above all).
_SCRUBBED = re.compile(
    r"^(DATABASE_URL|SECRET_KEY|DEBUG|ALLOWED_HOSTS|HTTPS_ONLY|TRUST_X_FORWARDED_PROTO"
    r"|SILENCED_SYSTEM_CHECKS|FORWARDED_ALLOW_IPS|WHITENOISE_USE_FINDERS|SECURE_.*"
    r"|SESSION_COOKIE_SECURE|CSRF_.*|GUNICORN_.*|BIND|PORT|WEB_CONCURRENCY)$"
)


def production_env(tmp_path, **env):
    base = {k: v for k, v in os.environ.items() if not _SCRUBBED.match(k)}
    return {
        **base,
        "DJANGO_SETTINGS_MODULE": "automation_runtime.settings",
        # A database of its own that nothing here creates: checks and redirects need none.
        "DATABASE_URL": f"sqlite:///{tmp_path / 'deploy.sqlite3'}",
        "DEBUG": "0",
        "SECRET_KEY": PRODUCTION_KEY,
        "ALLOWED_HOSTS": "automation.example.com,127.0.0.1",
        **env,
    }


def run(argv, env, timeout=120):
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def deploy_check(tmp_path, **env):
    return run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        production_env(tmp_path, **env),
    )


SHOW_SETTINGS = """
import json, django
django.setup()
from django.conf import settings as s
print(json.dumps({name: getattr(s, name, None) for name in (
    "SECURE_SSL_REDIRECT", "SECURE_REDIRECT_EXEMPT", "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD", "SECURE_PROXY_SSL_HEADER")}))
"""


def security_settings(tmp_path, **env):
    done = run([sys.executable, "-c", SHOW_SETTINGS], production_env(tmp_path, **env))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# -- manage.py check --deploy ---------------------------------------------------------------


def test_production_settings_pass_the_deploy_checks_without_a_warning(tmp_path):
    done = deploy_check(tmp_path, HTTPS_ONLY="1", WHITENOISE_USE_FINDERS="0")

    assert done.returncode == 0, done.stderr
    assert "System check identified no issues (0 silenced)." in done.stdout
    assert "WARNING" not in done.stdout + done.stderr


def test_without_https_only_the_deploy_checks_warn(tmp_path):
    done = deploy_check(tmp_path)

    assert done.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in done.stderr


def test_a_part_turned_off_on_its_own_is_reported(tmp_path):
    done = deploy_check(tmp_path, HTTPS_ONLY="1", SECURE_HSTS_PRELOAD="0")

    assert done.returncode != 0
    assert "security.W021" in done.stderr
    assert "security.W008" not in done.stderr


def test_a_check_the_operator_decided_to_live_with_can_be_silenced(tmp_path):
    done = deploy_check(
        tmp_path, HTTPS_ONLY="1", SECURE_HSTS_PRELOAD="0", SILENCED_SYSTEM_CHECKS="security.W021"
    )

    assert done.returncode == 0, done.stderr


# -- the HTTPS switch ---------------------------------------------------------------------


def test_https_is_off_by_default_so_the_demo_runs_over_plain_http(tmp_path):
    values = security_settings(tmp_path)

    assert values["SECURE_SSL_REDIRECT"] is False
    assert values["SESSION_COOKIE_SECURE"] is False
    assert values["CSRF_COOKIE_SECURE"] is False
    assert values["SECURE_HSTS_SECONDS"] == 0
    assert values["SECURE_PROXY_SSL_HEADER"] is None


def test_https_only_turns_on_redirect_secure_cookies_and_hsts(tmp_path):
    values = security_settings(tmp_path, HTTPS_ONLY="1")

    assert values["SECURE_SSL_REDIRECT"] is True
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["CSRF_COOKIE_SECURE"] is True
    assert values["SECURE_HSTS_SECONDS"] == 31_536_000
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert values["SECURE_HSTS_PRELOAD"] is True
    assert values["SECURE_REDIRECT_EXEMPT"] == ["^health$", "^ready$", "^metrics$"]
    # Believing X-Forwarded-Proto from anyone is a separate, deliberate choice.
    assert values["SECURE_PROXY_SSL_HEADER"] is None


def test_each_https_setting_can_be_overridden(tmp_path):
    values = security_settings(
        tmp_path,
        HTTPS_ONLY="1",
        SECURE_SSL_REDIRECT="0",
        SECURE_HSTS_SECONDS="3600",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="0",
        SECURE_REDIRECT_EXEMPT="^health$",
        TRUST_X_FORWARDED_PROTO="1",
    )

    assert values["SECURE_SSL_REDIRECT"] is False
    assert values["SECURE_HSTS_SECONDS"] == 3600
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is False
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["SECURE_REDIRECT_EXEMPT"] == ["^health$"]
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HTTPS_ONLY", "perhaps"),
        ("SECURE_HSTS_SECONDS", "a year"),
        ("SECURE_HSTS_SECONDS", "-1"),
        ("TRUST_X_FORWARDED_PROTO", "proxy"),
        ("SECURE_REDIRECT_EXEMPT", "^health($"),
    ],
)
def test_a_bad_https_setting_fails_loudly(tmp_path, name, value):
    done = run([sys.executable, "-c", SHOW_SETTINGS], production_env(tmp_path, **{name: value}))

    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert name in done.stderr


REQUESTS = """
import json, django
django.setup()
from django.test import Client
web = Client(HTTP_HOST="automation.example.com")
probe = Client(HTTP_HOST="127.0.0.1")
answers = {
    "admin": web.get("/admin/"),
    "webhook": web.post("/webhook", b"{}", content_type="application/json"),
    "health": probe.get("/health"),
    "ready": probe.get("/ready"),
    "metrics": probe.get("/metrics"),
    "admin over https": web.get("/admin/", secure=True),
    "claims https": web.get("/admin/", HTTP_X_FORWARDED_PROTO="https"),
}
print(json.dumps({name: [r.status_code, r.headers.get("Location", ""),
                         r.headers.get("Strict-Transport-Security", "")]
                  for name, r in answers.items()}))
"""


def answers(tmp_path, **env):
    done = run([sys.executable, "-c", REQUESTS], production_env(tmp_path, **env))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_https_only_redirects_plain_http_but_not_the_probes(tmp_path):
    got = answers(tmp_path, HTTPS_ONLY="1")

    assert got["admin"][:2] == [301, "https://automation.example.com/admin/"]
    # A webhook sent to an http:// URL is not stored: the sender sees a 301, not a 2xx.
    assert got["webhook"][:2] == [301, "https://automation.example.com/webhook"]
    assert got["health"][0] == 200
    assert got["ready"][0] != 301  # 503 here: this throwaway database is not migrated
    assert got["metrics"][0] != 301
    # Over HTTPS: no redirect, and browsers are told to stay on HTTPS.
    assert got["admin over https"][0] == 302  # to the login page
    assert got["admin over https"][2] == "max-age=31536000; includeSubDomains; preload"
    # A client cannot talk its way out of the redirect with a header...
    assert got["claims https"][0] == 301


def test_x_forwarded_proto_is_believed_only_when_trusted(tmp_path):
    got = answers(tmp_path, HTTPS_ONLY="1", TRUST_X_FORWARDED_PROTO="1")

    assert got["claims https"][0] == 302
    assert got["admin"][0] == 301


def test_without_https_only_nothing_is_redirected(tmp_path):
    got = answers(tmp_path)

    assert got["admin"][0] == 302
    assert got["health"][0] == 200
    assert got["admin over https"][2] == ""


# -- gunicorn -------------------------------------------------------------------------------


def gunicorn_config(tmp_path, **env):
    done = run(
        [GUNICORN, "--print-config", "-c", "automation_runtime/gunicorn.conf.py"],
        production_env(tmp_path, **env),
    )
    assert done.returncode == 0, done.stderr
    return {
        name.strip(): value.strip()
        for name, _, value in (line.partition("=") for line in done.stdout.splitlines())
        if value
    }


def test_gunicorn_reads_its_production_settings_from_the_environment(tmp_path):
    config = gunicorn_config(
        tmp_path,
        FORWARDED_ALLOW_IPS="10.0.0.5,10.0.0.6",
        GUNICORN_PIDFILE=str(tmp_path / "web.pid"),
        GUNICORN_GRACEFUL_TIMEOUT="20",
        WEB_CONCURRENCY="4",
    )

    assert config["forwarded_allow_ips"] == "['10.0.0.5', '10.0.0.6']"
    assert config["pidfile"] == str(tmp_path / "web.pid")
    assert config["graceful_timeout"] == "20"
    assert config["workers"] == "4"
    assert config["worker_class"] == "sync"
    assert config["preload_app"] == "False"
    assert config["control_socket_disable"] == "True"
    if Path("/dev/shm").is_dir():  # noqa: S108
        assert config["worker_tmp_dir"] == "/dev/shm"  # noqa: S108


def test_gunicorn_trusts_only_a_local_proxy_by_default(tmp_path):
    config = gunicorn_config(tmp_path)

    assert config["forwarded_allow_ips"] == "['127.0.0.1', '::1']"
    assert config["pidfile"] == "None"
    assert config["bind"] == "['127.0.0.1:8080']"


def test_a_bad_gunicorn_setting_fails_loudly(tmp_path):
    done = run(
        [GUNICORN, "--check-config", "-c", "automation_runtime/gunicorn.conf.py"],
        production_env(tmp_path, GUNICORN_TIMEOUT="soon"),
    )

    assert done.returncode != 0
    assert "GUNICORN_TIMEOUT must be an integer" in done.stdout + done.stderr


# -- the deploy files -------------------------------------------------------------------------


def unit(name: str) -> ConfigParser:
    parser = ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(UNITS / name)
    return parser


SERVICES = [
    "automation-web.service",
    "automation-worker@.service",
    "automation-prune.service",
]


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if line.strip() and not line.startswith("#"))


def commands_in_deploy_files() -> list[tuple[str, list[str]]]:
    found = [(f"Procfile {name}", shlex.split(cmd)) for name, cmd in procfile().items()]
    found += [(name, shlex.split(unit(name)["Service"]["ExecStart"])) for name in SERVICES]
    return found


def check_manage_command(where: str, argv: list[str]) -> None:
    name, args = argv[argv.index("manage.py") + 1], argv[argv.index("manage.py") + 2 :]
    known = get_commands()
    assert name in known, f"{where}: manage.py has no command {name!r}"
    command = load_command_class(known[name], name)
    # Unknown options or bad values raise CommandError here.
    command.create_parser("manage.py", name).parse_args(args)


def check_gunicorn_command(where: str, argv: list[str]) -> None:
    config = argv[argv.index("-c") + 1].removeprefix(INSTALL_DIR + "/")
    assert config == "automation_runtime/gunicorn.conf.py", f"{where}: config {config!r}"
    assert (ROOT / config).is_file()


def test_every_command_in_the_procfile_and_the_units_exists_with_those_options():
    seen = set()
    for where, argv in commands_in_deploy_files():
        program = Path(argv[0]).name
        if "manage.py" in argv:
            assert program.startswith("python"), f"{where}: {argv[0]}"
            check_manage_command(where, argv)
            seen.add(argv[argv.index("manage.py") + 1])
        else:
            assert program == "gunicorn", f"{where}: {argv[0]}"
            check_gunicorn_command(where, argv)
            seen.add("gunicorn")
    assert seen == {"gunicorn", "runworker", "migrate", "prune"}


def test_the_procfile_names_web_worker_and_release():
    assert set(procfile()) == {"web", "worker", "release"}


def test_the_units_run_from_the_install_dir_with_one_environment_file():
    for name in SERVICES:
        service = unit(name)["Service"]
        assert service["WorkingDirectory"] == INSTALL_DIR, name
        assert service["EnvironmentFile"] == "/etc/automation-runtime/env", name
        assert service["User"] == "automation", name
        program = shlex.split(service["ExecStart"])[0]
        assert program.startswith(INSTALL_DIR + "/.venv/bin/"), name
        # The same program exists in the virtualenv these tests run in.
        assert Path(sys.executable).with_name(Path(program).name).exists(), name


def test_the_web_unit_reloads_with_hup_and_waits_longer_than_gunicorn_does():
    service = unit("automation-web.service")["Service"]

    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"  # the master stops its own workers
    assert int(service["TimeoutStopSec"]) > 30  # GUNICORN_GRACEFUL_TIMEOUT's default


def test_the_worker_unit_is_a_template_stopped_by_sigterm():
    service = unit("automation-worker@.service")["Service"]

    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > 35  # HTTP_CONNECT_TIMEOUT + HTTP_READ_TIMEOUT
    assert service["Restart"] == "always"


def test_the_prune_timer_starts_the_prune_service_daily():
    timer = unit("automation-prune.timer")

    assert "Unit" not in timer["Timer"]  # so it starts automation-prune.service
    assert timer["Timer"]["OnCalendar"].startswith("*-*-* ")
    assert unit("automation-prune.service")["Service"]["Type"] == "oneshot"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_accepts_the_units(tmp_path):
    venv_bin = str(Path(sys.executable).parent)
    for path in UNITS.iterdir():
        text = path.read_text().replace(INSTALL_DIR + "/.venv/bin", venv_bin)
        name = path.name.replace("@.service", "@1.service")
        (tmp_path / name).write_text(text.replace(INSTALL_DIR, str(ROOT)))
    done = run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
        {**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )

    # verify exits 0 even for unknown keys and bad values; it only says so.
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == ""


def settings_variables() -> set[str]:
    names = set()
    for path in (
        ROOT / "automation_runtime" / "settings.py",
        ROOT / "automation_runtime" / "gunicorn.conf.py",
    ):
        text = path.read_text()
        names |= set(
            re.findall(r"(?:envbool|envint|envlist|_int)\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']", text)
        )
        names |= set(re.findall(r"os\.environ(?:\.get\(|\[)\s*[\"']([A-Z][A-Z0-9_]+)[\"']", text))
    return names


def test_every_variable_the_settings_read_is_in_env_example_and_the_readme():
    env_example = (ROOT / "deploy" / "env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    names = settings_variables()
    assert {"SECRET_KEY", "HTTPS_ONLY", "FORWARDED_ALLOW_IPS"} <= names

    missing_example = sorted(n for n in names if not re.search(rf"^#?{n}=", env_example, re.M))
    missing_readme = sorted(n for n in names if f"`{n}`" not in readme)
    assert not missing_example, f"add to deploy/env.example: {missing_example}"
    assert not missing_readme, f"add to README.md's configuration table: {missing_readme}"
