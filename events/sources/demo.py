"""Demo credentials for `make run`. Only ever created in demo mode."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from events.models import AuthScheme, Source, SourceKey, hash_key
from events.sources import credentials
from guardrails.models import OperatorToken, hash_token
from guardrails.permissions import ensure_groups

DEMO_SOURCE = "demo"
DEMO_API_KEY = "demo-key"
DEMO_OPERATOR_TOKEN = "demo-operator-token"  # noqa: S105
DEMO_ADMIN = "admin"
DEMO_GITHUB_SOURCE = "demo-github"
DEMO_GITHUB_SECRET = "demo-github-secret"  # noqa: S105


class NotInDemoMode(RuntimeError):
    pass


def create_demo_credentials() -> dict:
    """The demo source's key, an operator token and an admin login with a fresh password."""
    if not settings.DEMO_MODE:
        raise NotInDemoMode("Demo credentials are only created with AUTOMATION_DEMO=1.")
    source = Source.objects.get(name=DEMO_SOURCE)
    if not SourceKey.objects.filter(key_hash=hash_key(DEMO_API_KEY)).exists():
        source.issue_key(key=DEMO_API_KEY, label="demo")

    _ensure_demo_github_secret()

    password = secrets.token_urlsafe(12)
    user, _ = get_user_model().objects.get_or_create(username=DEMO_ADMIN)
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    ensure_groups()
    user.groups.add(Group.objects.get(name="operators"))
    if not OperatorToken.objects.filter(token_hash=hash_token(DEMO_OPERATOR_TOKEN)).exists():
        OperatorToken.issue(user, name="demo", token=DEMO_OPERATOR_TOKEN)
    return {
        "api_key": DEMO_API_KEY,
        "operator_token": DEMO_OPERATOR_TOKEN,
        "github_source": DEMO_GITHUB_SOURCE,
        "github_secret": DEMO_GITHUB_SECRET,
        "admin_username": DEMO_ADMIN,
        "admin_password": password,
    }


def _ensure_demo_github_secret() -> None:
    """A GitHub-signed demo source. Its secret is encrypted with SECRET_KEY, so a new key
    (a new demo folder) gets the secret issued again."""
    source, _ = Source.objects.get_or_create(
        name=DEMO_GITHUB_SOURCE,
        defaults={
            "auth_scheme": AuthScheme.GITHUB,
            "description": "The demo GitHub sender used by the README's signed example.",
        },
    )
    active = source.keys.active()
    if any(credentials.unseal(k.secret_ciphertext) == DEMO_GITHUB_SECRET for k in active):
        return
    active.update(revoked_at=timezone.now())
    credentials.add_credential(source, secret=DEMO_GITHUB_SECRET, label="demo")
