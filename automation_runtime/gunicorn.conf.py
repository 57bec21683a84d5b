"""gunicorn settings; each can be overridden by the environment named beside it.

Operations (reload, stop, sizing) are described in docs/operations.md. The master reads
this file again on SIGHUP (`systemctl reload automation-web`), but not the environment:
a changed variable needs a restart.
"""

import os


def _int(name: str, default: int, minimum: int) -> int:
    # Like automation_runtime.env.envint, which would import Django into the master: the
    # master imports nothing of Django or the project, so the workers a SIGHUP starts
    # import all of it afresh (see preload_app below).
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer; got {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"{name} must be at least {minimum}; got {value}")
    return value


def _cores() -> int:
    # The CPUs this process may run on (taskset, cpusets), not every CPU of the machine.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


bind = os.environ.get("BIND", f"127.0.0.1:{os.environ.get('PORT', '8080')}")
# Sync workers: on SQLite, threads queue unfairly on the write lock (p99 near 1 s). Each
# worker keeps one database connection: size PostgreSQL's max_connections for it.
workers = _int("WEB_CONCURRENCY", _cores() * 2 + 1, minimum=1)
worker_class = "sync"
# No keepalive setting: sync workers close the connection after every response. A
# buffering reverse proxy (nginx) in front keeps slow clients off the workers.
timeout = _int("GUNICORN_TIMEOUT", 30, minimum=1)
# How long a stopping or reloaded worker may finish its request; the service manager must
# wait longer than this before it kills (TimeoutStopSec in deploy/systemd/).
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30, minimum=1)
max_requests = _int("GUNICORN_MAX_REQUESTS", 10000, minimum=0)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 1000, minimum=0)
wsgi_app = "automation_runtime.wsgi:application"
# Not preloaded: each worker imports the project itself, so SIGHUP's new workers run the
# code now on disk (a deploy without dropping a connection), and no database connection
# or thread is ever shared across fork. The cost is a little memory per worker.
preload_app = False
# Peers whose X-Forwarded-Proto gunicorn believes (wsgi.url_scheme, so Django's
# request.is_secure()): the TLS-terminating proxy's addresses. gunicorn's own default,
# spelled out.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# Workers touch a heartbeat file all the time; on a disk-backed /tmp that can stall a
# worker until it is killed as timed out. /dev/shm is memory.
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR") or (
    "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
)
# systemd knows the master's pid (MAINPID); a pid file is for other supervisors.
pidfile = os.environ.get("GUNICORN_PIDFILE") or None
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
control_socket_disable = True

if os.environ.get("LOG_FORMAT", "plain").strip().lower() == "json":
    # gunicorn's own lines (start, stop, worker timeouts, the access log) as JSON too.
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "lib.logcontext.JsonFormatter"}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }
