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

from tests.test_web_glance import EVIL  # noqa: E402
from tests.test_web_glance import fast as fast  # noqa: E402, F401  (fixture: a URL checked every 10 s)


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
    cells = rows[0].find_elements(By.CSS_SELECTOR, "td.glance i")          # beta's last 30 slots
    assert len(cells) == 30 and all(c.size["width"] >= 3 and c.size["height"] >= 10 for c in cells)
    assert cells[-1].get_attribute("class") == "f"                        # down: the newest is red
    assert "connection refused" in cells[-1].get_attribute("title")
    ok = next(c for c in cells if c.get_attribute("class") == "o")         # up 3 hours before
    assert ok.value_of_css_property("background-color") != cells[-1].value_of_css_property("background-color")
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
    axis = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#chart text[text-anchor=end]")]
    assert len(axis) >= 3 and len(set(axis)) == len(axis), axis                   # no label repeats
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


def test_a_fast_site_at_a_glance(fast, web_factory, browser, shots):
    """A URL checked every 10 s, answering in 0.4-1.9 ms: its strip on the list (the site's
    hostile error is a title's text, never markup), seconds in its times, a readable axis."""
    dsn, ids, slots = fast
    web = web_factory(dsn)
    browser.get(web.url + "/")
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#urls tbody tr") if "fast.example.com" in r.text)
    cells = row.find_elements(By.CSS_SELECTOR, "td.glance i")
    assert len(cells) == 30 and all(c.is_displayed() and c.size["width"] >= 3 for c in cells)
    colours = {c.get_attribute("class"): c.value_of_css_property("background-color") for c in cells}
    assert {"o", "f", "l", "m"} <= set(colours)
    assert colours["o"] != colours["f"] and colours["l"] == colours["m"] and colours["o"] != colours["m"]
    failed = next(c for c in cells if c.get_attribute("class") == "f")
    assert EVIL in failed.get_attribute("title")                  # shown as text on hover
    assert row.find_elements(By.CSS_SELECTOR, "td.glance script, td.glance b") == []    # never markup
    shots(browser, "index-fast")

    browser.get(f"{web.url}/urls/{ids['fast']}")
    newest = slots[0].strftime("%Y-%m-%d %H:%M:%S UTC")
    assert newest in browser.find_element(By.ID, "checks").text
    axis = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#chart text[text-anchor=end]")]
    assert axis[:3] == ["0 ms", "0.5 ms", "1.0 ms"] and len(set(axis)) == len(axis), axis
    shots(browser, "url-fast")
    assert _console_errors(browser) == []
