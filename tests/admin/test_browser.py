"""The operator's admin in a real headless Chromium against a real runtime: log in, read
the dashboard, engage the kill switch, release a held execution, replay a failed one;
route by content, test the routes, and see where an event went; read the lists at 1400 px,
find an event by the start of its id, and read why a list shows nothing.

Screenshots of every step are kept under test-artifacts/browser/<test>/.
"""

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.support.live import ROOT, LiveRuntime

pytestmark = [pytest.mark.live, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
FAILING_ROUTE = (
    "from connectors.models import Route; "
    "Route.objects.create(name='alerts-to-blocked-host', event_type='alert.*', "
    "connector='http', action='post', params={'url': 'http://not-on-the-allowlist.invalid/x'}, "
    "max_attempts=1)"
)


def _browser_missing() -> str:
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        return f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs selenium (pip install -r requirements.txt)"
    return ""


@pytest.fixture
def browser():
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run in CI: {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1000")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(15)  # a loaded 2-core machine can take seconds per page
    yield driver
    driver.quit()


@pytest.fixture
def runtime(tmp_path):
    """The live runtime with one more route, to a host not on the outbound allowlist:
    its executions fail permanently without touching the network."""
    rt = LiveRuntime(tmp_path).prepare()
    rt.manage("shell", "-c", FAILING_ROUTE)
    yield rt.start()
    rt.close()


@pytest.fixture
def shot(browser, request):
    folder = ARTIFACTS / request.node.name.removeprefix("test_")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)

    def take(name: str) -> Path:
        path = folder / f"{name}.png"
        browser.save_screenshot(str(path))
        return path

    return take


def admin_password(rt: LiveRuntime) -> str:
    out = rt.manage("demo_credentials").stdout
    found = re.search(r"admin login:\s+admin / (\S+)", out)
    assert found, out
    return found.group(1)


def log_in(browser, rt: LiveRuntime):
    """Log in as the demo admin and wait for the page after it, so the next navigation
    cannot overtake the login and land on the login page again."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(rt.url + "/admin/login/")
    browser.find_element(By.ID, "id_username").send_keys("admin")
    browser.find_element(By.ID, "id_password").send_keys(admin_password(rt))
    button = browser.find_element(By.CSS_SELECTOR, '#login-form [type="submit"]')
    button.click()
    WebDriverWait(browser, 15).until(gone(button))
    assert "/login/" not in browser.current_url, "the login was refused"


def is_red(css_colour: str) -> bool:
    """Whether a computed CSS colour ("rgb(220, 38, 38)" or "rgba(...)") is a clear red."""
    red, green, blue = (int(c) for c in re.findall(r"\d+", css_colour)[:3])
    return red > 150 and green < 100 and blue < 100


def one(rt: LiveRuntime, sql: str):
    rows = rt.query(sql)
    return rows[0] if rows else None


def gone(element):
    """A wait condition: the page that held `element` has been replaced. Chromium may
    answer a look at an element of a page being torn down with an inspector error
    ("Node ... does not belong to the document") instead of a stale-element error: the
    same fact."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    def check(_driver):
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            return "does not belong to the document" in str(exc)
        return False

    return check


def save(browser):
    """Submit the admin form and wait until its answer has replaced the page, so the next
    navigation cannot race the POST (and be replaced by its redirect)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    button = browser.find_element(By.NAME, "_save")
    button.click()
    WebDriverWait(browser, 15).until(gone(button))


def run_action(browser, pk: int, action: str, reason: str = "browser test"):
    """Tick one row of an admin changelist, run an action on it, and answer its
    confirmation page with a reason."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.find_element(By.CSS_SELECTOR, f'input.action-select[value="{pk}"]').click()
    Select(browser.find_element(By.NAME, "action")).select_by_value(action)
    browser.find_element(By.CSS_SELECTOR, 'button[name="index"]').click()
    confirm(browser, reason)


def confirm(browser, reason: str):
    """Answer an act's confirmation page: what it will do, a reason, then go."""
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "confirm-act")
    browser.find_element(By.ID, "id_reason").send_keys(reason)
    browser.find_element(By.ID, "confirm-act-submit").click()


