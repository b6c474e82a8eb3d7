"""The pages in a real browser: Debian's headless Chromium, driven by Selenium and chromedriver.

`.ci/run` installs the `chromium` and `chromium-driver` packages when they are missing; without
them (or without selenium) these tests are skipped with the reason. Screenshots of each page, in
light and dark mode, are saved under the test's temporary directory (printed on failure) and,
when SITEWATCH_SCREENSHOTS names a directory, there too (the README's come from that).
"""

import os
import shutil
import tempfile

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip("no headless browser: install Debian's chromium and chromium-driver (.ci/run does)",
                allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402


def _browser(dark: bool, width=1280, height=900):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # As on this machine's python-svc notes: no sandbox as root, and no background traffic to
    # hosts the closed network refuses.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-extensions",
                 f"--window-size={width},{height}", f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    # The colour scheme the page sees, as a user's system setting would set it.
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [
        {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})
    return driver


@pytest.fixture
def browser():
    driver = _browser(dark=False)
    yield driver
    driver.quit()


@pytest.fixture
def shots(tmp_path):
    """save(driver, name): a PNG in the test's directory (and in $SITEWATCH_SCREENSHOTS)."""
    folder = tmp_path / "screenshots"
    folder.mkdir()
    extra = os.environ.get("SITEWATCH_SCREENSHOTS")

    def save(driver, name):
        path = folder / f"{name}.png"
        driver.save_screenshot(str(path))
        assert path.stat().st_size > 1000
        if extra:
            os.makedirs(extra, exist_ok=True)
            shutil.copy(path, os.path.join(extra, f"{name}.png"))
        return path
    return save


def _console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _background(driver) -> str:
    return driver.execute_script("return getComputedStyle(document.body).backgroundColor")


def test_pages_in_chromium(web, browser, shots):
    beta, alpha = web.ids["beta"], web.ids["alpha"]
    browser.get(web.url + "/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#urls tbody tr")
    assert len(rows) == 100
    assert rows[0].get_attribute("data-state") == "down"               # the down URL is listed first
    assert "beta.example.com" in rows[0].text and "s3cret" not in browser.page_source
    shots(browser, "index")

    browser.get(f"{web.url}/urls/{alpha}")
    bars = browser.find_elements(By.CSS_SELECTOR, "#daily svg rect")
    assert len(bars) == 90 and bars[-1].is_displayed()
    assert bars[0].size["height"] > 10
    title = bars[-1].find_element(By.TAG_NAME, "title").get_attribute("textContent")
    assert "checks ok" in title                                            # hover shows the day's figure
    chart = browser.find_element(By.CSS_SELECTOR, "#chart svg")
    assert chart.size["width"] > 300 and chart.size["height"] > 100
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart polyline")) >= 2     # p50 and p95 lines
    shots(browser, "url")

    browser.get(f"{web.url}/urls/{beta}")
    assert "connect" in browser.find_element(By.ID, "checks").text

    browser.get(web.url + "/incidents")
    assert "open" in browser.page_source
    shots(browser, "incidents")

    browser.get(web.url + "/?q=site-010&state=up")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#urls tbody tr")) == 10
    assert _console_errors(browser) == []               # no script error, no blocked load, no 404


def test_dark_mode_changes_the_colours(web, shots):
    colours = {}
    for dark in (False, True):
        driver = _browser(dark=dark)
        try:
            driver.get(f"{web.url}/urls/{web.ids['beta']}")
            colours[dark] = (_background(driver), driver.execute_script(
                "return getComputedStyle(document.querySelector('#daily rect.d-bad')).fill"))
            shots(driver, "url-dark" if dark else "url-light")
            assert _console_errors(driver) == []
        finally:
            driver.quit()
    assert colours[False][0] != colours[True][0]           # the page background
    assert colours[False][1] != colours[True][1]           # and the chart colours follow
    assert colours[True][0] == "rgb(20, 23, 28)"
