"""The operator console's safety rails: nobody deletes history from the admin, and the
command line names who acted."""

import getpass
import re
from io import StringIO

import pytest
from django.core.management import call_command

from connectors.models import Route
from events.engine import runner as engine
from events.models import Event, Execution, ExecutionStatus
from guardrails.killswitch import set_kill_switch
from guardrails.models import OperatorAction
from tests.support.helpers import ORDER, post

pytestmark = pytest.mark.django_db

HISTORY = ["event", "execution", "attempt"]


@pytest.fixture
def history(make_execution):
    """One event, one execution and one attempt."""
    execution = make_execution(["ok"])
    engine.run(execution.pk)
    execution.refresh_from_db()
    return {
        "event": execution.event,
        "execution": execution,
        "attempt": execution.attempt_set.get(),
    }


@pytest.mark.parametrize("model", HISTORY)
def test_nobody_may_delete_history_from_the_admin_not_even_a_superuser(
    admin_client, history, model
):
    row = history[model]
    base = f"/admin/events/{model}/"

    change = admin_client.get(f"{base}{row.pk}/change/").content.decode()
    listing = admin_client.get(base).content.decode()

    assert 'class="deletelink"' not in change
    assert "delete_selected" not in listing
    assert admin_client.get(f"{base}{row.pk}/delete/").status_code == 403
    assert admin_client.post(f"{base}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert type(row).objects.filter(pk=row.pk).exists()


def test_the_command_line_names_the_os_user_in_the_audit_log():
    call_command("killswitch", "on", "--reason", "drill", stdout=StringIO())
    call_command("killswitch", "off", "--reason", "done", "--actor", "alice", stdout=StringIO())

    actors = list(OperatorAction.objects.order_by("pk").values_list("actor", flat=True))
    assert actors == [f"cli:{getpass.getuser()}", "alice"]


def acts_offered(client, execution) -> set[str]:
    page = client.get(f"/admin/events/execution/{execution.pk}/change/").content.decode()
    return set(re.findall(r'id="act-(\w+)"', page))


def test_an_executions_page_offers_the_acts_its_status_allows(admin_client, make_execution):
    failed = make_execution(["permanent"])
    engine.run(failed.pk)
    held = make_execution()
    Execution.objects.filter(pk=held.pk).update(status=ExecutionStatus.HELD)

    assert acts_offered(admin_client, failed) == {"replay"}
    assert acts_offered(admin_client, held) == {"replay", "cancel", "release"}


def test_viewers_are_offered_no_acts_and_cannot_post_one(client, viewer, make_execution):
    failed = make_execution(["permanent"])
    engine.run(failed.pk)
    client.force_login(viewer)

    assert acts_offered(client, failed) == set()
    answer = {"confirm": "yes", "reason": "x"}
    assert client.post(f"/admin/events/execution/{failed.pk}/replay/", answer).status_code == 403
    failed.refresh_from_db()
    assert failed.status == ExecutionStatus.FAILED


def test_replay_from_an_executions_page_asks_a_reason_and_audits_it(admin_client, make_execution):
    failed = make_execution(["permanent"])
    engine.run(failed.pk)
    url = f"/admin/events/execution/{failed.pk}/replay/"

    ask = admin_client.get(url).content.decode()
    assert "Selected: 1 execution(s): 1 failed." in ask
    assert "Replay would run again with the same idempotency key 1 of them" in ask

    refused = admin_client.post(url, {"confirm": "yes", "reason": "  "})
    assert refused.status_code == 200 and "This field is required." in refused.content.decode()
    failed.refresh_from_db()
    assert failed.status == ExecutionStatus.FAILED

    done = admin_client.post(url, {"confirm": "yes", "reason": "the API is back"}, follow=True)
    failed.refresh_from_db()
    assert failed.status == ExecutionStatus.QUEUED
    assert done.redirect_chain[-1][0] == f"/admin/events/execution/{failed.pk}/change/"
    assert "Replay: 1 execution(s) queued again. Reason: the API is back" in done.content.decode()
    entry = OperatorAction.objects.get(action="executions.replay")
    assert (entry.actor, entry.via, entry.reason) == ("admin", "admin", "the API is back")


def test_replaying_a_succeeded_execution_from_its_page_asks_again(admin_client, make_execution):
    done = make_execution()
    engine.run(done.pk)
    url = f"/admin/events/execution/{done.pk}/replay/"

    ask = admin_client.get(url).content.decode()
    assert "1 already succeeded: replaying runs their action again." in ask
    admin_client.post(url, {"confirm": "yes", "reason": "resend"})
    done.refresh_from_db()
    assert done.status == ExecutionStatus.SUCCEEDED

    admin_client.post(url, {"confirm": "yes", "reason": "resend", "again": "on"})
    done.refresh_from_db()
    assert done.status == ExecutionStatus.QUEUED


def test_an_events_page_replays_its_failed_executions_with_a_reason(admin_client, make_execution):
    failed = make_execution(["permanent"])
    engine.run(failed.pk)
    event = failed.event
    page = admin_client.get(f"/admin/events/event/{event.pk}/change/").content.decode()
    assert set(re.findall(r'id="act-([\w-]+)"', page)) == {"replay-failed", "route-again"}

    url = f"/admin/events/event/{event.pk}/replay-failed/"
    assert "Selected: 1 execution(s): 1 failed." in admin_client.get(url).content.decode()
    admin_client.post(url, {"confirm": "yes", "reason": "sink fixed"})

    failed.refresh_from_db()
    assert failed.status == ExecutionStatus.QUEUED
    assert OperatorAction.objects.get().reason == "sink fixed"


def test_route_again_from_the_list_or_the_page_asks_a_reason(admin_client, client, source):
    assert post(client, ORDER, key=source.api_key).status_code == 202
    event = Event.objects.get()
    assert event.status == "unrouted"
    Route.objects.create(name="late", event_type="order.created", connector="log", action="record")

    ask = admin_client.post(
        "/admin/events/event/", {"action": "route_again", "_selected_action": [event.pk]}
    )
    assert b"Checks the selected events against the routes of now" in ask.content
    assert not event.executions.exists()
    admin_client.post(
        f"/admin/events/event/{event.pk}/route-again/", {"confirm": "yes", "reason": "new route"}
    )

    assert list(event.executions.values_list("route__name", flat=True)) == ["late"]
    entry = OperatorAction.objects.get(action="events.route")
    assert entry.reason == "new route"


def test_releasing_the_kill_switch_says_so_and_offers_to_release_what_it_held(
    admin_client, make_execution
):
    set_kill_switch(engaged=True, actor="ops", reason="bad deploy", via="cli")
    held = [make_execution() for _ in range(2)]
    assert set(Execution.objects.values_list("status", flat=True)) == {"held"}
    index = admin_client.get("/admin/").content.decode()
    assert 'id="held-waiting"' not in index  # still killed: nothing to offer yet

    form = {"engaged": "", "new_reason": "rolled back", "confirm": "on"}
    done = admin_client.post("/admin/guardrails/runtimestate/1/change/", form, follow=True)
    page = done.content.decode()
    assert done.redirect_chain[-1][0] == "/admin/"
    assert "Kill switch released: rolled back" in page
    assert "was changed successfully" not in page
    assert "2 executions still held from the kill switch" in page

    url = "/admin/events/execution/release-held/"
    assert "Selected: 2 execution(s): 2 held." in admin_client.get(url).content.decode()
    admin_client.post(url, {"confirm": "yes", "reason": "resume after rollback"})

    assert {e.status for e in Execution.objects.filter(pk__in=[h.pk for h in held])} == {"queued"}
    entry = OperatorAction.objects.get(action="executions.release")
    assert entry.reason == "resume after rollback"
    assert 'id="held-waiting"' not in admin_client.get("/admin/").content.decode()


def test_the_lists_find_events_and_executions_by_a_payload_field(admin_client, client, source):
    Route.objects.create(name="all", event_type="order.*", connector="log", action="record")
    for n, order in ((1, "ord_1001"), (2, "ord_2002")):
        body = {"event_id": f"e{n}", "type": "order.created", "order": {"id": order}}
        assert post(client, body, key=source.api_key).status_code == 202
    wanted = Event.objects.get(event_id="e1")

    events = admin_client.get("/admin/events/event/", {"q": "order.id=ord_1001"}).content
    executions = admin_client.get("/admin/events/execution/", {"q": "order.id=ord_1001"}).content

    other_event = Event.objects.get(event_id="e2")
    assert f"/admin/events/event/{wanted.pk}/change/".encode() in events
    assert f"/admin/events/event/{other_event.pk}/change/".encode() not in events
    execution = wanted.executions.get()
    assert f"/admin/events/execution/{execution.pk}/change/".encode() in executions
    other = other_event.executions.get()
    assert f"/admin/events/execution/{other.pk}/change/".encode() not in executions


def test_the_lists_say_at_a_glance_what_went_wrong(admin_client, make_execution):
    failed = make_execution(["permanent"], max_attempts=3)
    engine.run(failed.pk)
    failed.refresh_from_db()
    waiting = make_execution(["retryable", "ok"], base=60.0, cap=60.0)
    engine.run(waiting.pk)
    waiting.refresh_from_db()
    assert waiting.status == ExecutionStatus.RETRYING

    executions = admin_client.get("/admin/events/execution/").content.decode()
    assert "1 / 3" in executions  # attempts of max
    assert failed.last_error.splitlines()[0][:40] in executions
    assert re.search(r"in \d+ s", executions)  # the retry's next attempt, relative

    events = admin_client.get("/admin/events/event/", {"delivery": "failed"}).content.decode()
    assert f"/admin/events/event/{failed.event.pk}/change/" in events
    assert f"/admin/events/event/{waiting.event.pk}/change/" not in events
    everything = admin_client.get("/admin/events/event/").content.decode()
    assert re.search(r"bg-red-100[^>]*>\s*failed\s*</span>", everything)  # in red
    assert re.search(r"bg-orange-100[^>]*>\s*waiting\s*</span>", everything)  # in amber


def test_an_executions_timeline_shows_attempts_waits_and_operator_acts(
    admin_client, make_execution
):
    execution = make_execution(["permanent", "ok"])
    engine.run(execution.pk)
    url = f"/admin/events/execution/{execution.pk}/replay/"
    admin_client.post(url, {"confirm": "yes", "reason": "the sink is back"})
    engine.run(execution.pk)

    page = admin_client.get(f"/admin/events/execution/{execution.pk}/change/").content.decode()
    timeline = page[page.index('id="execution-timeline"') :]
    kinds = re.findall(r'data-kind="(\w+)"', timeline)
    assert kinds == ["created", "attempt", "act", "attempt"]
    assert "replayed" in timeline and "by admin (admin)" in timeline
    assert "the sink is back" in timeline
    assert timeline.count("after waiting") == 2
    assert re.search(r"\+\d+\.\d s", timeline)  # each entry's time since creation


def test_the_attempts_list_colours_each_outcome(admin_client, make_execution):
    failed = make_execution(["permanent"])
    engine.run(failed.pk)

    page = admin_client.get("/admin/events/attempt/").content.decode()

    assert re.search(r"bg-red-100[^>]*>\s*permanent_error\s*</span>", page)


def test_the_timeline_says_who_held_an_execution_and_why_before_its_release(
    admin_client, make_execution
):
    execution = make_execution(["ok"])
    set_kill_switch(engaged=True, actor="alice", reason="erp migration", via="cli")
    engine.run(execution.pk)  # the worker holds it: the switch is engaged
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.HELD
    page_url = f"/admin/events/execution/{execution.pk}/change/"

    held = admin_client.get(page_url).content.decode()
    held = held[held.index('id="execution-timeline"') :]
    assert re.findall(r'data-kind="(\w+)"', held) == ["created", "act"]
    assert "held: the kill switch engaged" in held
    assert "by alice (cli)" in held and "erp migration" in held

    set_kill_switch(engaged=False, actor="alice", reason="migration done", via="cli")
    admin_client.post(
        f"/admin/events/execution/{execution.pk}/release/",
        {"confirm": "yes", "reason": "resume orders"},
    )
    engine.run(execution.pk)

    page = admin_client.get(page_url).content.decode()
    timeline = page[page.index('id="execution-timeline"') :]
    kinds = re.findall(r'data-kind="(\w+)"', timeline)
    titles = re.findall(r"<b>([^<]+)</b>", timeline)
    assert kinds == ["created", "act", "act", "attempt"]
    assert titles[:4] == ["created", "held: the kill switch engaged", "released", "attempt 1"]
    assert "erp migration" in timeline and "resume orders" in timeline


def test_the_timeline_names_the_scoped_switch_that_holds_an_execution(
    admin_client, make_execution
):
    from guardrails.killswitch import set_scoped_kill_switch

    execution = make_execution(["ok"])
    other = make_execution(["ok"])
    for route, reason in ((other.route, "not this one"), (execution.route, "vendor outage")):
        set_scoped_kill_switch(
            scope="route", name=route.name, engaged=True, actor="bob", reason=reason, via="cli"
        )
    engine.run(execution.pk)

    page = admin_client.get(f"/admin/events/execution/{execution.pk}/change/").content.decode()
    timeline = page[page.index('id="execution-timeline"') :]

    assert f"held: the kill switch of route {execution.route.name} engaged" in timeline
    assert "vendor outage" in timeline and "not this one" not in timeline
