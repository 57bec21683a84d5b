"""The operator's admin in a real headless Chromium against a real runtime: log in, read
the dashboard, engage the kill switch, release a held execution, replay a failed one.

Screenshots of every step are kept under test-artifacts/browser/.
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
def shot(browser):
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)

    def take(name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        browser.save_screenshot(str(path))
        return path

    return take


def admin_password(rt: LiveRuntime) -> str:
    out = rt.manage("demo_credentials").stdout
    found = re.search(r"admin login:\s+admin / (\S+)", out)
    assert found, out
    return found.group(1)


def one(rt: LiveRuntime, sql: str):
    rows = rt.query(sql)
    return rows[0] if rows else None


def save(browser):
    """Submit the admin form and wait until its answer has replaced the page, so the next
    navigation cannot race the POST (and be replaced by its redirect)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    button = browser.find_element(By.NAME, "_save")
    button.click()
    WebDriverWait(browser, 15).until(expected_conditions.staleness_of(button))


def run_action(browser, pk: int, action: str):
    """Tick one row of an admin changelist and run an action on it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.find_element(By.CSS_SELECTOR, f'input.action-select[value="{pk}"]').click()
    Select(browser.find_element(By.NAME, "action")).select_by_value(action)
    browser.find_element(By.CSS_SELECTOR, 'button[name="index"]').click()


def test_an_operator_runs_the_runtime_from_the_admin(runtime, browser, shot):
    from selenium.webdriver.common.by import By

    rt, started = runtime, time.monotonic()

    # Log in and see the dashboard: running, with a chart.
    browser.get(rt.url + "/admin/login/")
    browser.find_element(By.ID, "id_username").send_keys("admin")
    browser.find_element(By.ID, "id_password").send_keys(admin_password(rt))
    browser.find_element(By.CSS_SELECTOR, 'input[type="submit"]').click()
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
    shot("03-execution-held")

    # Release the kill switch, then the held execution; it runs and succeeds.
    browser.get(rt.url + "/admin/")
    browser.find_element(By.ID, "kill-switch-link").click()
    browser.find_element(By.ID, "id_engaged").click()
    browser.find_element(By.ID, "id_new_reason").send_keys("browser test: fixed")
    browser.find_element(By.ID, "id_confirm").click()
    save(browser)
    browser.get(rt.url + "/admin/events/execution/?status__exact=held")
    run_action(browser, held[0], "release_held")
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
    shot("04-released-and-succeeded")

    # An execution to a host off the allowlist fails at once; find it and replay it.
    response = rt.post_event({"event_id": "evt_browser_fail", "type": "alert.raised"})
    assert response.status_code == 202, response.text
    failed = rt.wait_for(
        lambda: one(
            rt,
            "SELECT x.id, x.total_attempts FROM events_execution x "
            "JOIN events_event e ON e.id = x.event_id "
            "WHERE e.event_id = 'evt_browser_fail' AND x.status = 'failed'",
        )
    )
    browser.get(rt.url + "/admin/events/execution/?status__exact=failed")
    run_action(browser, failed[0], "replay")
    assert browser.find_element(By.CLASS_NAME, "messagelist").text  # wording may change
    rt.wait_for(
        lambda: one(
            rt,
            f"SELECT 1 FROM events_execution WHERE id = {failed[0]} "  # noqa: S608
            f"AND status = 'failed' AND total_attempts > {failed[1]}",
        )
    )
    browser.get(rt.url + f"/admin/events/execution/{failed[0]}/change/")
    shot("05-failed-replayed")
    browser.get(rt.url + "/admin/")
    routes = browser.find_element(By.ID, "failing-routes").text
    assert "alerts-to-blocked-host" in routes
    shot("06-dashboard-after")
    assert time.monotonic() - started < 120
