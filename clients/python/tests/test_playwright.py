"""Playwright (sync and async) with ``lease.new_context(browser)`` on the system Chromium: the
leased cookies and localStorage reach the page, the page's new state goes back on release, and an
identity becomes the context's user agent, locale, timezone, viewport and headers."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, Dict, List

import pytest

import authkeeper
from _pages import PageServer
from _stack import Stack
from authkeeper.lease import Lease
from conftest import CHROMIUM_ARGS, session_state

playwright_sync = pytest.importorskip("playwright.sync_api")
playwright_async = pytest.importorskip("playwright.async_api")


def _cookies(state: Dict[str, Any]) -> Dict[str, str]:
    cookies: List[Dict[str, Any]] = state["cookies"]
    return {c["name"]: c["value"] for c in cookies}


def test_sync_new_context(client: authkeeper.Client, pages: PageServer, chromium: str) -> None:
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            with client.lease("portal", account="pw-sync") as lease:
                context = lease.new_context(browser)
                page = context.new_page()
                page.goto(pages.origin + "/page")
                assert page.inner_text("#sid") == "sid-pw-sync"
                assert page.evaluate("localStorage.getItem('tok')") == "ls-sid-pw-sync"
            assert lease.summary is not None and lease.summary.state == "active"
            with pytest.raises(playwright_sync.Error):
                context.new_page()  # closed at release: the session is someone else's now
        finally:
            browser.close()
    with client.lease("portal", account="pw-sync") as again:
        assert _cookies(again.storage_state) == {"sid": "sid-pw-sync", "visits": "1"}


def test_async_new_context(client: authkeeper.Client, pages: PageServer, chromium: str) -> None:
    async def run() -> None:
        async with playwright_async.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                for visit in (1, 2):
                    async with client.lease("portal", account="pw-async") as lease:
                        context = await lease.new_context(browser)
                        page = await context.new_page()
                        await page.goto(pages.origin + "/page")
                        assert await page.inner_text("#sid") == "sid-pw-async"
                        if visit == 2:
                            assert _cookies(lease.storage_state)["visits"] == "1"
            finally:
                await browser.close()
        await client.aclose()

    asyncio.run(run())
    with client.lease("portal", account="pw-async") as again:
        assert _cookies(again.storage_state)["visits"] == "2"


def test_sync_lease_refuses_async_playwright(client: authkeeper.Client) -> None:
    class AsyncBrowser:
        async def new_context(self, **options: Any) -> None:
            raise AssertionError("not called")

    with client.lease("portal", account="pw-sync") as lease:
        with pytest.raises(TypeError, match="async with"):
            lease.new_context(AsyncBrowser())


def test_identity_becomes_context_options(
    client: authkeeper.Client, pages: PageServer, chromium: str
) -> None:
    # Today's broker sends no identity: a lease as the broker will send it, with one.
    identity = {
        "userAgent": "authkeeper-test/1.0",
        "locale": "de-DE",
        "timezoneId": "America/New_York",
        "viewport": {"width": 1111, "height": 777},
        "extraHTTPHeaders": {"x-identity": "alice-1"},
    }
    expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)).isoformat()
    lease = Lease(
        client,
        {
            "lease_id": "portal~x.0~0",
            "lease_expires_at": expires,
            "identity": identity,
            "storage_state": None,
        },
        None,
    )
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = lease.new_context(browser)
            page = context.new_page()
            echoed = page.goto(pages.origin + "/echo")
            assert echoed is not None
            headers = echoed.json()["headers"]
            assert headers["user-agent"] == "authkeeper-test/1.0"
            assert headers["x-identity"] == "alice-1"
            assert headers["accept-language"].startswith("de-DE")
            assert page.evaluate("[innerWidth, innerHeight]") == [1111, 777]
            assert page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") == "America/New_York"
            assert (
                lease.new_context(browser, locale="fr-FR").new_page().evaluate("navigator.language")
                == "fr-FR"
            )
        finally:
            browser.close()


def test_session_storage_and_indexed_db_go_round_trip(
    stack: Stack, client: authkeeper.Client, pages: PageServer, chromium: str
) -> None:
    state = session_state(pages.origin, "sid-pw-storage")
    origin = state["origins"][0]
    origin["sessionStorage"] = [{"name": "tab", "value": "tab-1"}]
    origin["indexedDB"] = [
        {
            "name": "app",
            "version": 1,
            "stores": [
                {
                    "name": "kv",
                    "autoIncrement": False,
                    "records": [{"key": "token", "value": "idb-1"}],
                    "indexes": [],
                }
            ],
        }
    ]
    stack.import_session("portal", "pw-storage", state)
    read = """async () => {
        const db = await new Promise((resolve, reject) => {
            const open = indexedDB.open('app');
            open.onsuccess = () => resolve(open.result);
            open.onerror = () => reject(open.error);
        });
        const token = await new Promise((resolve) => {
            const get = db.transaction('kv').objectStore('kv').get('token');
            get.onsuccess = () => resolve(get.result);
        });
        db.close();
        return [sessionStorage.getItem('tab'), token];
    }"""
    write = """async () => {
        sessionStorage.setItem('tab', 'tab-2');
        const db = await new Promise((resolve) => {
            const open = indexedDB.open('app');
            open.onsuccess = () => resolve(open.result);
        });
        await new Promise((resolve) => {
            const tx = db.transaction('kv', 'readwrite');
            tx.objectStore('kv').put('idb-2', 'token');
            tx.oncomplete = resolve;
        });
        db.close();
    }"""
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            with client.lease("portal", account="pw-storage") as lease:
                page = lease.new_context(browser).new_page()
                page.goto(pages.origin + "/page")
                assert page.evaluate(read) == ["tab-1", "idb-1"]
                page.evaluate(write)
            # The next worker's browser sees what this one left.
            with client.lease("portal", account="pw-storage") as lease:
                page = lease.new_context(browser).new_page()
                page.goto(pages.origin + "/page")
                assert page.evaluate(read) == ["tab-2", "idb-2"]
        finally:
            browser.close()
