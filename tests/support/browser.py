"""Headless Chromium for the tests that load a page as a person would (Debian's chromium and
chromium-driver, driven by Selenium; scripts/install fetches them). Skips when they are missing."""
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def browser():
    """A headless Chromium WebDriver; the caller quits it."""
    webdriver = pytest.importorskip("selenium.webdriver")
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/install)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1150"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def image_pixels(driver, element_id, streaming=False):
    """The image ``element_id`` as the page shows it, read back through a canvas (a data: URL), or
    None while it has not loaded (``streaming``: an image still loading, a multipart stream, counts
    once it has a frame)."""
    return driver.execute_script(
        "const i = document.getElementById(arguments[0]);"
        "if (!i || (!arguments[1] && !i.complete) || !i.naturalWidth) return null;"
        "const c = document.createElement('canvas'); c.width = i.naturalWidth; c.height = i.naturalHeight;"
        "c.getContext('2d').drawImage(i, 0, 0); return c.toDataURL('image/png');", element_id, streaming)


def click(driver, selector, tries=20):
    """Click the element ``selector`` as a person would. A page that re-renders a table between
    finding a row and clicking it leaves a stale element: find it again, at most ``tries`` times."""
    from selenium.common.exceptions import StaleElementReferenceException

    for left in range(tries, 0, -1):
        try:
            driver.find_element("css selector", selector).click()
            return
        except StaleElementReferenceException:
            if left == 1:
                raise