def test_an_operator_runs_the_runtime_from_the_admin(runtime, browser, shot):
    from selenium.webdriver.common.by import By

    rt, started = runtime, time.monotonic()

    # Log in and see the dashboard: running, with a chart.
    log_in(browser, rt)
    banner = browser.find_element(By.ID, "runtime-mode")
    assert banner.get_attribute("data-mode") == "running"
    assert "running" in banner.text.lower()
    assert browser.find_elements(By.CSS_SELECTOR, "#runtime-dashboard svg.runtime-chart")
    shot("01-dashboard-running")

    # Engage the kill switch with a reason, from the banner's link.
    browser.find_element(By.ID, "kill-switch-link").click()
    browser.find_element(By.ID, "id_engaged").click()
    browser.find_element(By.ID, "id_new_reason").send_keys("browser test: bad deploy")
    browser.find_element(By.ID, "id_confirm").click()
    save(browser)
    browser.get(rt.url + "/admin/")
    banner = browser.find_element(By.ID, "runtime-mode")
    assert banner.get_attribute("data-mode") == "killed"
    assert "killed" in banner.text.lower() and "browser test: bad deploy" in banner.text
    shot("02-dashboard-killed")

    # A webhook now is stored and held.
    response = rt.post_event({"event_id": "evt_browser_held", "type": "order.created"})
    assert response.status_code == 202 and response.json()["status"] == "held"
    held = one(
        rt,
        "SELECT x.id FROM events_execution x JOIN events_event e ON e.id = x.event_id "
        "WHERE e.event_id = 'evt_browser_held' AND x.status = 'held'",
    )
    assert held
    browser.get(rt.url + "/admin/events/execution/?status__exact=held")
    assert browser.find_elements(By.CSS_SELECTOR, f'input.action-select[value="{held[0]}"]')
    # A list page says so too, in the header: KILLED, in words, on red.
    badge = browser.find_element(By.ID, "runtime-badge")
    assert badge.get_attribute("data-mode") == "killed"
    mode = badge.find_element(By.CLASS_NAME, "runtime-badge-mode")
    assert mode.text == "KILLED"
    assert is_red(mode.value_of_css_property("background-color"))
    shot("03-execution-held")

    # Release the kill switch: the message says so, and the dashboard offers to release
    # what it held; one click, a reason, and the held execution runs and succeeds.
    browser.get(rt.url + "/admin/")
    browser.find_element(By.ID, "kill-switch-link").click()
    browser.find_element(By.ID, "id_engaged").click()
    browser.find_element(By.ID, "id_new_reason").send_keys("browser test: fixed")
    browser.find_element(By.ID, "id_confirm").click()
    save(browser)
    messages = browser.find_element(By.CLASS_NAME, "messagelist").text
    assert "Kill switch released: browser test: fixed" in messages
    prompt = browser.find_element(By.ID, "held-waiting")
    assert "1 execution still held" in prompt.text
    shot("04a-release-held-prompt")
    prompt.find_element(By.ID, "release-held-link").click()
    assert "Selected: 1 execution(s): 1 held." in browser.find_element(By.ID, "confirm-act").text
    confirm(browser, "browser test: resume held work")
    assert "released" in browser.find_element(By.CLASS_NAME, "messagelist").text
    rt.wait_for(
        lambda: one(
            rt,
            f"SELECT 1 FROM events_execution WHERE id = {held[0]} "  # noqa: S608
            "AND status = 'succeeded'",
        )
    )
    browser.get(rt.url + "/admin/events/execution/?status__exact=succeeded")
    assert browser.find_elements(By.CSS_SELECTOR, f'input.action-select[value="{held[0]}"]')
    mode = browser.find_element(By.CSS_SELECTOR, '#runtime-badge[data-mode="running"] a')
    assert mode.text == "RUNNING"
    assert not is_red(mode.value_of_css_property("background-color"))
    shot("04-released-and-succeeded")

    # An execution to a host off the allowlist fails at once; find it and replay it.
    response = rt.post_event(
        {"event_id": "evt_browser_fail", "type": "alert.raised", "incident": {"id": 4711}}
    )
    assert response.status_code == 202, response.text
    failed = rt.wait_for(
        lambda: one(
            rt,
            "SELECT x.id, x.total_attempts FROM events_execution x "
            "JOIN events_event e ON e.id = x.event_id "
            "WHERE e.event_id = 'evt_browser_fail' AND x.status = 'failed'",
        )
    )
    # Found by a payload field, replayed from its own page with a reason.
    browser.get(rt.url + "/admin/events/execution/?q=incident.id%3D4711")
    browser.find_element(By.CSS_SELECTOR, f'a[href*="/execution/{failed[0]}/change/"]').click()
    assert not browser.find_elements(By.LINK_TEXT, "Delete")  # history is never deleted here
    browser.find_element(By.ID, "act-replay").click()
    confirm(browser, "browser test: the host is allowed now")
    assert (
        "Reason: browser test: the host is allowed now"
        in browser.find_element(By.CLASS_NAME, "messagelist").text
    )
    entry = one(
        rt,
        "SELECT actor, via, reason FROM guardrails_operatoraction "
        "WHERE action = 'executions.replay'",
    )
    assert entry == ("admin", "admin", "browser test: the host is allowed now")
    rt.wait_for(
        lambda: one(
            rt,
            f"SELECT 1 FROM events_execution WHERE id = {failed[0]} "  # noqa: S608
            f"AND status = 'failed' AND total_attempts > {failed[1]}",
        )
    )
    browser.get(rt.url + f"/admin/events/execution/{failed[0]}/change/")
    timeline = browser.find_element(By.ID, "execution-timeline")
    kinds = [e.get_attribute("data-kind") for e in timeline.find_elements(By.TAG_NAME, "li")]
    assert kinds == ["created", "attempt", "act", "attempt"]
    assert "browser test: the host is allowed now" in timeline.text
    browser.execute_script("arguments[0].scrollIntoView()", timeline)
    shot("05-failed-replayed-timeline")
    browser.get(rt.url + "/admin/")
    routes = browser.find_element(By.ID, "failing-routes").text
    assert "alerts-to-blocked-host" in routes
    shot("06-dashboard-after")

    # No Delete anywhere for history: not on the event's, execution's or attempt's page,
    # nor among any of their lists' actions (`prune` is the way).
    event_pk, attempt_pk = one(
        rt,
        "SELECT e.id, a.id FROM events_event e JOIN events_execution x ON x.event_id = e.id "  # noqa: S608
        f"JOIN events_attempt a ON a.execution_id = x.id WHERE x.id = {failed[0]} "
        "ORDER BY a.number LIMIT 1",
    )
    for model, pk in (("event", event_pk), ("execution", failed[0]), ("attempt", attempt_pk)):
        browser.get(rt.url + f"/admin/events/{model}/{str(pk).replace('-', '')}/change/")
        assert "/change/" in browser.current_url and "404" not in browser.title
        assert not browser.find_elements(By.LINK_TEXT, "Delete"), model
        assert not browser.find_elements(By.CSS_SELECTOR, 'a[href$="/delete/"]'), model
        browser.get(rt.url + f"/admin/events/{model}/")
        actions = [
            o.get_attribute("value")
            for o in browser.find_elements(By.CSS_SELECTOR, 'select[name="action"] option')
        ]
        assert "delete_selected" not in actions, (model, actions)

    # The dark theme: the mode still reads in words on its colour.
    browser.execute_script("localStorage.setItem('adminTheme', JSON.stringify('dark'))")
    browser.get(rt.url + "/admin/")
    assert "dark" in browser.find_element(By.TAG_NAME, "html").get_attribute("class")
    mode = browser.find_element(By.CSS_SELECTOR, "#runtime-badge .runtime-badge-mode")
    assert mode.text == "RUNNING"
    assert browser.find_element(By.ID, "runtime-mode").is_displayed()
    shot("07-dashboard-dark")
    browser.execute_script("localStorage.setItem('adminTheme', JSON.stringify('light'))")
    assert time.monotonic() - started < 150


