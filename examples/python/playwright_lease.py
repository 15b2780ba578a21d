#!/usr/bin/env python3
"""A Playwright job on a leased browser session: lease a logged-in session of a site from the
broker, open a page with its cookies, localStorage, proxy and identity, and release it with the
browser's new state (or as ``logged_out`` when the site sent us to its login page).

    AUTHKEEPER_URL=... AUTHKEEPER_API_KEY=... python examples/python/playwright_lease.py \\
        --site portal --url https://portal.example.com/reports

Uses the system Chromium (``AUTHKEEPER_CHROMIUM``, default /usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import os
import sys

from playwright.sync_api import sync_playwright

import authkeeper

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", required=True)
    parser.add_argument("--account", default=None)
    parser.add_argument("--url", required=True, help="the page to open")
    parser.add_argument("--login-path", default="/login", help="a URL containing this means logged out")
    args = parser.parse_args()

    client = authkeeper.Client()
    executable = os.environ.get("AUTHKEEPER_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            with client.lease(args.site, account=args.account, ttl=120) as lease:
                context = lease.new_context(browser)  # state, proxy and identity of the session
                page = context.new_page()
                page.goto(args.url)
                if args.login_path in page.url:
                    raise authkeeper.LoggedOut(f"{args.site}: sent to {args.login_path}")
                print(f"session {lease.session_id}: {page.title()!r}: {page.inner_text('body')[:200]!r}")
        except authkeeper.LoggedOut as error:
            print(f"logged out, session released for a new login: {error}")
            return 1
        finally:
            browser.close()
    summary = lease.summary
    if summary is not None:
        print(f"released {summary.session_id}: {summary.state}, {summary.usage_count} uses")
    return 0


if __name__ == "__main__":
    sys.exit(main())
