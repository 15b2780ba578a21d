"""Playwright ``new_context`` options for a leased session: its storage state, its proxy (split
into Playwright's ``server`` / ``username`` / ``password``) and its identity (user agent, locale,
timezone, viewport, extra headers). No import of Playwright: these are plain dicts, and
:meth:`authkeeper.lease.Lease.new_context` passes them to whatever browser it is given.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["proxy_settings", "identity_options", "context_options"]

#: Identity keys (Playwright ``newContext`` options, camelCase as the broker answers them) and
#: their Python Playwright keyword names.
_IDENTITY_KEYS = {
    "userAgent": "user_agent",
    "locale": "locale",
    "timezoneId": "timezone_id",
    "viewport": "viewport",
    "extraHTTPHeaders": "extra_http_headers",
    "geolocation": "geolocation",
    "deviceScaleFactor": "device_scale_factor",
    "isMobile": "is_mobile",
    "hasTouch": "has_touch",
    "colorScheme": "color_scheme",
}


def proxy_settings(proxy: Optional[str]) -> Optional[Dict[str, str]]:
    """Playwright proxy settings for a proxy URL such as ``http://user:pass@10.0.0.5:3128``:
    ``{"server": "http://10.0.0.5:3128", "username": "user", "password": "pass"}`` (user and
    password percent-decoded, left out when absent)."""
    if not proxy:
        return None
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    settings = {"server": urlunsplit((parts.scheme, netloc, "", "", ""))}
    if parts.username is not None:
        settings["username"] = unquote(parts.username)
    if parts.password is not None:
        settings["password"] = unquote(parts.password)
    return settings


def identity_options(identity: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Python Playwright keyword arguments for an identity (unknown keys are skipped)."""
    if not identity:
        return {}
    options: Dict[str, Any] = {}
    for key, value in identity.items():
        name = _IDENTITY_KEYS.get(key)
        if name is not None and value is not None:
            options[name] = dict(value) if isinstance(value, Mapping) else value
    return options


def context_options(
    storage_state: Optional[Mapping[str, Any]],
    proxy: Optional[str],
    identity: Optional[Mapping[str, Any]],
) -> Dict[str, Any]:
    """Keyword arguments for ``browser.new_context(...)``: identity, proxy and storage state."""
    options = identity_options(identity)
    settings = proxy_settings(proxy)
    if settings is not None:
        options["proxy"] = settings
    if storage_state is not None:
        options["storage_state"] = dict(storage_state)
    return options
