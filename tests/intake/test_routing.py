"""Routing by source and content: which routes an event runs, decided once at ingest, and
the route tester that says why (docs/routing.md)."""

import json
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from connectors.models import InvalidRoute, Route
from events.models import Attempt, Event, EventStatus, Execution, Source
from guardrails import killswitch
from guardrails.models import OperatorAction
from tests.support.helpers import post
from tests.support.senders import create, delivery, send, signed

pytestmark = pytest.mark.django_db

BIG = {"data": {"amount": {"$gte": 10000}}}


def api_source(name):
    src = Source.objects.create(name=name)
    _, src.api_key = src.issue_key()
    return src


def add_route(name, event_type="charge.succeeded", **fields):
    return Route.objects.create(
        name=name, event_type=event_type, connector="log", action="record", **fields
    )


def deliver(client, src, event_id, event_type="charge.succeeded", data=None, **headers):
    # On POST /webhook the whole body is the payload: a filter sees it under `data`.
    body = {"event_id": event_id, "type": event_type, **(data or {})}
    response = post(client, body, key=src.api_key, **headers)
    assert response.status_code == 202, response.content
    return Event.objects.get(source=src, event_id=event_id)


def routes_run(event) -> set[str]:
    return set(event.executions.values_list("route__name", flat=True))


def run(*args, stdin=None):
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# -- scope by source ----------------------------------------------------------------------


def test_a_route_scoped_to_one_source_never_runs_for_another(client):
    shop, crm = api_source("shop"), api_source("crm")
    scoped = add_route("shop-only", sources=["shop"])
    everyone = add_route("every-source")

    from_crm = deliver(client, crm, "c1")
    from_shop = deliver(client, shop, "s1")

    assert routes_run(from_crm) == {"every-source"}
    assert routes_run(from_shop) == {"shop-only", "every-source"}
    assert sorted(from_shop.matched_routes) == sorted([scoped.pk, everyone.pk])
    assert from_crm.matched_routes == [everyone.pk]


def test_a_signed_source_scope_keeps_api_key_events_of_the_same_type_out(client):
    github, secret = create("github")
    add_route("pushes", event_type="push", sources=[github.name])
    shop = api_source("shop")

    body, headers = delivery("github", event_id="d1", event_type="push")
    assert (
        send(client, github.name, body, signed("github", secret, body, headers)).status_code == 202
    )
    other = deliver(client, shop, "p1", event_type="push")

    assert routes_run(Event.objects.get(event_id="d1")) == {"pushes"}
    assert other.status == EventStatus.UNROUTED
    assert other.matched_routes == []


def test_the_demo_routes_listen_to_the_demo_source_only(client, demo):
    github_demo = Source.objects.get(name="demo-github")
    assert all(route.sources == ["demo"] for route in Route.objects.all())

    stranger = api_source("stranger")
    event = deliver(client, stranger, "x1", event_type="order.created")
    assert event.status == EventStatus.UNROUTED
    assert not Execution.objects.filter(event__source=github_demo).exists()


# -- content filters at ingest ------------------------------------------------------------


def test_ingest_creates_executions_only_for_the_routes_whose_filter_matches(client):
    stripe = api_source("stripe")
    add_route("big-charges", filter=BIG)
    add_route("small-charges", filter={"data": {"amount": {"$lt": 10000}}})
    add_route("all-charges")

    big = deliver(client, stripe, "ch_1", data={"amount": 15000})
    small = deliver(client, stripe, "ch_2", data={"amount": 500})
    as_text = deliver(client, stripe, "ch_3", data={"amount": "15000"})  # not a number

    assert routes_run(big) == {"big-charges", "all-charges"}
    assert routes_run(small) == {"small-charges", "all-charges"}
    assert routes_run(as_text) == {"all-charges"}
    assert Execution.objects.count() == 5
    names = dict(Route.objects.values_list("pk", "name"))
    assert {names[pk] for pk in big.matched_routes} == {"big-charges", "all-charges"}


def test_an_event_no_filter_takes_is_unrouted_and_answered_as_accepted(client):
    stripe = api_source("stripe")
    add_route("big-charges", filter=BIG)

    response = post(
        client,
        {"event_id": "ch_1", "type": "charge.succeeded", "data": {"amount": 5}},
        key=stripe.api_key,
    )

    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    event = Event.objects.get(event_id="ch_1")
    assert event.status == EventStatus.UNROUTED
    assert event.matched_routes == []
    assert not Execution.objects.exists()


