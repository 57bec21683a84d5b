import os

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "automation_runtime.settings")

application = get_wsgi_application()

if settings.SECRET_KEY_MISSING:
    # Sessions, CSRF tokens and password resets are signed with it: never serve without one.
    raise ImproperlyConfigured(
        "SECRET_KEY is not set. Set it to a long random string "
        "(python3 -c 'import secrets; print(secrets.token_urlsafe(50))'), "
        "or set DEBUG=1 for local development."
    )
