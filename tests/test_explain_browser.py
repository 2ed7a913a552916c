"""The explain page in headless Chromium: a person pastes a GAM URL and an OpenRTB body and reads
what the page shows; the last decisions refresh by themselves; nothing a viewer or a person
typed ever runs as markup. Screenshots go to tests/artifacts/.

Needs Debian's `chromium` and `chromium-driver` (tests/run.sh installs them): without them the
tests are skipped, and under CI=true they fail.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from plugin.config import Config, ServeConfig
from tests.helpers.explain import BID_BODY, GAM_QUERY, GAM_URL, IDFA, OPENRTB_URL
from tests.helpers.fake_adserver import FakeAdServer, Running, running

ARTIFACTS = Path(__file__).parent / "artifacts"
HOSTILE_TAG = "<img src=x onerror=document.title='pwned'>"
OTHER_VIEWER = GAM_QUERY.replace(IDFA, "0F3A6E2C-1B4D-4C8E-9F70-2A5B6C7D8E9F").replace(
    "football%2Fhighlights", "news%2Felection"
)
"""Real traffic of another viewer and content: it leaves the explained request's state alone."""


def _browser() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        why = "chromium and chromium-driver are not installed (tests/run.sh installs them)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why)
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("selenium is missing: install the dev extra (pip install -e '.[dev]')")
    return chromium, driver


@pytest.fixture
def chrome() -> Iterator[Any]:
    chromium, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def page(ads: FakeAdServer) -> AsyncIterator[Running]:
    config = Config(
        sandbox=True,
        adapters={"openrtb": {"activation_platforms": ["dfp"]}},
        serve=ServeConfig(upstreams={"gam": ads.url}, explain=True),
    )
    async with running(config) as r:
        yield r


def wait(driver: Any, check: Callable[[Any], Any], what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 30, poll_frequency=0.05).until(check, what)


def text(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.ID, element_id)
    return str(found[0].text) if found else ""


def paste(driver: Any, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, element_id)
    box.clear()
    box.send_keys(value)


def click(driver: Any, element_id: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, element_id).click()


def marked(driver: Any, element_id: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [str(s.text) for s in driver.find_elements(By.CSS_SELECTOR, f"#{element_id} span.add")]


def screenshot(driver: Any, name: str) -> None:
    """The whole page, not only the window."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    (ARTIFACTS / name).write_bytes(base64.b64decode(shot["data"]))


def explain_gam(driver: Any) -> None:
    click(driver, "example-gam")  # fills the form; then the person pastes their own URL
    paste(driver, "url", GAM_URL)
    click(driver, "explain")
    wait(driver, lambda d: "no cohorts written" in text(d, "verdict"), "the dry run's verdict")
    reads = text(driver, "reads")
    assert "gam" in reads and IDFA in reads and "usp_not_opted_out" in reads
    assert "https://example.com/sport/football/highlights" in reads
    assert "first ad break of the view: sends the play event" in reads
    assert text(driver, "asks").count("would ask (not asked)") == 2
    click(driver, "play")
    click(driver, "run")
    wait(driver, lambda d: "written: permutive=" in text(d, "verdict"), "the run's verdict")
    cohorts = text(driver, "cohorts")
    assert "Sports fans" in cohorts  # the sandbox workspace's name for cohort 10001
    assert "cohort names from the sandbox's workspace" in cohorts  # /explain/meta's names
    assert "not activated" in cohorts
    (changed,) = marked(driver, "after")
    assert changed.startswith("cust_params=") and "%2C10001%2C" in changed
    assert marked(driver, "before") == []  # only the after side is marked as added
    assert "asked: ok" in text(driver, "asks")
    screenshot(driver, "explain-gam.png")


def explain_openrtb(driver: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "method")).select_by_visible_text("POST")
    paste(driver, "url", OPENRTB_URL)
    driver.execute_script(
        "arguments[0].value = arguments[1]", driver.find_element(By.ID, "body"), BID_BODY
    )  # pasted, not typed: a textarea's own auto-indent stays out
    click(driver, "run")
    wait(
        driver,
        lambda d: "openrtb" in text(d, "reads") and "written" in text(d, "verdict"),
        "the OpenRTB run",
    )
    added = "\n".join(marked(driver, "after"))
    assert '"permutive"' in added and '"id": "20001"' in added
    assert '"tier": "gold"' in text(driver, "after") and '"tier": "gold"' not in added
    screenshot(driver, "explain-openrtb.png")


def hostile_input_stays_text(driver: Any, base: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "method")).select_by_visible_text("GET")
    paste(driver, "url", GAM_URL + "&cust_params=<script>document.title='pwned'</script>")
    click(driver, "explain")
    wait(driver, lambda d: "<script>" in text(d, "before"), "the pasted URL shown as text")
    hostile = urllib.parse.quote(f"{HOSTILE_TAG}:abc", safe="")
    proxied(f"{base}/proxy/gam/gampad/ads?{OTHER_VIEWER}&cohortkv_alias={hostile}")
    wait(driver, lambda d: "of 4 since start" in text(d, "seen"), "the viewer's decision")
    decisions = text(driver, "decisions")
    assert "alias:<img src=x onerror=" in decisions  # tags are cut at 32 characters
    assert driver.title == "cohortkv explain"
    assert driver.find_elements(By.TAG_NAME, "img") == []
    assert len(driver.find_elements(By.TAG_NAME, "script")) == 1
    screenshot(driver, "explain-hostile.png")


def proxied(url: str) -> None:
    """A real ad request through the sidecar, from the browser's thread."""
    with urllib.request.urlopen(url) as resp:
        assert resp.status == 200


def drive(driver: Any, base: str) -> None:
    """The whole visit, as a person makes it (run in a thread while the sidecar serves)."""
    driver.get(base + "/explain")
    wait(driver, lambda d: "(2 shown of 2 since start)" in text(d, "seen"), "the last decisions")
    assert "sandbox" in text(driver, "mode")
    explain_gam(driver)
    explain_openrtb(driver)
    # Real traffic while the page is open shows up by itself.
    proxied(f"{base}/proxy/gam/gampad/ads?{OTHER_VIEWER}")
    wait(driver, lambda d: "of 3 since start" in text(d, "seen"), "the live refresh")
    hostile_input_stays_text(driver, base)
    problems = [
        e["message"]
        for e in driver.get_log("browser")
        if "Content Security Policy" in e["message"]
        or "TrustedHTML" in e["message"]
        or "Uncaught" in e["message"]
    ]
    assert problems == []


async def test_a_person_explains_a_gam_url_and_an_openrtb_body(
    page: Running, ads: FakeAdServer, chrome: Any
) -> None:
    base = str(page.client.make_url("")).rstrip("/")
    for query in (OTHER_VIEWER, OTHER_VIEWER.replace("correlator=1", "correlator=2")):
        assert (await page.client.get(f"/proxy/gam/gampad/ads?{query}")).status == 200
    try:
        await asyncio.to_thread(drive, chrome, base)
    except Exception:
        await asyncio.to_thread(screenshot, chrome, "explain-failure.png")
        raise
    assert len(ads.requests) == 4  # the four real requests; explaining sent nothing
