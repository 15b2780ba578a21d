"""Playwright ``storageState`` cookies as a standard-library cookie jar, for HTTP-only workers
(``requests`` and ``httpx`` both take an ``http.cookiejar.CookieJar``), and back.

Domain semantics follow Playwright: a domain starting with ``.`` is a domain cookie (sent to
subdomains), any other is host-only. ``expires`` is seconds since the epoch, ``-1`` for a session
cookie.
"""

from __future__ import annotations

import http.cookiejar
from typing import Any, Dict, Iterable, List, Mapping

__all__ = ["cookie_jar", "jar_cookies"]


def _cookie(data: Mapping[str, Any]) -> http.cookiejar.Cookie:
    domain = str(data.get("domain", ""))
    expires_raw = data.get("expires", -1)
    expires = int(expires_raw) if isinstance(expires_raw, (int, float)) and expires_raw >= 0 else None
    rest: Dict[str, Any] = {}
    if data.get("httpOnly"):
        rest["HttpOnly"] = None
    same_site = data.get("sameSite")
    if isinstance(same_site, str):
        rest["SameSite"] = same_site
    return http.cookiejar.Cookie(
        version=0,
        name=str(data["name"]),
        value=str(data.get("value", "")),
        port=None,
        port_specified=False,
        domain=domain,
        domain_specified=domain.startswith("."),
        domain_initial_dot=domain.startswith("."),
        path=str(data.get("path") or "/"),
        path_specified=True,
        secure=bool(data.get("secure", False)),
        expires=expires,
        discard=expires is None,
        comment=None,
        comment_url=None,
        rest=rest,
        rfc2109=False,
    )


def cookie_jar(storage_state: Mapping[str, Any]) -> http.cookiejar.CookieJar:
    """A jar holding every cookie of a Playwright storage state (expired ones are dropped when
    the jar is used, as usual)."""
    jar = http.cookiejar.CookieJar()
    cookies = storage_state.get("cookies") or []
    for data in cookies:
        if isinstance(data, Mapping) and "name" in data:
            jar.set_cookie(_cookie(data))
    return jar


def jar_cookies(jar: Iterable[http.cookiejar.Cookie]) -> List[Dict[str, Any]]:
    """The cookies of a jar as Playwright storage-state cookies (to send back on release)."""
    cookies: List[Dict[str, Any]] = []
    for cookie in jar:
        rest = getattr(cookie, "_rest", {})
        lowered = {str(k).lower(): v for k, v in rest.items()}
        same_site = lowered.get("samesite")
        cookies.append(
            {
                "name": cookie.name,
                "value": cookie.value or "",
                "domain": cookie.domain,
                "path": cookie.path or "/",
                "expires": float(cookie.expires) if cookie.expires is not None else -1,
                "httpOnly": "httponly" in lowered,
                "secure": bool(cookie.secure),
                "sameSite": same_site if same_site in ("Strict", "Lax", "None") else "Lax",
            }
        )
    return cookies
