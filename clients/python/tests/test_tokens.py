"""The token API against the real broker: tokens, rejected reports, long polls, and every error
mapped to its exception type."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

import authkeeper
from _stack import Stack


def test_token_and_rejected(client: authkeeper.Client) -> None:
    token = client.token("api")
    assert token.access_token and token.token_type.lower() == "bearer"
    assert token.generation >= 1
    assert 0 < token.expires_in <= 2.5
    assert token.access_token not in repr(token)
    fresh = client.rejected("api", token.generation)
    assert fresh.generation > token.generation
    # A stale report gets the current token without another refresh.
    again = client.rejected("api", token.generation)
    assert again.generation >= fresh.generation


def test_min_ttl(client: authkeeper.Client) -> None:
    assert client.token("api", min_ttl=1).expires_in > 0.9
    with pytest.raises(authkeeper.InvalidRequest) as caught:
        client.token("api", min_ttl=60)  # not shorter than the 2-second lifetime
    assert caught.value.status == 400
    assert "min_ttl" in caught.value.detail


def test_async_token_and_rejected(client: authkeeper.Client) -> None:
    async def run() -> None:
        token = await client.token_async("api")
        fresh = await client.rejected_async("api", token.generation)
        assert fresh.generation > token.generation
        await client.aclose()

    asyncio.run(run())
    # A second event loop gets its own connection pool.
    assert asyncio.run(client.token_async("api")).generation >= 1


def test_forbidden_and_unknown_credentials(stack: Stack, client: authkeeper.Client) -> None:
    for name in ("secret", "no-such-credential"):
        with pytest.raises(authkeeper.Forbidden) as caught:
            client.token(name)
        assert caught.value.status == 403
        assert caught.value.type == "urn:authkeeper:problem:forbidden"
    with authkeeper.Client(stack.url, stack.keys["other"]) as other:
        assert other.token("secret").generation >= 1
        with pytest.raises(authkeeper.Forbidden):
            other.token("api")


def test_unauthorized(stack: Stack) -> None:
    for key in ("ak_not-a-key", ""):
        with authkeeper.Client(stack.url, key) as bad:
            with pytest.raises(authkeeper.Unauthorized) as caught:
                bad.token("api")
            assert caught.value.status == 401
            assert key not in str(caught.value) or not key


def test_needs_reauth_and_wait_for_reauth(stack: Stack, client: authkeeper.Client) -> None:
    stack.revoke("reauth")
    deadline = time.monotonic() + 10
    while True:  # the cached token stays valid until it expires (at most 2 s)
        try:
            client.token("reauth")
        except authkeeper.NeedsReauth as error:
            caught = error
            break
        assert time.monotonic() < deadline, "the revoked grant never surfaced as needs-reauth"
        time.sleep(0.2)
    assert caught.status == 409
    assert caught.login_hint == "authkeeper login reauth"
    assert caught.credential == "reauth"
    assert client.status("reauth")["state"] == "needs_reauth"

    with pytest.raises(authkeeper.NeedsReauth):
        client.wait_for_reauth("reauth", timeout=1.5)

    threading.Timer(1.0, stack.import_grant, args=("reauth",)).start()
    started = time.monotonic()
    token = client.wait_for_reauth("reauth", timeout=20)
    assert 0.5 < time.monotonic() - started < 15
    assert client.status("reauth")["state"] == "valid"
    assert token.generation == client.token("reauth").generation


def test_unavailable_carries_retry_after(stack: Stack, client: authkeeper.Client) -> None:
    idp = stack.idps["faulty"]
    idp.knobs(fault_503_rate=1.0, retry_after_secs=7)
    try:
        deadline = time.monotonic() + 10
        while True:  # once the cached token expires, refreshing fails transiently
            try:
                client.token("flaky")
            except authkeeper.Unavailable as error:
                caught = error
                break
            assert time.monotonic() < deadline, "the failing IdP never surfaced as unavailable"
            time.sleep(0.2)
        assert caught.status == 503
        assert caught.retry_after is not None and 0 < caught.retry_after <= 8
        assert caught.next_attempt_at
        with pytest.raises(authkeeper.Unavailable):
            asyncio.run(client.token_async("flaky"))
    finally:
        idp.knobs(fault_503_rate=0.0, retry_after_secs=None)


def test_transport_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with authkeeper.Client(f"http://127.0.0.1:{port}", "ak_x", timeout=2) as nowhere:
        with pytest.raises(authkeeper.TransportError):
            nowhere.token("api")


def test_errors_are_authkeeper_errors() -> None:
    for cls in (
        authkeeper.NeedsReauth,
        authkeeper.Unavailable,
        authkeeper.Forbidden,
        authkeeper.Unauthorized,
        authkeeper.NoSessionAvailable,
        authkeeper.LeaseLost,
        authkeeper.BrokerError,
        authkeeper.TransportError,
        authkeeper.Blocked,
        authkeeper.LoggedOut,
    ):
        assert issubclass(cls, authkeeper.AuthkeeperError)
