"""The hub's pages in a real browser (headless Chromium, driven by Selenium): a practitioner signs
in at Keycloak, triages a concern, opens the child, records a decision, and the decision reaches
the tracker and a health flag the health store. Every page is checked with axe-core inside it
(no serious or critical violation), and the queue, a concern and a child page are kept as
screenshots (HUBSTREAM_HOME/test-artifacts/screenshots)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from consumers.queries import show_flags
from hubstream.settings import PROJECT_ROOT, Settings
from tests.support.stack import Namespace
from tests.support.web import (
    CITY_CHILD,
    CITY_NHS,
    WebApp,
    concern_of,
    owner_query,
    password_of,
    seeded_namespace,
)

pytestmark = pytest.mark.timeout(400)
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
AXE = PROJECT_ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = Settings().home / "test-artifacts" / "screenshots"


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[Namespace, WebApp]]:
    with seeded_namespace() as made:
        yield made


@pytest.fixture
def open_browser(tmp_path: Path) -> Iterator[Callable[[], WebDriver]]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Chromium and ChromeDriver are missing: `make browser` installs them", pytrace=False)
    os.environ["SE_AVOID_STATS"] = "true"  # no telemetry, and nothing to fetch: the driver is given
    drivers: list[WebDriver] = []

    def start() -> WebDriver:
        options = Options()
        options.binary_location = str(CHROMIUM)
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1400",
            f"--user-data-dir={tmp_path / f'profile-{len(drivers)}'}",
        ):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        driver.implicitly_wait(5)
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


def sign_in(driver: WebDriver, app: WebApp, username: str, path: str = "/concerns") -> None:
    driver.get(app.url(path))
    assert "/realms/hubstream/" in driver.current_url, driver.current_url  # Keycloak's own form
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password_of(username))
    driver.find_element(By.ID, "kc-login").click()
    wait_for(lambda: driver.current_url.startswith(app.base), f"back at the hub from {driver.current_url}")


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"waited {timeout_s} s for: {what}")


def accessible(driver: WebDriver, page: str) -> None:
    """axe-core inside the page: no serious or critical violation."""
    driver.execute_script(AXE.read_text())
    violations = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map("
        "v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))));"
    )
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not bad, f"{page}: {bad}"


def screenshot(driver: WebDriver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1280, min(max(int(height), 800), 6000))
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    driver.set_window_size(1280, 1400)


def heading(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "h1").text)


def test_a_practitioner_triages_a_concern_and_records_a_decision_that_reaches_tracker_and_health(
    site: tuple[Namespace, WebApp], open_browser: Callable[[], WebDriver]
) -> None:
    ns, app = site
    driver = open_browser()
    sign_in(driver, app, "practitioner.city")
    assert heading(driver).startswith("Concerns")
    accessible(driver, "queue")
    screenshot(driver, "queue")

    concern = concern_of(ns, CITY_CHILD)
    driver.find_element(By.CSS_SELECTOR, f'a[href="/concerns/{concern}"]').click()
    assert heading(driver) == "Repeat missing concern"
    accessible(driver, "concern")
    driver.find_element(By.ID, "acknowledge").click()
    assert "Concern acknowledged" in driver.find_element(By.CLASS_NAME, "govuk-notification-banner").text
    assert owner_query(ns, "SELECT status, owner FROM hub.concerns WHERE concern_id = %s", (concern,)) == [
        ("acknowledged", "practitioner.city")
    ]
    driver.find_element(By.ID, "close-reason")  # the close form is there; leave it open
    driver.find_element(By.CSS_SELECTOR, 'form input[name="action"][value="close"]').find_element(
        By.XPATH, "./ancestor::form"
    ).find_element(By.TAG_NAME, "button").click()
    assert "There is a problem" in driver.find_element(By.CLASS_NAME, "govuk-error-summary").text
    assert "Enter the reason for closing" in driver.page_source
    accessible(driver, "concern with an error")
    screenshot(driver, "concern")

    driver.find_element(By.CSS_SELECTOR, f'a[href="/children/{CITY_CHILD}"]').click()
    assert heading(driver).startswith("Child ")
    accessible(driver, "child")
    screenshot(driver, "child")
    assert "grey Astra" in driver.page_source and "Handling code C" in driver.page_source
    driver.find_element(By.CSS_SELECTOR, 'input[name="kind"][value="case_opened"]').click()
    driver.find_element(By.CSS_SELECTOR, 'input[name="risk"][value="high"]').click()
    nhs = driver.find_element(By.ID, "nhs_number")
    assert nhs.get_attribute("value") == CITY_NHS  # what the agencies' events carry
    driver.find_element(By.XPATH, "//button[normalize-space()='Publish decision']").click()
    wait_for(
        lambda: "Open a case on the CSE tracker: published" in driver.page_source, "the decision published"
    )

    tracker = wait_for(
        lambda: owner_query(
            ns,
            "SELECT case_status, risk_level, authority, owning_authority FROM hub.children"
            " WHERE child_key = %s",
            (CITY_CHILD,),
        ),
        "the decision on the tracker",
        60,
    )
    assert tracker == [("open", "high", "E06000016", "Leicester City Council")]
    flag = wait_for(
        lambda: owner_query(
            ns,
            "SELECT status, code, owning_authority FROM health.cse_flags WHERE nhs_number = %s",
            (CITY_NHS,),
        ),
        "the health flag in the health store",
        60,
    )
    assert flag == [("active", "716565009", "Leicester City Council")]
    driver.refresh()
    assert "Case open" in driver.page_source
    assert "Nobody in health has read the flag yet" in driver.page_source
    [flag] = show_flags(
        ns.settings, CITY_NHS, reader="ED clinician, Leicester Royal Infirmary", purpose="attendance"
    )
    assert flag["status"] == "active"
    driver.refresh()
    reads = driver.find_element(By.XPATH, "//caption[contains(., 'Read in health')]/..").text
    assert "ED clinician, Leicester Royal Infirmary" in reads and "attendance" in reads
    accessible(driver, "child with a health flag")


def test_another_authority_is_refused_the_child_and_the_auditor_reads_the_log(
    site: tuple[Namespace, WebApp], open_browser: Callable[[], WebDriver]
) -> None:
    _, app = site
    county = open_browser()
    sign_in(county, app, "practitioner.county", f"/children/{CITY_CHILD}")
    assert heading(county) == "You cannot see this page"
    assert CITY_CHILD not in county.page_source
    accessible(county, "refused")
    county.get(app.url(f"/children/{CITY_CHILD}/nothing-here"))
    assert heading(county) == "Page not found"
    accessible(county, "not found")

    auditor = open_browser()
    sign_in(auditor, app, "auditor", "/access-log")
    assert heading(auditor) == "Access log"
    accessible(auditor, "access log")
    auditor.find_element(By.CSS_SELECTOR, "button.hub-sign-out").click()
    wait_for(lambda: "signed out" in heading(auditor).lower(), "the signed-out page")
    accessible(auditor, "signed out")
