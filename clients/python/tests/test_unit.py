"""Pure functions (no broker): WWW-Authenticate rules, problem mapping, proxy and identity
options, cookie jars, environment defaults, and no secret in any repr or message."""

from __future__ import annotations

import email.utils
import http.cookiejar
import json
import time

import pytest

import authkeeper
from authkeeper.challenge import parse_challenges, should_refresh
from authkeeper.cookies import cookie_jar, jar_cookies
from authkeeper.errors import error_from_response, parse_retry_after
from authkeeper.playwright import context_options, identity_options, proxy_settings


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (401, ['Bearer realm="x", error="invalid_token", error_description="expired"'], True),
        (401, [], True),
        (401, ['Bearer realm="x"'], True),
        (401, ['Basic realm="x"'], True),
        (401, ['Bearer error="insufficient_scope", scope="admin"'], False),
        (401, ['Bearer error="invalid_request"'], False),
        (401, ['Basic realm="x", Bearer error=insufficient_scope'], False),
        (401, ['DPoP error="invalid_token"'], True),
        (403, [], False),
        (403, ['Bearer error="invalid_token"'], False),
        (200, [], False),
        (500, [], False),
    ],
)
def test_should_refresh(status: int, headers: list, expected: bool) -> None:
    assert should_refresh(status, headers) is expected


def test_parse_challenges() -> None:
    parsed = parse_challenges(r'Basic realm="x", Bearer error=invalid_token, Negotiate abc123==')
    assert [c.scheme for c in parsed] == ["Basic", "Bearer", "Negotiate"]
    assert parsed[1].params == {"error": "invalid_token"}
    assert parsed[2].token68 == "abc123=="
    escaped = parse_challenges(r'Bearer error_description="say \"hi\"", ERROR="invalid_token"')
    assert escaped[0].params == {"error_description": 'say "hi"', "error": "invalid_token"}
    assert parse_challenges('Bearer error="unterminated')[0].params["error"] == "unterminated"
    assert parse_challenges("") == []


def _problem(slug: str, status: int, **extra: object) -> bytes:
    return json.dumps(
        {
            "type": f"urn:authkeeper:problem:{slug}",
            "title": slug.title(),
            "status": status,
            "detail": "d",
            **extra,
        }
    ).encode()


def test_problem_mapping() -> None:
    cases = {
        ("needs-reauth", 409): authkeeper.NeedsReauth,
        ("unavailable", 503): authkeeper.Unavailable,
        ("forbidden", 403): authkeeper.Forbidden,
        ("unauthorized", 401): authkeeper.Unauthorized,
        ("no-session-available", 503): authkeeper.NoSessionAvailable,
        ("lease-lost", 409): authkeeper.LeaseLost,
        ("unknown-lease", 404): authkeeper.UnknownLease,
        ("invalid-request", 400): authkeeper.InvalidRequest,
        ("configuration", 502): authkeeper.BrokerError,
    }
    for (slug, status), cls in cases.items():
        error = error_from_response(status, {"retry-after": "7"}, _problem(slug, status))
        assert type(error) is cls, slug
        assert error.status == status and error.slug == slug and error.detail == "d"
    reauth = error_from_response(
        409, {}, _problem("needs-reauth", 409, login_hint="authkeeper login crm", credential="crm")
    )
    assert isinstance(reauth, authkeeper.NeedsReauth)
    assert reauth.login_hint == "authkeeper login crm" and reauth.credential == "crm"
    unavailable = error_from_response(503, {"retry-after": "7"}, _problem("unavailable", 503))
    assert isinstance(unavailable, authkeeper.Unavailable) and unavailable.retry_after == 7.0
    plain = error_from_response(502, {}, b"<html>proxy error with a cookie=abc</html>")
    assert type(plain) is authkeeper.BrokerError and plain.type == "about:blank"
    assert "cookie=abc" not in str(plain) and plain.status == 502