def test_header_filters_ignore_the_case_of_header_names_not_of_values(client):
    shop = api_source("shop")
    add_route("ours", filter={"headers": {"X-Shop-Domain": "ours.example.com"}})

    ours = deliver(client, shop, "o1", HTTP_X_SHOP_DOMAIN="ours.example.com")
    shouting = deliver(client, shop, "o2", HTTP_X_SHOP_DOMAIN="OURS.EXAMPLE.COM")
    theirs = deliver(client, shop, "o3", HTTP_X_SHOP_DOMAIN="theirs.example.com")

    assert routes_run(ours) == {"ours"}
    assert routes_run(shouting) == set()
    assert routes_run(theirs) == set()


def test_a_held_event_holds_only_the_routes_that_match(client, operator):
    stripe = api_source("stripe")
    add_route("big-charges", filter=BIG)
    add_route("small-charges", filter={"data": {"amount": {"$lt": 10000}}})
    killswitch.set_kill_switch(engaged=True, actor=operator, reason="drill", via="cli")

    event = deliver(client, stripe, "ch_1", data={"amount": 20000})

    assert event.status == EventStatus.HELD
    assert list(event.executions.values_list("route__name", "status")) == [("big-charges", "held")]


def test_a_route_whose_stored_filter_was_broken_behind_the_models_back_takes_nothing(
    client, caplog
):
    stripe = api_source("stripe")
    add_route("big-charges", filter=BIG)
    add_route("all-charges")
    Route.objects.filter(name="big-charges").update(filter={"data": {"$gtt": 1}})  # raw UPDATE

    event = deliver(client, stripe, "ch_1", data={"amount": 20000})

    assert routes_run(event) == {"all-charges"}
    assert "big-charges is skipped" in caplog.text


def test_replay_unrouted_routes_again_by_the_filters_of_now(client):
    stripe = api_source("stripe")
    event = deliver(client, stripe, "ch_1", data={"amount": 20000})
    assert event.status == EventStatus.UNROUTED

    add_route("small-charges", filter={"data": {"amount": {"$lt": 10000}}})
    run("replay", "--unrouted", "--reason", "new route")
    event.refresh_from_db()
    assert event.status == EventStatus.UNROUTED
    assert not event.executions.exists()

    big = add_route("big-charges", filter=BIG)
    run("replay", "--unrouted", "--reason", "new route")
    event.refresh_from_db()
    assert event.status == EventStatus.ACCEPTED
    assert routes_run(event) == {"big-charges"}
    assert event.matched_routes == [big.pk]


# -- checked at save ----------------------------------------------------------------------

BAD = {"data": {"amount": {"$gtt": 10000}}}


def test_a_bad_filter_is_refused_by_the_form_check_naming_the_part():
    route = Route(name="bad", event_type="x", connector="log", action="record", filter=BAD)

    with pytest.raises(ValidationError) as refused:
        route.full_clean()

    (message,) = refused.value.message_dict["filter"]
    assert message.startswith("data.amount.$gtt: unknown operator (did you mean $gt?)")


def test_a_bad_filter_or_sources_cannot_be_saved_from_code_either():
    with pytest.raises(InvalidRoute, match=r"'bad': filter: data\.amount\.\$gtt"):
        add_route("bad", filter=BAD)
    with pytest.raises(InvalidRoute, match="sources: a list of source names"):
        add_route("bad", sources="shop")
    assert not Route.objects.exists()


def test_a_fixture_with_a_bad_filter_is_refused_whole_with_a_clear_error(tmp_path):
    fixture = tmp_path / "routes.json"
    at = "2026-01-01T00:00:00Z"
    good = {
        "name": "good",
        "event_type": "x",
        "connector": "log",
        "action": "record",
        "created_at": at,
        "updated_at": at,
    }
    fixture.write_text(
        json.dumps(
            [
                {"model": "connectors.route", "pk": 1, "fields": good},
                {
                    "model": "connectors.route",
                    "pk": 2,
                    "fields": {**good, "name": "bad", "filter": BAD},
                },
            ]
        )
    )

    with pytest.raises(CommandError, match=r"Route 'bad': filter: data\.amount\.\$gtt"):
        call_command("loaddata", str(fixture), verbosity=0)
    assert not Route.objects.exists()  # one transaction: the good one is not loaded either


def test_unknown_source_names_are_refused_listing_the_sources():
    api_source("shop")
    route = Route(name="r", event_type="x", connector="log", action="record", sources=["shoop"])

    with pytest.raises(ValidationError) as refused:
        route.full_clean()

    assert refused.value.message_dict["sources"] == [
        "No source is named shoop; the sources are: internal, shop."
    ]