def test_an_operator_routes_by_content_and_sees_where_each_event_went(runtime, browser, shot):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    rt = runtime
    log_in(browser, rt)

    # A route for big charges from the demo source: a typo in the filter is refused,
    # naming the bad part; the fixed filter is saved.
    browser.get(rt.url + "/admin/connectors/route/add/")
    browser.find_element(By.ID, "id_name").send_keys("big-charges")
    browser.find_element(By.ID, "id_event_type").send_keys("charge.succeeded")
    browser.find_element(By.CSS_SELECTOR, 'input[name="sources"][value="demo"]').click()
    Select(browser.find_element(By.ID, "id_connector")).select_by_value("log")
    browser.find_element(By.ID, "id_action").send_keys("record")
    params = browser.find_element(By.ID, "id_params")
    params.clear()
    params.send_keys('{"message": "big charge {{ event.amount }}"}')
    box = browser.find_element(By.ID, "id_filter")
    box.clear()
    box.send_keys('{"data": {"amount": {"$gtt": 10000}}}')
    save(browser)
    errors = " ".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, ".errorlist"))
    assert "data.amount.$gtt: unknown operator (did you mean $gt?)" in errors
    shot("01-bad-filter-refused")
    box = browser.find_element(By.ID, "id_filter")
    box.clear()
    box.send_keys('{"data": {"amount": {"$gte": 10000}}}')
    save(browser)
    assert "big-charges" in browser.find_element(By.ID, "result_list").text
    shot("02-routes")
    # The routes list fits the 1400 px window beside the sidebar: no column off screen.
    right = browser.execute_script(
        "return document.getElementById('result_list').getBoundingClientRect().right"
    )
    assert right <= browser.execute_script("return window.innerWidth")

    # Two charges: only the big one runs the route.
    for event_id, amount in (("ch_big", 25000), ("ch_small", 500)):
        body = {"event_id": event_id, "type": "charge.succeeded", "amount": amount}
        assert rt.post_event(body).status_code == 202
    big = rt.wait_for(
        lambda: one(
            rt,
            "SELECT x.id FROM events_execution x JOIN events_event e ON e.id = x.event_id "
            "WHERE e.event_id = 'ch_big' AND x.status = 'succeeded'",
        )
    )
    assert one(rt, "SELECT status FROM events_event WHERE event_id = 'ch_small'") == ("unrouted",)

    # The tester, one click from the routes list, explains a stored event.
    browser.find_element(By.CSS_SELECTOR, '.object-tools a[href$="/route-test/"]').click()
    browser.find_element(By.ID, "id_event").send_keys("demo/ch_small")
    browser.find_element(By.CSS_SELECTOR, '#route-test input[type="submit"]').click()
    results = browser.find_element(By.ID, "route-test-results").text
    assert "0 of 5 route(s) match" in results  # the demo three, the failing one, ours
    assert "data.amount is 500, not $gte 10000" in results
    shot("03-tester")

    # The big charge's page: which routes it matched and why, with its execution.
    ch_big = one(rt, "SELECT id FROM events_event WHERE event_id = 'ch_big'")[0]
    event_url = f"/admin/events/event/{str(ch_big).replace('-', '')}/change/"
    browser.get(rt.url + event_url)
    row = browser.find_element(By.CSS_SELECTOR, 'tr.route-matched[data-route="big-charges"]')
    assert "big charge 25000" in row.text
    browser.execute_script("arguments[0].scrollIntoView()", row)
    shot("04-event-routes")
    row.find_element(By.LINK_TEXT, f"#{big[0]}").click()
    assert f"/admin/events/execution/{big[0]}/change/" in browser.current_url