def test_retry_after() -> None:
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    value = parse_retry_after(later)
    assert value is not None and 25 <= value <= 31


def test_proxy_settings() -> None:
    assert proxy_settings(None) is None
    assert proxy_settings("http://10.0.0.5:3128") == {"server": "http://10.0.0.5:3128"}
    assert proxy_settings("socks5://us%40er:p%3Ass@proxy.example:1080") == {
        "server": "socks5://proxy.example:1080",
        "username": "us@er",
        "password": "p:ss",
    }
    assert proxy_settings("http://u:p@[::1]:8080")["server"] == "http://[::1]:8080"  # type: ignore[index]
    assert proxy_settings("10.0.0.5:3128") == {"server": "http://10.0.0.5:3128"}


def test_identity_and_context_options() -> None:
    identity = {
        "userAgent": "UA",
        "locale": "en-US",
        "timezoneId": "Europe/Paris",
        "viewport": {"width": 1366, "height": 768},
        "extraHTTPHeaders": {"Accept-Language": "en-US"},
        "platform": "Linux",  # not a newContext option: skipped
    }
    assert identity_options(identity) == {
        "user_agent": "UA",
        "locale": "en-US",
        "timezone_id": "Europe/Paris",
        "viewport": {"width": 1366, "height": 768},
        "extra_http_headers": {"Accept-Language": "en-US"},
    }
    options = context_options({"cookies": [], "origins": []}, "http://u:p@h:1", None)
    assert options == {"proxy": {"server": "http://h:1", "username": "u", "password": "p"},
                       "storage_state": {"cookies": [], "origins": []}}  # fmt: skip


def test_cookie_jar_round_trip() -> None:
    state = {
        "cookies": [
            {
                "name": "a",
                "value": "1",
                "domain": "example.com",
                "path": "/",
                "expires": -1,
                "httpOnly": True,
                "secure": True,
                "sameSite": "Strict",
            },
            {
                "name": "b",
                "value": "2",
                "domain": ".example.com",
                "path": "/app",
                "expires": 4102444800,
                "httpOnly": False,
                "secure": False,
                "sameSite": "Lax",
            },
        ],  # fmt: skip
        "origins": [],
    }
    jar = cookie_jar(state)
    assert isinstance(jar, http.cookiejar.CookieJar) and len(jar) == 2
    by_name = {c.name: c for c in jar}
    assert not by_name["a"].domain_specified and by_name["a"].secure and by_name["a"].expires is None
    assert by_name["b"].domain_specified and by_name["b"].expires == 4102444800
    assert sorted(jar_cookies(jar), key=lambda c: c["name"]) == state["cookies"]


def test_client_defaults_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHKEEPER_URL", "http://127.0.0.1:1/")
    monkeypatch.setenv("AUTHKEEPER_API_KEY", "ak_secret-key-value")
    client = authkeeper.Client()
    assert client.url == "http://127.0.0.1:1"
    assert "ak_secret" not in repr(client) and "api_key=set" in repr(client)
    assert authkeeper.Client("unix:/run/ak.sock", "k")._unix_socket == "/run/ak.sock"
    monkeypatch.delenv("AUTHKEEPER_URL")
    with pytest.raises(authkeeper.AuthkeeperError, match="AUTHKEEPER_URL"):
        authkeeper.Client()


def test_no_secret_in_reprs() -> None:
    token = authkeeper.Token.from_json(
        {
            "access_token": "tok-SECRET",
            "token_type": "Bearer",
            "expires_at": "2030-01-01T00:00:00.000Z",
            "generation": 3,
        }
    )
    assert "tok-SECRET" not in repr(token) and "tok-SECRET" not in str(token)
    assert token.authorization == "Bearer tok-SECRET"
    assert token.expires_at.year == 2030 and token.generation == 3
    auth = authkeeper.AuthkeeperAuth("crm", client=authkeeper.Client("http://h", "ak_KEY-SECRET"))
    assert "KEY-SECRET" not in repr(auth)