ROUTE_FORM = {
    "name": "big-charges",
    "event_type": "charge.succeeded",
    "connector": "log",
    "action": "record",
    "params": "{}",
    "enabled": "on",
    "max_attempts": 8,
    "max_in_flight": 16,
    "backoff_base_seconds": 2,
    "backoff_cap_seconds": 600,
    "on_failure": "block",
}


def test_the_admin_refuses_a_bad_filter_and_saves_a_good_one_with_its_sources(admin_client):
    api_source("stripe")
    api_source("shop")

    page = admin_client.post(
        "/admin/connectors/route/add/", {**ROUTE_FORM, "filter": json.dumps(BAD)}
    )
    assert page.status_code == 200
    assert "data.amount.$gtt: unknown operator" in page.content.decode()
    assert not Route.objects.exists()

    page = admin_client.post(
        "/admin/connectors/route/add/",
        {**ROUTE_FORM, "filter": json.dumps(BIG), "sources": ["stripe"]},
    )
    assert page.status_code == 302, page.content.decode()[:2000]
    route = Route.objects.get()
    assert (route.sources, route.filter) == (["stripe"], BIG)

    listing = admin_client.get("/admin/connectors/route/").content.decode()
    assert "stripe" in listing and "$gte" in listing
    assert "/admin/events/event/route-test/" in listing  # the tester is one click away


def test_an_emptied_filter_in_the_admin_means_every_event(admin_client):
    page = admin_client.post("/admin/connectors/route/add/", {**ROUTE_FORM, "filter": ""})
    assert page.status_code == 302
    assert Route.objects.get().filter == {}


# -- where each event went ----------------------------------------------------------------


def test_the_events_page_lists_every_route_with_its_reason_and_executions(client, admin_client):
    stripe = api_source("stripe")
    add_route("big-charges", filter=BIG)
    add_route("refunds", event_type="charge.refunded")
    api_source("shop")
    add_route("shop-only", sources=["shop"])
    event = deliver(client, stripe, "ch_1", data={"amount": 20000})
    execution = event.executions.get()

    page = admin_client.get(f"/admin/events/event/{event.pk}/change/").content.decode()

    assert "It matched 1 route(s) when it arrived." in page
    assert f"/admin/events/execution/{execution.pk}/change/" in page
    assert "&#x27;charge.succeeded&#x27; does not match the route&#x27;s" in page
    assert "&#x27;stripe&#x27; is not among its sources: shop" in page
    assert f"/admin/events/event/route-test/?event={event.pk}" in page


def test_the_events_page_says_when_a_route_changed_since_the_event_arrived(client, admin_client):
    stripe = api_source("stripe")
    route = add_route("big-charges", filter=BIG)
    event = deliver(client, stripe, "ch_1", data={"amount": 20000})
    route.filter = {"data": {"amount": {"$gte": 50000}}}
    route.save()

    page = admin_client.get(f"/admin/events/event/{event.pk}/change/").content.decode()

    assert "data.amount is 20000, not $gte 50000" in page
    assert "matched when the event arrived: the route changed since" in page


# -- the route tester ---------------------------------------------------------------------


def tables_rows():
    return (
        Event.objects.count(),
        Execution.objects.count(),
        Attempt.objects.count(),
        OperatorAction.objects.count(),
    )


def test_the_tester_explains_a_stored_event_and_changes_nothing(client, admin_client, sink):
    stripe = api_source("stripe")
    add_route("big-charges", filter=BIG, params={"message": "big {{ event.amount }}"})
    Route.objects.create(
        name="to-sink",
        event_type="charge.succeeded",
        connector="http",
        action="post",
        params={"url": sink.url},
        filter={"data": {"currency": "EUR"}},
    )
    event = deliver(client, stripe, "ch_1", data={"amount": 20000, "currency": "EUR"})
    before = tables_rows()

    page = admin_client.get(f"/admin/events/event/route-test/?event={event.pk}")

    text = page.content.decode()
    assert page.status_code == 200
    assert "2 of 2 route(s) match" in text
    assert "big 20000" in text  # the params after templating
    assert tables_rows() == before
    assert sink.requests == []  # no connector ran


def test_the_tester_explains_a_pasted_body_and_headers(admin_client):
    api_source("shop")
    add_route(
        "our-orders",
        event_type="orders/create",
        sources=["shop"],
        filter={"headers": {"x-shop-domain": {"$endsWith": ".ours.example"}}},
    )

    page = admin_client.post(
        "/admin/events/event/route-test/",
        {
            "source": "shop",
            "type": "orders/create",
            "body": '{"id": 1}',
            "headers": "X-Shop-Domain: shop.theirs.example",
        },
    )

    text = page.content.decode()
    assert "0 of 1 route(s) match" in text
    assert "headers.x-shop-domain is &quot;shop.theirs.example&quot;, not $endsWith" in text


