"""A real headless browser for the sweep page: Debian's chromium driven by selenium through
Debian's chromedriver (`apt-get install chromium chromium-driver`; nothing is downloaded from a
browser vendor: selenium is handed the driver's path, so its driver manager never runs).

    python tests/helpers/browser.py REPORT.html OUT.png     # a screenshot of a report (the README's)
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser")
DRIVER = "chromedriver"


def missing() -> str | None:
    """Why no browser test can run here (None when one can)."""
    if not any(shutil.which(name) for name in CHROMIUM):
        return "no chromium on PATH (apt-get install chromium chromium-driver)"
    if not shutil.which(DRIVER):
        return "no chromedriver on PATH (apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


def open_browser(width: int = 1400, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(n) for n in CHROMIUM if shutil.which(n))
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=shutil.which(DRIVER)))


def load(driver, page: Path) -> None:
    """Open a page from its file and wait until its charts are drawn."""
    from selenium.webdriver.support.ui import WebDriverWait
    driver.get(Path(page).absolute().as_uri())
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && document.querySelectorAll('.js-plotly-plot').length >= 2"))


def errors(driver) -> list[str]:
    """Script errors: the page's own record of them and the browser console's SEVERE entries."""
    own = driver.execute_script("return window.reportErrors || []")
    console = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return [*own, *console]


def screenshot(driver, out: Path) -> Path:
    """The whole page: the window is made as tall as the page first."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(driver.get_window_size()["width"], min(int(height) + 40, 12000))
    out.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    why = missing()
    if why:
        print(f"browser: {why}", file=sys.stderr)
        return 2
    driver = open_browser()
    try:
        load(driver, Path(argv[0]))
        found = errors(driver)
        print(f"{screenshot(driver, Path(argv[1]))}: script errors: {found or 'none'}")
        return 1 if found else 0
    finally:
        driver.quit()


if __name__ == "__main__":
    os.environ.setdefault("SE_AVOID_STATS", "true")
    sys.exit(main(sys.argv[1:]))
