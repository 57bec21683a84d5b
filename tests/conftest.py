"""Named actors for the specification-style tests, and a guard for outbound calls."""

import ipaddress

import pytest
import urllib3
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command

from connectors.models import Route
from events.models import Execution, Source
from guardrails.models import OperatorToken
from tests.support.helpers import post
from tests.support.live import ENGINE_ENV, LiveRuntime
from tests.support.sink import Sink


@pytest.fixture
def source(db):
    """An enabled API-key source with one key (`source.api_key`)."""
    src = Source.objects.create(name="shop")
    _, src.api_key = src.issue_key()
    return src


@pytest.fixture
def route(db):
    """Sends order.* events to the log connector."""
    return Route.objects.create(
        name="orders-to-log", event_type="order.*", connector="log", action="record"
    )


def _staff(username, group=None):
    user = get_user_model().objects.create_user(username, password="pw-" + username, is_staff=True)
    if group:
        user.groups.add(Group.objects.get(name=group))
    _, user.token = OperatorToken.issue(user, name="tests")
    return user


@pytest.fixture
def operator(db):
    """Staff in the operators group: may flip the kill switch. Has `.token`."""
    return _staff("olivia", "operators")


@pytest.fixture
def viewer(db):
    """Staff in the viewers group: may read the status, not change anything."""
    return _staff("victor", "viewers")


@pytest.fixture
def staff_without_rights(db):
    """Staff with no permissions at all."""
    return _staff("nobody")


@pytest.fixture
def demo(db, settings):
    """The demo fixtures and credentials, as `make run` creates them."""
    settings.DEMO_MODE = True
    call_command("loaddata", "demo", verbosity=0)
    call_command("demo_credentials", verbosity=0)


@pytest.fixture
def live(tmp_path):
    """Real gunicorn (2 sync workers) + worker on a fresh database with the demo data."""
    from tests.support.live import LiveRuntime

    runtime = LiveRuntime(tmp_path).prepare().start()
    yield runtime
    runtime.close()


@pytest.fixture
def only_loopback(monkeypatch):
    """A safety net, not a mock: no test here may open a connection beyond 127.0.0.1."""
    original = urllib3.HTTPConnectionPool.__init__

    def guarded(self, host, *args, **kwargs):
        assert ipaddress.ip_address(host.strip("[]")).is_loopback, f"test tried to reach {host}"
        original(self, host, *args, **kwargs)

    monkeypatch.setattr(urllib3.HTTPConnectionPool, "__init__", guarded)


@pytest.fixture
def make_execution(client, source, django_capture_on_commit_callbacks):
    """Ingest one event routed to a scripted connector; returns its execution."""
    counter = iter(range(1, 10_000))

    def make(script=(), *, max_attempts=8, base=2.0, cap=600.0, **params):
        n = next(counter)
        route = Route.objects.create(
            name=f"scripted-{n}",
            event_type=f"job.{n}",
            connector="scripted",
            action="run",
            params={"script": list(script), **params},
            max_attempts=max_attempts,
            backoff_base_seconds=base,
            backoff_cap_seconds=cap,
        )
        with django_capture_on_commit_callbacks(execute=True):
            response = post(client, {"event_id": f"e{n}", "type": f"job.{n}"}, key=source.api_key)
        assert response.status_code == 202
        return Execution.objects.get(route=route)

    return make


@pytest.fixture
def sink(settings):
    """A real HTTP server on 127.0.0.1 that outbound calls are allowed to reach."""
    s = Sink()
    settings.OUTBOUND_HOSTS = ["127.0.0.1", "localhost"]
    settings.OUTBOUND_ALLOW_PRIVATE = ["127.0.0.1/32"]
    yield s
    s.close()


@pytest.fixture
def runtime(tmp_path):
    """A live runtime: gunicorn only, with the engine's short test timings; the tests start
    their own workers. (Some modules define a runtime of their own.)"""
    rt = LiveRuntime(tmp_path, with_worker=False)
    rt.env.update(ENGINE_ENV)
    rt.prepare().start()
    yield rt
    rt.close()
