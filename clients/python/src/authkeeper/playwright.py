"""Playwright ``new_context`` options for a leased session: its storage state, its proxy (split
into Playwright's ``server`` / ``username`` / ``password``) and its identity (user agent, locale,
timezone, viewport, extra headers). No import of Playwright: these are plain dicts, and
:meth:`authkeeper.lease.Lease.new_context` passes them to whatever browser it is given.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = [
    "proxy_settings",
    "identity_options",
    "context_options",
    "session_storage_script",
    "merge_session_storage",
    "READ_SESSION_STORAGE",
]

#: The sessionStorage key that marks a tab already restored (never sent back).
_RESTORED_MARK = "__authkeeper_restored"

#: A page function answering ``[location.origin, [[key, value], ...]]`` (the marker left out).
READ_SESSION_STORAGE = (
    "() => [location.origin, Object.entries(sessionStorage).filter(([k]) => k !== '" + _RESTORED_MARK + "')]"
)

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


def _session_by_origin(storage_state: Optional[Mapping[str, Any]]) -> Dict[str, List[List[str]]]:
    by_origin: Dict[str, List[List[str]]] = {}
    for origin in (storage_state or {}).get("origins", []) or []:
        entries = origin.get("sessionStorage") or []
        if entries:
            by_origin[str(origin.get("origin"))] = [[str(e["name"]), str(e["value"])] for e in entries]
    return by_origin


def session_storage_script(storage_state: Optional[Mapping[str, Any]]) -> Optional[str]:
    """An init script that writes the state's sessionStorage (authkeeper's ``sessionStorage``
    key: Playwright's storageState has none) into each new tab of its origin, once; ``None``
    when the state has no sessionStorage."""
    by_origin = _session_by_origin(storage_state)
    if not by_origin:
        return None
    mark = json.dumps(_RESTORED_MARK)
    return (
        f"(() => {{ const byOrigin = {json.dumps(by_origin)}; const entries = byOrigin[location.origin];"
        f" if (!entries || sessionStorage.getItem({mark})) return;"
        " for (const [k, v] of entries) sessionStorage.setItem(k, v);"
        f" sessionStorage.setItem({mark}, '1'); }})()"
    )


def merge_session_storage(
    captured: Mapping[str, Any],
    seen: Mapping[str, List[List[str]]],
    original: Optional[Mapping[str, Any]],
) -> Dict[str, Any]:
    """``captured`` (a Playwright storageState) with sessionStorage: what open pages showed
    (``seen``: origin -> entries), else what the lease started with."""
    by_origin = _session_by_origin(original)
    by_origin.update({origin: [list(e) for e in entries] for origin, entries in seen.items()})
    state = dict(captured)
    origins = [dict(o) for o in state.get("origins", []) or []]
    present = {str(o.get("origin")) for o in origins}
    for origin in origins:
        entries = by_origin.get(str(origin.get("origin")))
        if entries:
            origin["sessionStorage"] = [{"name": k, "value": v} for k, v in entries]
    for name, entries in by_origin.items():
        if name not in present and entries:
            session = [{"name": k, "value": v} for k, v in entries]
            origins.append({"origin": name, "localStorage": [], "sessionStorage": session})
    state["origins"] = origins
    return state
