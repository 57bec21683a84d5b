"""Settings for the automation runtime. Every value comes from the environment.

See the configuration table in README.md for what each variable does.
"""

import os
import re
import secrets
import warnings
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.templatetags.static import static
from dotenv import load_dotenv

from automation_runtime.env import envbool, envint, envlist

BASE_DIR = Path(__file__).resolve().parent.parent

# A .env file (git-ignored; `make run` writes one for the demo) fills in what the
# environment leaves unset, so commands run beside the demo use its key and mode. ENV_FILE
# names another file (relative to the project root), or "" for none.
ENV_FILE = os.environ.get("ENV_FILE", ".env")
if ENV_FILE:
    load_dotenv(BASE_DIR / ENV_FILE, override=False)

DEBUG = envbool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
# Without a real key the web server refuses to start (automation_runtime/wsgi.py).
# Commands that sign nothing (migrate, makemigrations --check, check) still run, with a
# throwaway key that nothing outlives.
SECRET_KEY_MISSING = not SECRET_KEY and not DEBUG
if not SECRET_KEY:
    SECRET_KEY = (
        "insecure-development-key-only-used-when-DEBUG-is-on"
        if DEBUG
        else secrets.token_urlsafe(50)
    )

# Older keys, still accepted for sessions and for reading sources' signing secrets while
# SECRET_KEY is being rotated.
SECRET_KEY_FALLBACKS = envlist("SECRET_KEY_FALLBACKS", [])

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # The admin's theme (docs/architecture.md): before django.contrib.admin, so its templates
    # and its admin site win.
    "unfold",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # the API docs' Swagger UI files, served here, no CDN
    "guardrails",
    "connectors",
    "events",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "automation_runtime.urls"
WSGI_APPLICATION = "automation_runtime.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                # The runtime's mode on every admin page's header (lazy: no query unless
                # a page shows it).
                "events.observe.context_processors.runtime_badge",
            ],
        },
    },
]

# The admin's look (django-unfold): the sidebar lists the same apps and models the stock
# index did (automation_runtime/sidebar.py); the index shows the runtime dashboard.
UNFOLD = {
    "SITE_TITLE": "Automation runtime",
    "SITE_HEADER": "Automation runtime",
    "SITE_SYMBOL": "bolt",
    "STYLES": [lambda request: static("events/admin.css")],
    "SIDEBAR": {
        "show_search": True,
        "show_all_applications": False,
        "navigation": "automation_runtime.sidebar.navigation",
    },
}

# Unfold's login form (0.91) has no hidden "next" field: a login at /admin/login/ itself
# lands here rather than on Django's default /accounts/profile/, which does not exist.
LOGIN_REDIRECT_URL = "admin:index"

