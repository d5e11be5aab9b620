"""Watch a node's explorer in headless Chromium (Debian's /usr/bin/chromium via Playwright,
the `browser` extra) and print what the page shows every few seconds: how many polls it has
drawn, the head, the rounds, the settlement records and how many L1 executed. A tool for
checking the page keeps up with a running demo; `--screenshot` saves the page at the end.

    python scripts/watch_explorer.py http://127.0.0.1:PORT --seconds 120 --every 10
"""

import argparse
import time

from playwright.sync_api import sync_playwright

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SNAPSHOT = """() => ({
    polls: Number(document.body.dataset.ticks || 0),
    live: document.getElementById("live").textContent,
    rounds: document.querySelectorAll("details.round[data-status=aggregated]").length,
    records: document.querySelectorAll("tr.record").length,
    executed: document.querySelectorAll('tr.record[data-settled="yes"]').length,
})"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("node", help="the node's base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--every", type=float, default=10)
    parser.add_argument("--screenshot", help="save a full-page PNG here at the end")
    args = parser.parse_args()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        started = time.monotonic()
        page.goto(args.node.rstrip("/") + "/explorer")
        while time.monotonic() - started < args.seconds:
            time.sleep(args.every)
            print(f"{time.monotonic() - started:6.1f} s", page.evaluate(SNAPSHOT), flush=True)
        if args.screenshot:
            page.screenshot(path=args.screenshot, full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
