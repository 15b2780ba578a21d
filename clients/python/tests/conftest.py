"""Fixtures: one stack for the session (three mock IdPs with 2-second access tokens, rotation and
reuse detection, one broker over them, a browser-session site served by a local page server),
stopped by PID at the end whatever happened."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

import authkeeper
from _pages import PageServer
from _stack import Stack

#: One account per lease test, so outcomes that retire a session do not interfere.
ACCOUNTS = [
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "pw-sync",
    "pw-async",
    "example",
    "mcp-agent",
    "pw-storage",
]

#: Credentials on the "main" IdP (the key "w" may use all but "secret").
MAIN_CREDENTIALS = ["api", "reauth", "agent", "scrapy", "retry", "secret", "mcp", "mcp-reauth"]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def session_state(origin: str, sid: str) -> Dict[str, Any]:
    """A Playwright storage state with an HttpOnly ``sid`` cookie for 127.0.0.1 and localStorage."""
    return {
        "cookies": [
            {
                "name": "sid",
                "value": sid,
                "domain": "127.0.0.1",
                "path": "/",
                "expires": -1,
                "httpOnly": True,
                "secure": False,
                "sameSite": "Lax",
            }
        ],
        "origins": [{"origin": origin, "localStorage": [{"name": "tok", "value": f"ls-{sid}"}]}],
    }


@pytest.fixture(scope="session")
def authkeeper_bin() -> str:
    binary = os.environ.get("AUTHKEEPER_BIN", "")
    if not binary or not os.access(binary, os.X_OK):
        pytest.fail("AUTHKEEPER_BIN must name the authkeeper binary (e.g. target/debug/authkeeper)")
    return binary


@pytest.fixture(scope="session")
def chromium() -> str:
    return os.environ.get("AUTHKEEPER_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def pages() -> Iterator[PageServer]:
    server = PageServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def stack(
    authkeeper_bin: str, pages: PageServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    s = Stack(authkeeper_bin, Path(tmp_path_factory.mktemp("stack")))
    try:
        s.add_idp("main")
        s.add_idp("storm")
        s.add_idp("faulty")
        for credential in MAIN_CREDENTIALS:
            s.add_credential(credential, "main")
        s.add_credential("storm", "storm")
        s.add_credential("flaky", "faulty")
        s.add_site("portal", pages.origin, ACCOUNTS)
        allowed = [c for c in MAIN_CREDENTIALS if c != "secret"] + ["storm", "flaky"]
        s.add_client("w", allowed, sites=["portal"], checkpoints=["shared-task"])
        s.add_client("other", ["secret"])
        # An agent's key: the proxy, sessions and its checkpoints, but never a token.
        s.add_client(
            "agent",
            ["mcp", "mcp-reauth"],
            sites=["portal"],
            permissions=["proxy", "sessions", "checkpoints"],
        )
        s.start()
        for account in ACCOUNTS:
            s.import_session("portal", account, session_state(pages.origin, f"sid-{account}"))
        yield s
    finally:
        s.stop()


@pytest.fixture
def client(stack: Stack) -> Iterator[authkeeper.Client]:
    with authkeeper.Client(stack.url, stack.keys["w"]) as c:
        yield c


@pytest.fixture
def broker_env(stack: Stack) -> Dict[str, str]:
    """The environment ``authkeeper exec`` would give a worker."""
    return {**os.environ, "AUTHKEEPER_URL": stack.url, "AUTHKEEPER_API_KEY": stack.keys["w"]}
