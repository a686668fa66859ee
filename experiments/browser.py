"""Pages seen as a person sees them: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium. Used by `iqacl report --screenshot` and the tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.errors import UserError

INSTALL = "apt-get install chromium chromium-driver; pip install selenium (in .[dev])"


def chrome(width: int = 1300, height: int = 1000):
    """A headless Chromium that logs the page's console; UserError if one cannot be had."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        raise UserError(f"no {'chromium' if not chromium else 'chromedriver'} on PATH; "
                        f"install them: {INSTALL}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise UserError(f"selenium is not installed; {INSTALL}") from None
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def full_page(browser, width: int = 1300, height: int | None = None) -> None:
    """Make the viewport the page's own height (or `height`): a screenshot of all of it."""
    tall = height or browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": int(tall), "deviceScaleFactor": 1, "mobile": False})


def screenshot(page: Path, png: Path, width: int = 1300, height: int | None = None) -> Path:
    """A PNG of `page` as Chromium renders it (the top `height` pixels, or all of it)."""
    browser = chrome(width)
    try:
        browser.get(Path(page).resolve().as_uri())
        full_page(browser, width, height)
        png.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(png))
    finally:
        browser.quit()
    return png
