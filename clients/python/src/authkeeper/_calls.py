"""The broker's HTTP API as plain request descriptions and answer decoding (no I/O), so that the
sync and async halves of :class:`authkeeper.Client` share every rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional
from urllib.parse import quote

import httpx

from .errors import BrokerError, error_from_response

#: The longest ``wait`` the broker accepts (seconds).
MAX_WAIT = 300


class _Missing:
    """Marker for "the broker has nothing saved" (a 404 on a checkpoint)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Call:
    """One request to the broker."""

    method: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    has_body: bool = False
    #: Seconds added to the client's timeout (a long poll with ``wait=``).
    extra_timeout: float = 0.0
    #: A 404 answers :data:`MISSING` instead of raising.
    missing_ok: bool = False

    def request_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments for ``httpx.Client.request`` (without the timeout)."""
        kwargs: Dict[str, Any] = {"params": dict(self.params)} if self.params else {}
        if self.has_body:
            kwargs["json"] = self.json
        return kwargs


def _segment(name: str) -> str:
    return quote(name, safe="")


def token_call(name: str, min_ttl: Optional[float], wait: Optional[float]) -> Call:
    """``GET /v1/credentials/{name}/token?min_ttl=&wait=``."""
    params: Dict[str, str] = {}
    if min_ttl is not None:
        params["min_ttl"] = str(max(0, int(min_ttl)))
    extra = 0.0
    if wait is not None:
        seconds = max(0, min(MAX_WAIT, int(wait)))
        params["wait"] = str(seconds)
        extra = float(seconds)
    return Call("GET", f"/v1/credentials/{_segment(name)}/token", params, extra_timeout=extra)


def rejected_call(name: str, generation: int) -> Call:
    """``POST /v1/credentials/{name}/rejected {"generation": N}``."""
    return Call(
        "POST",
        f"/v1/credentials/{_segment(name)}/rejected",
        json={"generation": int(generation)},
        has_body=True,
    )


def status_call(name: str) -> Call:
    """``GET /v1/credentials/{name}``."""
    return Call("GET", f"/v1/credentials/{_segment(name)}")


def checkpoint_call(method: str, task: str, document: Any = None) -> Call:
    """``GET``/``PUT``/``DELETE /v1/checkpoints/{task}``."""
    return Call(
        method,
        f"/v1/checkpoints/{_segment(task)}",
        json=document,
        has_body=method == "PUT",
        missing_ok=method in ("GET", "DELETE"),
    )


def lease_call(site: str, account: Optional[str], ttl: Optional[int]) -> Call:
    """``POST /v1/sessions/{site}/lease {"account"?, "lease_ttl"?}``."""
    body: Dict[str, Any] = {}
    if account is not None:
        body["account"] = account
    if ttl is not None:
        body["lease_ttl"] = int(ttl)
    return Call("POST", f"/v1/sessions/{_segment(site)}/lease", json=body, has_body=True)


def heartbeat_call(lease_id: str, ttl: Optional[int]) -> Call:
    """``POST /v1/leases/{id}/heartbeat {"lease_ttl"?}``."""
    body = {"lease_ttl": int(ttl)} if ttl is not None else {}
    return Call("POST", f"/v1/leases/{_segment(lease_id)}/heartbeat", json=body, has_body=True)


def release_call(lease_id: str, outcome: str, storage_state: Optional[Mapping[str, Any]]) -> Call:
    """``POST /v1/leases/{id}/release {"outcome", "storage_state"?}``."""
    body: Dict[str, Any] = {"outcome": outcome}
    if storage_state is not None:
        body["storage_state"] = storage_state
    return Call("POST", f"/v1/leases/{_segment(lease_id)}/release", json=body, has_body=True)


def sessions_call(site: Optional[str]) -> Call:
    """``GET /v1/sessions?site=``."""
    return Call("GET", "/v1/sessions", {"site": site} if site is not None else {})


def decode(call: Call, response: httpx.Response) -> Any:
    """The JSON of a successful answer (None for an empty one), :data:`MISSING` for a 404 the
    call allows, or the mapped :class:`~authkeeper.errors.BrokerError`."""
    status = response.status_code
    if call.missing_ok and status == 404:
        return MISSING
    if status >= 400:
        raise error_from_response(status, response.headers, response.content)
    if status == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise BrokerError("the broker answered something that is not JSON", status=status) from None