def test_the_tester_says_what_is_wrong_with_its_own_input(admin_client):
    page = admin_client.post(
        "/admin/events/event/route-test/",
        {"source": "shop", "type": "t", "body": "{not json", "headers": "no colon"},
    )
    text = page.content.decode()
    assert page.status_code == 200
    assert "This is not JSON" in text
    assert "write a header as" in text

    page = admin_client.get("/admin/events/event/route-test/?event=nope")
    assert "No event has the id" in page.content.decode()


def test_viewers_may_use_the_tester_and_staff_without_rights_may_not(
    client, viewer, staff_without_rights
):
    client.force_login(viewer)
    assert client.get("/admin/events/event/route-test/").status_code == 200
    client.force_login(staff_without_rights)
    assert client.get("/admin/events/event/route-test/").status_code == 403


def test_route_test_command_explains_a_stored_event_or_a_pasted_one(client):
    stripe = api_source("stripe")
    add_route("big-charges", filter=BIG, params={"message": "big {{ event.amount }}"})
    add_route("other-type", event_type="charge.refunded")
    deliver(client, stripe, "ch_1", data={"amount": 500})

    text = run("route", "test", "--event", "stripe/ch_1")
    assert "no match  big-charges" in text
    assert "filter: data.amount is 500, not $gte 10000" in text
    assert "type: 'charge.succeeded' does not match the route's 'charge.refunded'" in text

    out = json.loads(
        run(
            "route",
            "test",
            "--source",
            "stripe",
            "--type",
            "charge.succeeded",
            "--body",
            '{"amount": 12000}',
            "--json",
        )
    )
    assert out[0] == {
        "route": "big-charges",
        "matched": True,
        "step": "",
        "reasons": [],
        "params": {"message": "big 12000"},
        "params_error": "",
    }
    assert out[1]["matched"] is False and out[1]["step"] == "type"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--event", "nope"], "No event has the id 'nope'"),
        (["--body", "{}"], "--body needs --source and --type"),
        (["--body", "{", "--source", "s", "--type", "t"], "--body is not JSON"),
        (["--body", "{}", "--source", "s", "--type", "t", "--header", "x"], "'Name: value'"),
        (["--event", "e", "--source", "s"], "go with --body, not --event"),
    ],
)
def test_route_test_command_refuses_bad_arguments_clearly(args, message):
    with pytest.raises(CommandError, match=message):
        run("route", "test", *args)


def test_renaming_a_source_takes_the_routes_that_listen_to_it_along(client, admin_client):
    shop = api_source("shop")
    add_route("shop-only", sources=["shop", "crm"])
    page = admin_client.get(f"/admin/events/source/{shop.pk}/change/")
    assert page.status_code == 200

    shop.name = "shop-eu"
    shop.save()

    assert Route.objects.get(name="shop-only").sources == ["shop-eu", "crm"]
    assert routes_run(deliver(client, shop, "s1")) == {"shop-only"}


def test_the_tester_and_the_events_page_survive_a_route_broken_behind_their_back(
    client, admin_client
):
    stripe = api_source("stripe")
    add_route("big-charges", filter=BIG)
    event = deliver(client, stripe, "ch_1", data={"amount": 20000})
    Route.objects.filter(name="big-charges").update(filter={"data": {"$gtt": 1}})

    page = admin_client.get(f"/admin/events/event/{event.pk}/change/")
    text = run("route", "test", "--event", "stripe/ch_1")

    assert page.status_code == 200
    assert "its stored filter cannot be read: data.$gtt: unknown operator" in page.content.decode()
    assert "its stored filter cannot be read" in text


def test_a_route_saved_with_null_sources_and_filter_listens_to_everything(client):
    route = add_route("all", sources=None, filter=None)
    assert (route.sources, route.filter) == ([], {})
    assert routes_run(deliver(client, api_source("shop"), "e1")) == {"all"}


def test_the_admin_saves_an_ordering_key_and_refuses_one_it_cannot_render(admin_client):
    bad = {**ROUTE_FORM, "ordering_key": "{{ execution.attempt }}"}
    page = admin_client.post("/admin/connectors/route/add/", bad)
    assert page.status_code == 200
    assert "must be a dotted path under `event`" in page.content.decode()
    assert not Route.objects.exists()

    good = {**ROUTE_FORM, "ordering_key": "{{ event.data.order.id }}", "on_failure": "skip"}
    page = admin_client.post("/admin/connectors/route/add/", good)
    assert page.status_code == 302, page.content.decode()[:2000]
    route = Route.objects.get()
    assert (route.ordering_key, route.on_failure) == ("{{ event.data.order.id }}", "skip")
