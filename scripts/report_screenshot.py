"""Open a `trilemma bench` report in headless Chromium, check that every image loaded, and save a
full-page screenshot (issue 3, acceptance 4).

Requires what neither trilemma nor its test extra installs: the Python package selenium, and Debian's
chromium and chromium-driver (the browser and its WebDriver):

    apt-get install -y chromium chromium-driver && pip install selenium
    python scripts/report_screenshot.py runs/demo/report.html --out runs/demo/report.png

Exit status 1 when an image failed to load (its src is printed), 2 when the report or one of those
requirements is missing (one line on stderr says what to install). No network is used: the browser and
its driver are Debian's (/usr/bin/chromium, /usr/bin/chromedriver, or --browser / --driver) and the page
is a local file.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path

CHECK_IMAGES = """
return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0,
                                             i.naturalWidth, i.naturalHeight]);
"""


INSTALL = "apt-get install -y chromium chromium-driver && pip install selenium"


def _browser(browser: str | None) -> str:
    return browser or shutil.which("chromium") or "/usr/bin/chromium"


def _driver(driver: str | None) -> str:
    return driver or shutil.which("chromedriver") or "/usr/bin/chromedriver"


def missing_requirements(browser: str | None = None, driver: str | None = None) -> str | None:
    """One line naming what is missing (selenium, the browser, its driver) and how to install it; None if
    nothing is."""
    missing = []
    if importlib.util.find_spec("selenium") is None:
        missing.append("the Python package selenium")
    for what, exe in (("chromium", _browser(browser)), ("chromedriver", _driver(driver))):
        if not (Path(exe).is_file() or shutil.which(exe)):
            missing.append(f"{what} ({exe})")
    if not missing:
        return None
    return f"report_screenshot.py: missing {', '.join(missing)}; install with: {INSTALL}"


def screenshot(report: Path, out: Path, width: int = 1280, browser: str | None = None, driver: str | None = None) -> list:
    """Load `report`, return [(src, loaded, w, h)] for every <img>, and write a full-page PNG to `out`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = _browser(browser)
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--allow-file-access-from-files", f"--window-size={width},1000"):
        opts.add_argument(a)
    service = Service(executable_path=_driver(driver))
    d = webdriver.Chrome(options=opts, service=service)
    try:
        d.get(report.resolve().as_uri())
        d.execute_async_script("const done = arguments[0]; "
                               "Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))"
                               ".then(() => done());")
        images = d.execute_script(CHECK_IMAGES)
        height = d.execute_script("return document.documentElement.scrollHeight")
        d.set_window_size(width, height + 100)
        out.parent.mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(out))
        return images
    finally:
        d.quit()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="PNG path [default: next to the report]")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--browser", default=None, help="Chromium binary [default: chromium on PATH, /usr/bin/chromium]")
    ap.add_argument("--driver", default=None, help="chromedriver [default: on PATH, /usr/bin/chromedriver]")
    args = ap.parse_args()
    missing = missing_requirements(args.browser, args.driver)
    if missing:
        print(missing, file=sys.stderr)
        return 2
    if not args.report.is_file():
        print(f"{args.report}: no such report", file=sys.stderr)
        return 2
    out = args.out or args.report.with_name("report-screenshot.png")
    images = screenshot(args.report, out, args.width, args.browser, args.driver)
    bad = [src for src, ok, *_ in images if not ok]
    print(f"{len(images) - len(bad)} of {len(images)} images loaded; screenshot: {out}")
    for src in bad:
        print(f"  not loaded: {src}")
    return 1 if bad or not images else 0


if __name__ == "__main__":
    sys.exit(main())
