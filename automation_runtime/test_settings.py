"""Test settings: the real settings, with the environment defaults a test run needs.

Everything still comes from automation_runtime.settings; this module only supplies a
SECRET_KEY so the suite runs with DEBUG off, as production does.
"""

import os

# A checkout's .env (the demo's) must not leak into the tests, nor into the processes
# they start (they inherit this environment).
os.environ.setdefault("ENV_FILE", "")
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")
os.environ.setdefault(
    "CONNECTORS",
    "tests.support.connectors.ScriptedConnector,tests.support.connectors.SinkConnector",
)

from automation_runtime.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