# What an operator's lists hold on a bad day: UUIDs as event ids, long route and worker
# names, errors with a URL in their first line; failed, retrying, held and succeeded.
LONG_ROUTE = "forward-paid-orders-to-the-erp-billing-and-fulfilment-webhook-eu-west-1"
LONG_ERROR = (
    "connectors.net.OutboundRefused: https://erp.example.internal/api/v2/webhooks/orders/"
    "incoming?tenant=eu-west-1 resolves to 10.12.4.7, a private address not on "
    "OUTBOUND_ALLOW_PRIVATE; refusing to connect"
)
TYPICAL_HISTORY = f"""
import uuid
from datetime import timedelta
from django.utils import timezone
from connectors.models import Route
from events.models import Attempt, Event, Execution, Source
source = Source.objects.create(name="shopify-storefront-production-eu")
routes = [
    Route.objects.create(name={LONG_ROUTE!r}, event_type="order.paid", connector="log",
                         action="record"),
    Route.objects.create(name="notify-the-warehouse-slack-channel-about-big-orders",
                         event_type="order.paid", connector="log", action="record"),
]
now = timezone.now()
for i in range(30):
    at = now - timedelta(minutes=i)
    event = Event.objects.create(
        source=source, event_id=str(uuid.uuid4()), type="order.paid.partially_refunded",
        payload={{"n": i}}, body_hash="0" * 64, received_at=at,
        matched_routes=[r.pk for r in routes])
    for k, route in enumerate(routes):
        status = ["failed", "retrying", "succeeded", "held"][(i + k) % 4]
        erred = status in ("failed", "retrying")
        execution = Execution.objects.create(
            event=event, route=route, status=status, attempts=3, total_attempts=3,
            idempotency_key=Execution.new_idempotency_key(), created_at=at, updated_at=at,
            next_attempt_at=now + timedelta(hours=1), last_error={LONG_ERROR!r} if erred else "")
        Attempt.objects.create(
            execution=execution, number=1, started_at=at, duration_ms=1234,
            worker=f"worker-{{i % 3}}.eu-west-1.compute.internal:{{4000 + i}}:{{uuid.uuid4()}}",
            outcome="permanent_error" if erred else "succeeded",
            error_class="connectors.net.OutboundRefused" if erred else "",
            error_message={LONG_ERROR!r} if erred else "")
"""
# The page's width and the result table's frame, against the window's.
WIDTHS = """
const table = document.getElementById('result_list');
return {
    window: window.innerWidth,
    page: document.documentElement.scrollWidth,
    frame: table.parentElement.clientWidth,
    table: table.parentElement.scrollWidth,
};
"""


