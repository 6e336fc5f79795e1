"""A real browser (Debian's headless Chromium, driven by selenium through /usr/bin/chromedriver) against a
live server and a real Celery worker: log in, see the charts drawn, run an operation, see its outcome.

Screenshots go to test-output/console/ (git-ignored). `make test` installs chromium and chromium-driver
when they are missing; without them this test fails (it never skips).
"""

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from console.models import TaskRun
from tracker import services
from tracker.models import AccessEvent

OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "console"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1100",
]

# Pixels of a canvas that are not fully transparent: 0 for a chart that did not draw.
PAINTED_PIXELS = """
const canvas = document.getElementById(arguments[0]);
if (!canvas || canvas.dataset.drawn !== "true") return -1;
const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let painted = 0;
for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) painted++;
return painted;
"""


@pytest.fixture
def browser():
    from selenium import webdriver

    assert Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), "make test installs chromium and chromium-driver"
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager must not try to download anything
    profile = tempfile.mkdtemp(prefix="es-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.django_db(transaction=True)
def test_an_operator_logs_in_sees_the_charts_and_runs_a_drain(browser, live_server, worker, superuser, traffic):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(live_server.url + reverse("admin:login") + "?next=" + reverse("admin:index"))
    browser.find_element(By.NAME, "username").send_keys("root")
    browser.find_element(By.NAME, "password").send_keys("a-long-password-1")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()

    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "canvas#chart-requests[data-drawn=true]")))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Overview"
    for chart in ("chart-requests", "chart-errors", "chart-refusals"):
        assert browser.execute_script(PAINTED_PIXELS, chart) > 500, chart
    browser.save_screenshot(str(OUTPUT / "overview.png"))

    browser.find_element(By.LINK_TEXT, "/items/<int:pk>").click()
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "canvas#chart-latency[data-drawn=true]")))
    assert browser.execute_script(PAINTED_PIXELS, "chart-latency") > 500
    assert "Endpoint /items/<int:pk>" in browser.title
    browser.save_screenshot(str(OUTPUT / "endpoint.png"))

    services.record_events([traffic_event(n) for n in range(5)])  # waiting in the Redis buffer
    browser.get(live_server.url + reverse("admin:console_operations"))
    browser.find_element(By.CSS_SELECTOR, "#op-drain input[type=submit]").click()
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "tr[data-status]")))
    run = TaskRun.objects.get(kind="drain")

    def finished(driver) -> bool:
        status = driver.find_element(By.ID, f"run-{run.pk}").get_attribute("data-status")
        if status in {"queued", "running"}:
            driver.refresh()  # as an operator would (the page also reloads itself every 3 s meanwhile)
            return False
        return True

    try:
        WebDriverWait(browser, 60, poll_frequency=0.5).until(finished)
    finally:
        browser.save_screenshot(str(OUTPUT / "operations.png"))
    row = browser.find_element(By.ID, f"run-{run.pk}").text
    assert "succeeded" in row and re.search(r"stored \d+ new event\(s\)", row)  # 5, and the favicon's 404
    assert AccessEvent.objects.filter(endpoint="/browser").count() == 5


def traffic_event(n: int):
    from tracker.events import Event

    return Event(endpoint="/browser", occurred_at=timezone.now(), status_code=200, duration_ms=1.0 + n)