# Database: DATABASE_URL, or an SQLite file beside the project.
if not os.environ.get("DATABASE_URL", "").strip():
    os.environ.pop("DATABASE_URL", None)  # set but empty means "the default"
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=envint("DB_CONN_MAX_AGE", 600, minimum=0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at
    # BEGIN so two writers queue on busy_timeout instead of failing to upgrade a lock.
    # NORMAL keeps every commit through process crashes and clean restarts; FULL syncs the
    # log at every commit, so commits also survive a power loss or an OS crash, at the
    # price of an fsync per commit.
    SQLITE_SYNCHRONOUS = os.environ.get("SQLITE_SYNCHRONOUS", "NORMAL").strip().upper()
    if SQLITE_SYNCHRONOUS not in ("FULL", "NORMAL"):
        raise ImproperlyConfigured(
            f"SQLITE_SYNCHRONOUS must be FULL or NORMAL; got {SQLITE_SYNCHRONOUS!r}"
        )
    DATABASES["default"]["OPTIONS"] = {
        "init_command": (
            f"PRAGMA journal_mode=WAL;PRAGMA synchronous={SQLITE_SYNCHRONOUS};"
            "PRAGMA foreign_keys=ON"
        ),
        "transaction_mode": "IMMEDIATE",
        "timeout": envint("SQLITE_TIMEOUT", 20, minimum=1),
    }
    # A persistent SQLite connection is cheap and keeps the WAL pragmas applied.
    DATABASES["default"]["CONN_MAX_AGE"] = None
else:
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault(
        "connect_timeout", envint("DB_CONNECT_TIMEOUT", 5, minimum=1)
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# Serve the admin's assets from the installed apps when collectstatic has not run,
# so `make run` and the tests work on a fresh clone.
WHITENOISE_USE_FINDERS = envbool("WHITENOISE_USE_FINDERS", True)
WHITENOISE_AUTOREFRESH = DEBUG
# Before collectstatic has run, the finders serve the files; do not warn about the empty root.
warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
if WHITENOISE_USE_FINDERS:
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}

# Ingestion limits.
MAX_BODY_BYTES = envint("MAX_BODY_BYTES", 262144, minimum=1)
MAX_JSON_DEPTH = envint("MAX_JSON_DEPTH", 64, minimum=1)
MAX_JSON_KEYS = envint("MAX_JSON_KEYS", 10_000, minimum=1)
MAX_STRING_LENGTH = envint("MAX_STRING_LENGTH", 65_536, minimum=1)
# Chained steps (docs/workflows.md): a follow-up event deeper than this is stored blocked.
MAX_CHAIN_DEPTH = envint("MAX_CHAIN_DEPTH", 10, minimum=1)
# How far a signed request's timestamp may be from our clock, either way (signature schemes
# that carry a timestamp: Standard Webhooks, Stripe, Slack).
SIGNATURE_TOLERANCE_SECONDS = envint("SIGNATURE_TOLERANCE_SECONDS", 300, minimum=1)
# Django refuses request bodies above this before our view sees them; keep it in step.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(MAX_BODY_BYTES, 2621440)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "guardrails.auth.OperatorTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "lib.errors.drf_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The OpenAPI schema at /api/schema/ (shared pieces in lib/openapi.py).
SPECTACULAR_SETTINGS = {
    "TITLE": "Automation Runtime API",
    "VERSION": "0.1.0",
    "DESCRIPTION": (
        "Webhook ingestion and the operator API of the automation runtime. Every error is "
        '`{"status": "error", "error": {"code", "message"}}`: the code is stable, the '
        "message is for people."
    ),
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Public: the schema names no secret, and a bad credential must not hide it.
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["lib.openapi.drop_trailing_slash_aliases"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "lib.openapi.document_bad_requests",
    ],
    "ENUM_NAME_OVERRIDES": {
        "ErrorStatusEnum": "lib.openapi.ERROR_STATUSES",
        "WebhookAckStatusEnum": "lib.openapi.WEBHOOK_ACK_STATUSES",
        "ConflictStatusEnum": "lib.openapi.CONFLICT_STATUSES",
        "HealthStatusEnum": "lib.openapi.HEALTH_STATUSES",
        "ReadinessStatusEnum": "lib.openapi.READINESS_STATUSES",
    },
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            # OperatorToken (Authorization: Bearer) comes from its extension in openapi.py.
            "ApiKey": {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": "One of the source's API keys; it also names the source.",
            },
        },
    },
}

# Demo mode (make run) creates well-known demo credentials; never enable it in production.
DEMO_MODE = envbool("AUTOMATION_DEMO", False)

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()
# "plain" lines for people, or "json": one object per line with the event id, execution
# id, source, route, attempt and worker where known (lib/logcontext.py).
LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain").strip().lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'plain' or 'json'; got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "log_context": {"()": "lib.logcontext.LogContextFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "lib.logcontext.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["log_context"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # A rejected request is not a server error; keep 4xx noise out of the logs.
        "django.request": {"level": "ERROR"},
        "django.db.backends": {"level": "INFO"},
    },
}

SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

# HTTPS (docs/operations.md). HTTPS_ONLY=1 says the site is reached over HTTPS only,
# usually through a TLS-terminating proxy: plain HTTP is redirected, cookies are sent over
# HTTPS only and browsers are told to use nothing else (HSTS). Each part can still be set
# on its own. Off by default so the demo and the tests run over plain HTTP.
HTTPS_ONLY = envbool("HTTPS_ONLY", False)
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", HTTPS_ONLY)
# Paths (without the leading slash) answered over plain HTTP too: load balancers and
# Prometheus often probe the server itself on its private or loopback address, where a
# redirect fails the probe. None of them sets a cookie; /metrics has its own rules.
SECURE_REDIRECT_EXEMPT = envlist("SECURE_REDIRECT_EXEMPT", [r"^health$", r"^ready$", r"^metrics$"])
for _pattern in SECURE_REDIRECT_EXEMPT:
    try:
        re.compile(_pattern)
    except re.error as exc:
        raise ImproperlyConfigured(
            f"SECURE_REDIRECT_EXEMPT: {_pattern!r} is not a regular expression ({exc})"
        ) from None
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", HTTPS_ONLY)
CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", HTTPS_ONLY)
# Browsers remember HSTS for this long: try a small value (3600) first. Sent only over HTTPS.
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31_536_000 if HTTPS_ONLY else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS_ONLY)
# Harmless on its own: only a submission to hstspreload.org, for a registrable domain
# (example.com, not automation.example.com), puts the domain on browsers' preload list.
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", HTTPS_ONLY)
# Believe X-Forwarded-Proto: https from any peer. Only when every request comes through a
# proxy that sets it; otherwise a client could claim HTTPS. Under gunicorn, prefer
# FORWARDED_ALLOW_IPS (gunicorn.conf.py), which believes it only from the proxy's address.
if envbool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Checks an operator has decided to live with, e.g. security.W021 with SECURE_HSTS_PRELOAD=0,
# so `manage.py check --deploy` stays clean.
SILENCED_SYSTEM_CHECKS = envlist("SILENCED_SYSTEM_CHECKS", [])

