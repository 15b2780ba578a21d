"""The broker client: one connection pool per process (``httpx.Client``) and one per event loop
(``httpx.AsyncClient``), the token API, checkpoints and session leases.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union

import httpx

from . import _calls
from ._calls import Call
from .errors import AuthkeeperError, NeedsReauth, TransportError
from .models import Token, session_list

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import Checkpoint
    from .lease import LeaseScope

__all__ = ["Client", "DEFAULT_TIMEOUT"]

log = logging.getLogger("authkeeper")

#: Seconds one request to the broker may take (the broker's own ``request_timeout`` is 30 s).
DEFAULT_TIMEOUT = 35.0

_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=128)


def _resolve_endpoint(url: Optional[str], unix_socket: Optional[str]) -> tuple[str, Optional[str]]:
    url = url or os.environ.get("AUTHKEEPER_URL") or None
    if url and url.startswith("unix:"):
        unix_socket, url = url[len("unix:") :], None
    if unix_socket and not url:
        url = "http://authkeeper"
    if not url:
        raise AuthkeeperError("no broker URL: pass url= or set AUTHKEEPER_URL (authkeeper exec sets it)")
    return url.rstrip("/"), unix_socket


def _wait_seconds(remaining: float) -> int:
    """The ``wait=`` of one long poll: what is left, in whole seconds, at most 300."""
    return max(0, min(_calls.MAX_WAIT, int(remaining)))


def _pause_before_next_poll(started: float, deadline: float) -> Optional[float]:
    """None when the wait is over; else how long to pause before polling again (a broker that
    answered at once is not polled in a tight loop)."""
    now = time.monotonic()
    if deadline - now < 1.0:
        return None
    return 1.0 if now - started < 1.0 else 0.0


class Client:
    """A client of an authkeeper broker (``authkeeper serve`` or the private broker of
    ``authkeeper exec``).

    Args:
        url: the broker's base URL, e.g. ``http://127.0.0.1:7878`` (or ``unix:/path/broker.sock``);
            default ``AUTHKEEPER_URL``.
        api_key: the client key (``ak_...``); default ``AUTHKEEPER_API_KEY``.
        timeout: seconds one request may take (a long poll with ``wait=`` gets that much more).
        unix_socket: talk to a broker listening on this Unix socket.

    One instance is meant to be shared by every thread and every task of a process: it keeps
    one pool of keep-alive connections (and one per asyncio event loop for the ``*_async``
    methods). Use it as a context manager, or call :meth:`close` / :meth:`aclose`.

    The client key is never part of ``repr`` or of any message.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        unix_socket: Optional[str] = None,
    ) -> None:
        self.url, self._unix_socket = _resolve_endpoint(url, unix_socket)
        key = api_key if api_key is not None else os.environ.get("AUTHKEEPER_API_KEY")
        self._headers: Dict[str, str] = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout = float(timeout)
        self._sync: Optional[httpx.Client] = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Client(url={self.url!r}, api_key={'set' if self._headers else 'unset'})"

    # --- connection pools ---------------------------------------------------------------

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._sync is None:
                transport = httpx.HTTPTransport(uds=self._unix_socket) if self._unix_socket else None
                self._sync = httpx.Client(
                    base_url=self.url,
                    headers=self._headers,
                    timeout=self.timeout,
                    limits=_LIMITS,
                    transport=transport,
                    trust_env=False,
                )
            return self._sync

    def _ahttp(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async.get(loop)
            if client is None:
                transport = httpx.AsyncHTTPTransport(uds=self._unix_socket) if self._unix_socket else None
                client = httpx.AsyncClient(
                    base_url=self.url,
                    headers=self._headers,
                    timeout=self.timeout,
                    limits=_LIMITS,
                    transport=transport,
                    trust_env=False,
                )
                self._async[loop] = client
            return client

    def close(self) -> None:
        """Closes the sync connection pool (async pools: :meth:`aclose`)."""
        with self._lock:
            sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()

    async def aclose(self) -> None:
        """Closes the connection pool of the running event loop, and the sync one."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async.pop(loop, None)
        if client is not None:
            await client.aclose()
        self.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- one call, sync or async ----------------------------------------------------------

    def _timeout(self, call: Call) -> float:
        return self.timeout + call.extra_timeout

    def call(self, call: Call) -> Any:
        """Sends one request to the broker and decodes its answer (see :mod:`authkeeper._calls`)."""
        try:
            response = self._http().request(
                call.method, call.path, timeout=self._timeout(call), **call.request_kwargs()
            )
        except httpx.HTTPError as error:
            raise TransportError(
                f"the broker at {self.url} did not answer: {type(error).__name__}"
            ) from error
        return _calls.decode(call, response)

    async def call_async(self, call: Call) -> Any:
        """The async twin of :meth:`call`."""
        try:
            response = await self._ahttp().request(
                call.method, call.path, timeout=self._timeout(call), **call.request_kwargs()
            )
        except httpx.HTTPError as error:
            raise TransportError(
                f"the broker at {self.url} did not answer: {type(error).__name__}"
            ) from error
        return _calls.decode(call, response)

    # --- tokens ---------------------------------------------------------------------------

    def token(self, name: str, min_ttl: Optional[float] = None, wait: Optional[float] = None) -> Token:
        """A valid access token of credential ``name``.

        Args:
            min_ttl: seconds the token must still be valid (the broker refreshes first if
                needed); must be shorter than the token's lifetime or the broker answers
                :class:`~authkeeper.InvalidRequest`.
            wait: when the credential needs re-authentication, block up to this many seconds
                (at most 300) for someone to log in again, then answer the new token.

        Raises:
            NeedsReauth, Unavailable, Forbidden, Unauthorized, InvalidRequest, TransportError.
        """
        return Token.from_json(self.call(_calls.token_call(name, min_ttl, wait)))

    async def token_async(
        self, name: str, min_ttl: Optional[float] = None, wait: Optional[float] = None
    ) -> Token:
        """The async twin of :meth:`token`."""
        return Token.from_json(await self.call_async(_calls.token_call(name, min_ttl, wait)))

    def rejected(self, name: str, generation: int) -> Token:
        """Reports that an API refused the token of ``generation`` (a 401 ``invalid_token``) and
        answers a newer token. The broker refreshes only if that generation is still current, so
        any number of workers may report the same 401."""
        return Token.from_json(self.call(_calls.rejected_call(name, generation)))

    async def rejected_async(self, name: str, generation: int) -> Token:
        """The async twin of :meth:`rejected`."""
        return Token.from_json(await self.call_async(_calls.rejected_call(name, generation)))

    def wait_for_reauth(self, name: str, timeout: float) -> Token:
        """Waits up to ``timeout`` seconds for credential ``name`` to be usable again (someone ran
        ``authkeeper login`` or ``import``), long-polling the broker, and answers its token.

        Raises:
            NeedsReauth: still not re-authenticated after ``timeout`` seconds.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            started = time.monotonic()
            try:
                return self.token(name, wait=_wait_seconds(deadline - started))
            except NeedsReauth:
                pause = _pause_before_next_poll(started, deadline)
                if pause is None:
                    raise
                time.sleep(pause)

    async def wait_for_reauth_async(self, name: str, timeout: float) -> Token:
        """The async twin of :meth:`wait_for_reauth`."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            started = time.monotonic()
            try:
                return await self.token_async(name, wait=_wait_seconds(deadline - started))
            except NeedsReauth:
                pause = _pause_before_next_poll(started, deadline)
                if pause is None:
                    raise
                await asyncio.sleep(pause)

    def status(self, name: str) -> Dict[str, Any]:
        """The credential's status (state, generation, expiry, failures...; never a secret)."""
        result: Dict[str, Any] = self.call(_calls.status_call(name))
        return result

    # --- checkpoints and sessions -----------------------------------------------------------

    def checkpoint(self, task: Optional[str] = None) -> Checkpoint:
        """The saved progress of ``task`` (default: the task of ``AUTHKEEPER_CHECKPOINT_URL``,
        which ``authkeeper exec`` sets)."""
        from .checkpoint import Checkpoint, task_from_env

        return Checkpoint(self, task if task is not None else task_from_env())

    def lease(
        self, site: str, account: Optional[str] = None, ttl: Optional[Union[int, float]] = None
    ) -> LeaseScope:
        """Leases a logged-in browser session of ``site`` for a ``with`` / ``async with`` block.

        The session is held while the block runs (heartbeats at a third of the lease TTL) and
        released when it ends: ``ok`` on a normal exit, ``blocked`` / ``logged_out`` when the
        block raises :class:`~authkeeper.Blocked` / :class:`~authkeeper.LoggedOut`, ``error`` on
        any other exception (which then propagates). See :class:`authkeeper.lease.Lease`.

        Args:
            account: only a session of this account.
            ttl: lease TTL in seconds (default: the site's ``lease_ttl``).
        """
        from .lease import LeaseScope

        return LeaseScope(self, site, account, None if ttl is None else max(1, int(ttl)))

    def sessions(self, site: Optional[str] = None) -> List[Dict[str, Any]]:
        """Metadata of the sessions this key may see (never a cookie)."""
        return session_list(self.call(_calls.sessions_call(site)))

    async def sessions_async(self, site: Optional[str] = None) -> List[Dict[str, Any]]:
        """The async twin of :meth:`sessions`."""
        return session_list(await self.call_async(_calls.sessions_call(site)))