def test_the_lists_fit_a_1400_pixel_window_and_say_when_nothing_matches(runtime, browser, shot):
    from selenium.webdriver.common.by import By

    rt = runtime
    rt.manage("shell", "-c", TYPICAL_HISTORY)
    browser.set_window_size(1400, 900)
    log_in(browser, rt)

    # Each list fits the window: no horizontal scroll of the page or of the table; what
    # is cut short is whole on hover.
    for n, name in enumerate(("event", "execution", "attempt"), start=1):
        browser.get(rt.url + f"/admin/events/{name}/")
        widths = browser.execute_script(WIDTHS)
        shot(f"{n:02d}-{name}s-at-1400px")
        assert widths["page"] <= widths["window"] == 1400, (name, widths)
        assert widths["table"] <= widths["frame"], (name, widths)
        rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
        assert len(rows) >= 30, name
    route_cell = browser.find_element(By.CSS_SELECTOR, f'#result_list [title^="{LONG_ROUTE}:"]')
    assert route_cell.text == LONG_ROUTE  # all of it in the page, for a copy
    cut = "return arguments[0].scrollWidth > arguments[0].clientWidth"
    assert browser.execute_script(cut, route_cell), "shown cut short, with an ellipsis"
    browser.get(rt.url + "/admin/events/execution/?status__exact=failed")
    assert browser.find_elements(By.CSS_SELECTOR, f'#result_list [title="{LONG_ERROR}"]')

    # The first characters of an event id, as pasted from a sender's log, find its event.
    wanted = one(rt, "SELECT event_id FROM events_event ORDER BY received_at DESC LIMIT 1")[0]
    browser.get(rt.url + f"/admin/events/execution/?q={wanted[:8]}")
    cells = browser.find_elements(By.CSS_SELECTOR, "#result_list td.field-event_cell span")
    assert {cell.get_attribute("title") for cell in cells} == {
        f"shopify-storefront-production-eu/{wanted}"
    }
    shot("04-executions-by-event-id-prefix")

    # Nothing held among them: the page says so, and offers the same search unfiltered.
    browser.get(rt.url + f"/admin/events/execution/?q={wanted[:8]}&status__exact=cancelled")
    note = browser.find_element(By.ID, "no-results")
    assert f"No executions match “{wanted[:8]}”." in note.text
    assert "The search looked only within the filters: status." in note.text
    assert not browser.find_elements(By.CLASS_NAME, "no-count-paginator")
    shot("05-no-results-under-a-filter")
    note.find_element(By.LINK_TEXT, "Clear the filters").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#result_list td.field-event_cell")) == 2
    assert "status__exact" not in browser.current_url