FIXTURE_DIRS = [BASE_DIR / "fixtures"]

# Extra connector classes, by dotted path (see docs/engine.md).
CONNECTORS = envlist("CONNECTORS", [])

# Execution engine (see docs/engine.md).
# Actions one `runworker` process runs at once (runworker --concurrency overrides it).
WORKER_CONCURRENCY = envint("WORKER_CONCURRENCY", 32, minimum=1)
if WORKER_CONCURRENCY > 1000:
    raise ImproperlyConfigured(
        f"WORKER_CONCURRENCY must be at most 1000; got {WORKER_CONCURRENCY}"
    )
# After SIGTERM a worker claims nothing more and lets the actions in flight finish for this
# long (by default longer than the http connectors' timeouts); then, or at a second
# SIGTERM, it gives the rest back to the queue.
WORKER_GRACE_SECONDS = envint("WORKER_GRACE_SECONDS", 40, minimum=0)
# How long a claim lasts before the reaper may hand the execution to another worker; a
# worker renews all of its leases every third of this.
EXECUTION_LEASE_SECONDS = envint("EXECUTION_LEASE_SECONDS", 60, minimum=3)
# How often each worker's reaper looks for expired leases and writes its heartbeat.
REAPER_INTERVAL_SECONDS = envint("REAPER_INTERVAL_SECONDS", 5, minimum=1)
# Retention (see docs/retention.md): `manage.py prune` keeps an event's identity (source,
# event id, body hash) this many days after it arrived, so a late redelivery is still
# answered `duplicate` and never runs again; its payload may be dropped sooner.
DEDUP_RETENTION_DAYS = envint("DEDUP_RETENTION_DAYS", 90, minimum=0)
# A worker whose heartbeat is older than this is not live.
WORKER_STALE_SECONDS = envint("WORKER_STALE_SECONDS", 30, minimum=2)

# GET /metrics (docs/metrics.md): answered to loopback, to `Authorization: Bearer
# <METRICS_TOKEN>` when set, and to operators and viewers.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
# Each process reuses what it read from the database for this long, so a burst of scrapes
# costs one set of queries.
METRICS_CACHE_SECONDS = envint("METRICS_CACHE_SECONDS", 5, minimum=0)

# Connectors: where they may go and what they may call (see docs/connectors.md).
# Host names (exact, or *.example.com) the http, slack and webhook_forward connectors may call.
OUTBOUND_HOSTS = envlist("OUTBOUND_HOSTS", [])
# Private, loopback and link-local targets are refused unless listed here (names or CIDRs).
OUTBOUND_ALLOW_PRIVATE = envlist("OUTBOUND_ALLOW_PRIVATE", [])
HTTP_CONNECT_TIMEOUT = float(os.environ.get("HTTP_CONNECT_TIMEOUT", "5"))
HTTP_READ_TIMEOUT = float(os.environ.get("HTTP_READ_TIMEOUT", "30"))
# Dotted paths of the functions the python connector may call.
PYTHON_CALLABLES = envlist("PYTHON_CALLABLES", [])
# Circuit breakers: this many failures in a row open one for the cool-down.
CIRCUIT_FAILURE_THRESHOLD = envint("CIRCUIT_FAILURE_THRESHOLD", 5, minimum=1)
CIRCUIT_COOLDOWN_SECONDS = envint("CIRCUIT_COOLDOWN_SECONDS", 30, minimum=1)

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = envint("EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "automation@localhost")
