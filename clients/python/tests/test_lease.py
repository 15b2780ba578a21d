"""Session leases against the real broker: the outcome of every way a block can end (checked in
``GET /v1/sessions``), heartbeats past the lease TTL, the storage state sent back, a lost lease,
and the cookie jar for HTTP-only workers."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Dict

import httpx
import pytest
import requests

import authkeeper
from _pages import PageServer
from _stack import Stack
from authkeeper import _calls
from conftest import session_state


def _session(client: authkeeper.Client, account: str) -> Dict[str, Any]:
    sessions = [s for s in client.sessions("portal") if s["account"] == account]
    assert len(sessions) == 1, sessions
    return sessions[0]


def test_ok_releases_and_counts_a_use(client: authkeeper.Client) -> None:
    before = _session(client, "alice")
    with client.lease("portal", account="alice") as lease:
        assert lease.account == "alice" and lease.session_id == "alice.0"
        assert lease.storage_state["cookies"][0]["value"] == "sid-alice"
        assert lease.proxy is None and lease.identity is None
        assert _session(client, "alice")["leased_by"] == "w"
        assert "sid-alice" not in repr(lease)
    assert lease.summary is not None and lease.summary.state == "active"
    after = _session(client, "alice")
    assert after["leased_by"] is None and after["state"] == "active"
    assert after["usage_count"] == before["usage_count"] + 1
    assert lease.summary.usage_count == after["usage_count"]


def test_error_outcome_when_the_block_raises(client: authkeeper.Client) -> None:
    with pytest.raises(ValueError, match="boom"):
        with client.lease("portal", account="bob"):
            raise ValueError("boom")
    bob = _session(client, "bob")
    assert bob["leased_by"] is None and bob["state"] == "active"
    assert bob["error_score"] == 1.0


def test_blocked_outcome_retires_the_session(client: authkeeper.Client) -> None:
    with pytest.raises(authkeeper.Blocked):
        with client.lease("portal", account="carol") as lease:
            raise authkeeper.Blocked("captcha wall")
    assert lease.summary is not None and lease.summary.state == "retired"
    carol = _session(client, "carol")
    assert carol["state"] == "retired" and carol["error_score"] >= 3.0


def test_logged_out_outcome(client: authkeeper.Client) -> None:
    with pytest.raises(authkeeper.LoggedOut):
        with client.lease("portal", account="dave"):
            raise authkeeper.LoggedOut("redirected to /login")
    dave = _session(client, "dave")
    assert dave["state"] == "retired" and dave["leased_by"] is None


def test_set_outcome_without_raising(client: authkeeper.Client) -> None:
    with client.lease("portal", account="erin") as lease:
        lease.set_outcome("error")
        with pytest.raises(ValueError):
            lease.set_outcome("fine")
    assert _session(client, "erin")["error_score"] == 1.0


def test_async_outcomes(client: authkeeper.Client) -> None:
    async def run() -> None:
        async with client.lease("portal", account="frank") as lease:
            assert lease.storage_state["cookies"][0]["value"] == "sid-frank"
        with pytest.raises(authkeeper.Blocked):
            async with client.lease("portal", account="frank"):
                raise authkeeper.Blocked()
        await client.aclose()

    asyncio.run(run())
    frank = _session(client, "frank")
    assert frank["state"] == "retired" and frank["usage_count"] == 2


def test_heartbeat_keeps_a_short_lease_past_its_ttl(client: authkeeper.Client) -> None:
    # Control: without heartbeats, a 1-second lease is taken over by the next caller.
    unattended = client.call(_calls.lease_call("portal", "grace", 1))
    time.sleep(1.5)
    with client.lease("portal", account="grace") as taker:
        assert taker.lease_id != unattended["lease_id"]

    with client.lease("portal", account="grace", ttl=2) as lease:
        first_expiry = lease.expires_at
        time.sleep(4.5)  # more than twice the TTL
        with pytest.raises(authkeeper.NoSessionAvailable) as caught:
            with client.lease("portal", account="grace"):
                pass
        assert caught.value.retry_after is not None and caught.value.retry_after >= 1
        assert lease.heartbeats >= 3
        assert lease.expires_at > first_expiry
        assert not lease.lost
    assert lease.summary is not None and lease.summary.state == "active"


def test_async_heartbeat(client: authkeeper.Client) -> None:
    async def run() -> int:
        async with client.lease("portal", account="grace", ttl=1) as lease:
            await asyncio.sleep(2.5)
            with pytest.raises(authkeeper.NoSessionAvailable):
                await client.call_async(_calls.lease_call("portal", "grace", None))
            beats = lease.heartbeats
        await client.aclose()
        return beats

    assert asyncio.run(run()) >= 4


def test_storage_state_sent_back(client: authkeeper.Client, pages: PageServer) -> None:
    with client.lease("portal", account="heidi") as lease:
        state = session_state(pages.origin, "sid-heidi-2")
        lease.storage_state = state
    with client.lease("portal", account="heidi") as again:
        assert again.storage_state["cookies"][0]["value"] == "sid-heidi-2"
        again.storage_state = session_state(pages.origin, "sid-heidi-3")
    # An error outcome still stores the state; blocked / logged_out do not.
    with pytest.raises(RuntimeError):
        with client.lease("portal", account="heidi") as third:
            assert third.storage_state["cookies"][0]["value"] == "sid-heidi-3"
            third.storage_state = session_state(pages.origin, "sid-heidi-4")
            raise RuntimeError("page crashed")
    with client.lease("portal", account="heidi") as fourth:
        assert fourth.storage_state["cookies"][0]["value"] == "sid-heidi-4"


def test_lost_lease_raises_on_exit(client: authkeeper.Client) -> None:
    with pytest.raises(authkeeper.LeaseLost) as caught:
        with client.lease("portal", account="ivan") as lease:
            # someone else releases it behind our back (as the janitor does with an expired one)
            client.call(_calls.release_call(lease.lease_id, "ok", None))
    assert caught.value.status == 409
    assert lease.lost
    # A block that raised keeps its own exception; the failed release is only logged.
    with pytest.raises(KeyError):
        with client.lease("portal", account="ivan") as lease:
            client.call(_calls.release_call(lease.lease_id, "ok", None))
            raise KeyError("mine")


def test_cookie_jar_for_requests_and_httpx(client: authkeeper.Client, pages: PageServer) -> None:
    with client.lease("portal", account="judy") as lease:
        jar = lease.cookie_jar()
        echoed = requests.get(pages.origin + "/echo", cookies=jar, timeout=10).json()
        assert echoed["cookie"] == "sid=sid-judy"
        with httpx.Client(cookies=jar) as http:
            assert http.get(pages.origin + "/echo").json()["cookie"] == "sid=sid-judy"
            page = http.get(pages.origin + "/page")
            assert "sid-judy" in page.text
            lease.update_cookies(http.cookies.jar)  # now with the site's new `visits` cookie
    with client.lease("portal", account="judy") as again:
        names = {c["name"]: c["value"] for c in again.storage_state["cookies"]}
        assert names == {"sid": "sid-judy", "visits": "1"}
        assert again.storage_state["origins"][0]["localStorage"][0]["value"] == "ls-sid-judy"


def test_no_session_for_a_forbidden_site(stack: Stack) -> None:
    with authkeeper.Client(stack.url, stack.keys["other"]) as other:
        with pytest.raises(authkeeper.Forbidden):
            with other.lease("portal"):
                pass
