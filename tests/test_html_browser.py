"""The HTML report in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by selenium) opens the report of the shared fast scan of the backdoored sample model
(tests/html_fixtures.py), checks that every image decoded and that the verdict and the target's
name are on the page, and saves a full-page screenshot in the test's tmp dir (and, when
LRED_SCREENSHOT_DIR is set, there as report_backdoored.png: docs/screenshots/ is made that way).

Without chromium, chromedriver or selenium the test is skipped with the reason, unless
LRED_REQUIRE_BROWSER=1 (set by .ci/run), when it fails instead.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
SCREENSHOT_NAME = "report_backdoored.png"


def _missing(reason: str) -> None:
    if os.environ.get("LRED_REQUIRE_BROWSER") == "1":
        pytest.fail(f"LRED_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """(browser binary, chromedriver): skip (or fail) before the shared scan runs when either is missing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[test]')")
    binary = next((found for name in CHROMIUM if (found := shutil.which(name))), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        _missing("chromium or chromedriver is not installed (Debian: apt-get install chromium chromium-driver)")
    return str(binary), str(driver_path)


@pytest.fixture
def browser(chromium, tmp_path):
    """A headless Chromium WebDriver with a throw-away profile and no background network traffic."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    binary, driver_path = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = str(binary)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                 "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.slow
def test_backdoored_report_renders_in_chromium_with_every_image_decoded(chromium, backdoored_html_scan, browser,
                                                                       tmp_path):
    browser.get(backdoored_html_scan.html_path.resolve().as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")
    assert len(images) == 1 + 1 + 10 + 2 * 2 * 3
    assert [alt for alt, decoded in images if not decoded] == []
    text = browser.execute_script("return document.body.innerText")
    assert "BACKDOOR DETECTED" in text
    assert "Target class 2 (Pullover); source class(es) 0 (T-shirt/top)" in text
    assert browser.execute_script("return document.getElementById('target').textContent") == "2 (Pullover)"
    assert browser.execute_script("return document.scripts.length") == 0

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1200, height + 40)                 # the whole page in one screenshot
    screenshot = tmp_path / SCREENSHOT_NAME
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("LRED_SCREENSHOT_DIR"):
        target = Path(os.environ["LRED_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, target / SCREENSHOT_NAME)


@pytest.mark.slow
def test_batch_index_renders_in_chromium_and_links_each_report(chromium, browser, tmp_path, monkeypatch):
    """A batch of a vendor folder (a backdoored, a clean and a broken model): index.html lists the
    three with their verdicts, its links open each scanned model's HTML report (every image decoded)
    and the broken model's one-line reason is on the page; screenshot batch_index.png."""
    from click.testing import CliRunner

    from scanner.cli import main
    from tests.conftest import FAST_OPTIONS
    from tests.test_batch import write_vendor

    write_vendor(tmp_path)
    monkeypatch.chdir(tmp_path)                  # relative paths on the page, as an auditor would type them
    out = tmp_path / "audit"
    result = CliRunner().invoke(main, ["scan", "models", "--data", "clean.npz", "--out", "audit", "--quiet",
                                       *FAST_OPTIONS], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    browser.get((out / "index.html").resolve().as_uri())
    text = browser.execute_script("return document.body.innerText")
    assert "backdoor" in text and "clean" in text and "broken.onnx" in text
    links = browser.execute_script(
        "return Array.from(document.links).map(a => a.getAttribute('href')).filter(h => h.endsWith('.html'))")
    assert len(links) == 2
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, height + 40)
    screenshot = tmp_path / "batch_index.png"
    assert browser.save_screenshot(str(screenshot))
    if os.environ.get("LRED_SCREENSHOT_DIR"):
        target = Path(os.environ["LRED_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, target / "batch_index.png")
    for link in links:
        browser.get((out / link).resolve().as_uri())
        decoded = browser.execute_script(
            "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        assert decoded and all(decoded)
        assert browser.execute_script("return document.scripts.length") == 0