WORKFLOW_ROUTES = (
    "from connectors.models import Route; "
    "Route.objects.create(name='refund-customer', event_type='refund.requested', "
    "connector='log', action='record', requires_approval=True); "
    "Route.objects.create(name='create-invoice', event_type='order.paid', sources=['demo'], "
    "connector='log', action='record', emit_type='invoice.created', "
    "emit_payload={'order': '{{ event.data.order.id }}'}); "
    "Route.objects.create(name='post-invoice', event_type='invoice.created', "
    "sources=['internal'], connector='log', action='record')"
)


def test_an_operator_approves_a_refund_and_follows_a_chain_of_steps(tmp_path, browser, shot):
    from selenium.webdriver.common.by import By

    rt = LiveRuntime(tmp_path).prepare()
    rt.manage("shell", "-c", WORKFLOW_ROUTES)
    rt.start()
    try:
        log_in(browser, rt)
        refund = {"event_id": "evt_refund_1", "type": "refund.requested", "amount": "42.00"}
        assert rt.post_event(refund).status_code == 202
        (pk,) = rt.wait_for(
            lambda: one(rt, "SELECT id FROM events_execution WHERE status = 'awaiting_approval'")
        )
        # The list says it waits, in words; its page offers Approve and Reject.
        browser.get(rt.url + "/admin/events/execution/?status__exact=awaiting_approval")
        assert browser.find_elements(By.CSS_SELECTOR, f'input.action-select[value="{pk}"]')
        browser.get(rt.url + f"/admin/events/execution/{pk}/change/")
        assert browser.find_element(By.ID, "act-reject")
        shot("01-awaiting-approval")
        browser.find_element(By.ID, "act-approve").click()
        confirm(browser, "browser test: the customer called")
        assert "browser test: the customer called" in (
            browser.find_element(By.CLASS_NAME, "messagelist").text
        )
        rt.wait_for(
            lambda: one(
                rt,
                f"SELECT 1 FROM events_execution WHERE id = {pk} "  # noqa: S608
                "AND status = 'succeeded'",
            )
        )
        browser.get(rt.url + f"/admin/events/execution/{pk}/change/")
        timeline = browser.find_element(By.ID, "execution-timeline").text
        assert "approved" in timeline and "browser test: the customer called" in timeline
        shot("02-approved-and-run")

        # A chain: order.paid -> create-invoice emits invoice.created -> post-invoice.
        paid = {"event_id": "evt_paid_1", "type": "order.paid", "data": {"order": {"id": "o-1"}}}
        assert rt.post_event(paid).status_code == 202
        rt.wait_for(
            lambda: one(
                rt,
                "SELECT 1 FROM events_execution x JOIN connectors_route r ON r.id = x.route_id "
                "WHERE r.name = 'post-invoice' AND x.status = 'succeeded'",
            )
        )
        (event_pk,) = one(rt, "SELECT id FROM events_event WHERE event_id = 'evt_paid_1'")
        browser.get(rt.url + f"/admin/events/event/{str(event_pk).replace('-', '')}/change/")
        chain = browser.find_element(By.ID, "event-chain")
        depths = [
            e.get_attribute("data-depth")
            for e in chain.find_elements(By.CSS_SELECTOR, "li.chain-event")
        ]
        assert depths == ["0", "1"]
        assert "create-invoice" in chain.text and "post-invoice" in chain.text
        assert "invoice.created" in chain.text
        browser.execute_script("arguments[0].scrollIntoView()", chain)
        shot("03-chain-of-steps")
    finally:
        rt.close()
