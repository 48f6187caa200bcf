"""The page in a real browser: Debian's headless Chromium driven by selenium, against
`musicgen serve` started as a user starts it, on a free loopback port."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from test_web import OPENING, _start_server, tiny_run  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("MUSICGEN_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MUSICGEN_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,1800",
)  # fmt: skip
SCREENSHOT = os.environ.get("MUSICGEN_SCREENSHOT")  # where to save the page, e.g. docs/serve.png


def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists() and not shutil.which(Path(path).name):
            return f"{path} missing: install Debian's {package} (scripts/setup.sh with test extras)"
    return None


@pytest.fixture(scope="module")
def server(tiny_run):  # noqa: F811
    process, url = _start_server(tiny_run)
    yield url
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 0


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = _browser_missing()
    if missing:
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _open(browser, url):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    wait = WebDriverWait(browser, 60)
    # The key and meter lists come from the model's training tunes, fetched on load.
    wait.until(lambda b: len(b.find_elements("css selector", "#meter option")) > 1)
    return wait


def _choose(browser, select_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", select_id)).select_by_value(value)


def _fill(browser, field_id: str, value: str) -> None:
    element = browser.find_element("id", field_id)
    element.clear()
    element.send_keys(value)


def test_generate_shows_scores_and_playable_audio(server, browser, tmp_path):
    wait = _open(browser, server)
    _choose(browser, "key", "G")
    _choose(browser, "meter", "6/8")
    _fill(browser, "title", "Browser Jig")
    _fill(browser, "num", "2")
    # The tiny model writes little music of its own: a low temperature and a short length keep
    # its additions small, so each tune is the eight real bars of the opening, repeated.
    _fill(browser, "temperature", "0.1")
    _fill(browser, "max_length", "160")
    _fill(browser, "opening", OPENING)
    browser.find_element("id", "generate").click()
    wait.until(lambda b: b.find_element("id", "results").get_attribute("data-done") == "true")

    tunes = browser.find_elements("css selector", "#results article.tune")
    assert len(tunes) == 2
    for tune in tunes:
        assert "Browser Jig" in tune.find_element("tag name", "h2").text
        notes = tune.find_elements("css selector", ".score svg .note")
        assert len(notes) > 20, tune.text
        assert "K:G" in tune.find_element("css selector", ".abc pre").text
        assert tune.find_element("css selector", ".validity").text
        links = [
            a.get_attribute("href") for a in tune.find_elements("css selector", ".downloads a")
        ]
        assert {link.split("?")[0].rsplit(".", 1)[1] for link in links} == {
            "abc",
            "mid",
            "wav",
            "svg",
        }
        assert "Nearest training tune" in tune.find_element("css selector", ".nearest").text
    # Every audio element loads its WAV and knows its length.
    durations = wait.until(
        lambda b: (
            lambda found: found if all(d and d > 0 for d in found) else False
        )(b.execute_script(
            "return [...document.querySelectorAll('#results audio')].map(a => a.duration)"
        ))
    )  # fmt: skip
    assert len(durations) == 2 and all(d > 5 for d in durations), durations
    browser.save_screenshot(str(tmp_path / "serve.png"))
    if SCREENSHOT:
        browser.save_screenshot(SCREENSHOT)


def test_a_bad_value_shows_its_message_next_to_the_field(server, browser):
    wait = _open(browser, server)
    _fill(browser, "temperature", "9")
    browser.find_element("id", "generate").click()
    message = wait.until(lambda b: b.find_element("id", "error-temperature").text)
    assert "between" in message
    assert browser.find_element("id", "temperature").get_attribute("aria-invalid") == "true"
    assert browser.find_elements("css selector", "#results article") == []


def test_typed_markup_stays_text(server, browser):
    wait = _open(browser, server)
    marker = "<b id=injected>x</b>"
    _fill(browser, "opening", marker)
    browser.find_element("id", "generate").click()
    wait.until(lambda b: b.find_element("id", "error-opening").text)
    assert browser.find_elements("id", "injected") == []
    assert browser.execute_script("return document.querySelectorAll('b').length") == 0
