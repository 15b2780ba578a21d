"""AuthkeeperAuth with requests and httpx (sync and async): the token is attached, a 401 that a
new token can fix is reported and retried once with the body replayed, 403 and
``insufficient_scope`` are never retried."""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Iterator

import httpx
import pytest
import requests

import authkeeper
from _pages import PageServer


def _key() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def auth(client: authkeeper.Client) -> authkeeper.AuthkeeperAuth:
    return authkeeper.AuthkeeperAuth("retry", client=client)


def _assert_retried(pages: PageServer, path: str, body: bytes = b"") -> None:
    hits = pages.hits_for(path)
    assert len(hits) == 2, [h.method for h in hits]
    first, second = hits
    assert first.authorization and first.authorization.startswith("Bearer ")
    assert second.authorization and second.authorization != first.authorization
    assert first.body == second.body == body


def test_is_requests_and_httpx_auth(auth: authkeeper.AuthkeeperAuth) -> None:
    assert isinstance(auth, requests.auth.AuthBase)
    assert isinstance(auth, httpx.Auth)
    assert "Bearer" not in repr(auth)


def test_requests_retries_invalid_token_once_with_body(
    pages: PageServer, auth: authkeeper.AuthkeeperAuth
) -> None:
    path = f"/once401/{_key()}"
    response = requests.post(pages.origin + path, data=b"payload", auth=auth, timeout=10)
    assert response.status_code == 200
    assert response.json()["body_len"] == 7
    assert [r.status_code for r in response.history] == [401]
    assert auth.retried == 1
    _assert_retried(pages, path, b"payload")


def test_requests_rewinds_a_file_body(pages: PageServer, auth: authkeeper.AuthkeeperAuth) -> None:
    path = f"/once401/{_key()}"
    response = requests.put(pages.origin + path, data=io.BytesIO(b"file body"), auth=auth, timeout=10)
    assert response.status_code == 200
    _assert_retried(pages, path, b"file body")


def test_requests_retries_a_bare_401(pages: PageServer, auth: authkeeper.AuthkeeperAuth) -> None:
    path = f"/bare401/{_key()}"
    with requests.Session() as session:
        assert session.get(pages.origin + path, auth=auth, timeout=10).status_code == 200
    _assert_retried(pages, path)


def test_requests_never_retries_403_or_insufficient_scope(
    pages: PageServer, auth: authkeeper.AuthkeeperAuth
) -> None:
    before = {p: len(pages.hits_for(p)) for p in ("/forbidden", "/scope")}
    assert requests.get(pages.origin + "/forbidden", auth=auth, timeout=10).status_code == 403
    assert requests.get(pages.origin + "/scope", auth=auth, timeout=10).status_code == 401
    assert {p: len(pages.hits_for(p)) - before[p] for p in before} == {"/forbidden": 1, "/scope": 1}
    assert auth.retried == 0


def test_httpx_sync_retries_once(pages: PageServer, auth: authkeeper.AuthkeeperAuth) -> None:
    path = f"/once401/{_key()}"

    def chunks() -> Iterator[bytes]:
        yield b"streamed "
        yield b"body"

    with httpx.Client(auth=auth) as http:
        response = http.post(pages.origin + path, content=chunks())
        assert response.status_code == 200
        assert http.get(pages.origin + "/forbidden").status_code == 403
        assert http.get(pages.origin + "/scope").status_code == 401
    assert auth.retried == 1
    _assert_retried(pages, path, b"streamed body")


def test_httpx_async_retries_once(pages: PageServer, auth: authkeeper.AuthkeeperAuth) -> None:
    path = f"/once401/{_key()}"
    bare = f"/bare401/{_key()}"

    async def run() -> None:
        async with httpx.AsyncClient(auth=auth) as http:
            assert (await http.post(pages.origin + path, json={"a": 1})).status_code == 200
            assert (await http.get(pages.origin + bare)).status_code == 200
            assert (await http.get(pages.origin + "/forbidden")).status_code == 403
        await auth.client.aclose()

    asyncio.run(run())
    assert auth.retried == 2
    _assert_retried(pages, path, b'{"a":1}')
    _assert_retried(pages, bare)


def test_default_min_ttl_falls_back_for_short_lived_tokens(client: authkeeper.Client) -> None:
    auth = authkeeper.AuthkeeperAuth("retry", client=client)  # min_ttl 10 s > the 2 s lifetime
    assert auth.tokens.min_ttl == authkeeper.DEFAULT_MIN_TTL
    assert auth.tokens.token().generation >= 1
    assert auth.tokens._min_ttl_param() is None  # remembered: no second 400
    explicit = authkeeper.AuthkeeperAuth("retry", client=client, min_ttl=1)
    assert explicit.tokens.token().expires_in > 0.9
    assert explicit.tokens._min_ttl_param() == 1


def test_against_the_mock_api(stack: object, client: authkeeper.Client) -> None:
    api = f"{stack.idps['main'].url}/api/resource"  # type: ignore[attr-defined]
    auth = authkeeper.AuthkeeperAuth("api", client=client)
    response = requests.get(api, auth=auth, timeout=10)
    assert response.status_code == 200 and response.json()["ok"] is True
    # insufficient_scope on /api/admin: a 403 that must not be retried
    assert requests.get(api.replace("/resource", "/admin"), auth=auth, timeout=10).status_code == 403
    assert auth.retried == 0
