"""Browser-session leases: ``with client.lease("portal") as lease:`` (or ``async with``).

Entering leases one logged-in session of the site (``POST /v1/sessions/{site}/lease``); while
the block runs a heartbeat (a thread, or a task under ``async with``) renews the lease every
third of its TTL; leaving releases it (``POST /v1/leases/{id}/release``) with an outcome and,
for ``ok`` and ``error``, the session's updated storage state:

========================================  ==============  ===================================
the block                                 outcome         storage state sent back
========================================  ==============  ===================================
ends normally                             ``ok`` (or what  ``lease.storage_state`` if you set
                                          ``set_outcome``  it, else the state of the last
                                          chose)           context from ``new_context``
raises :class:`~authkeeper.Blocked`       ``blocked``     none
raises :class:`~authkeeper.LoggedOut`     ``logged_out``  none
raises any other ``Exception``            ``error``       as for ``ok``
is cancelled / interrupted                ``ok``          none (nothing is known to be wrong)
========================================  ==============  ===================================

Exceptions always propagate after the release. A lease the broker reclaimed (it expired
because heartbeats failed) raises :class:`~authkeeper.LeaseLost` on exit when the block itself
succeeded; ``lease.lost`` tells the block earlier, and ``lease.check()`` raises it.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import http.cookiejar
import inspect
import logging
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Mapping, Optional, Tuple, Type

from . import _calls
from .cookies import cookie_jar, jar_cookies
from .errors import AuthkeeperError, LeaseLost, LeaseOutcome, UnknownLease
from .models import ReleaseSummary, StorageState, parse_time
from .playwright import (
    READ_SESSION_STORAGE,
    context_options,
    merge_session_storage,
    session_storage_script,
)

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

__all__ = ["Lease", "LeaseScope", "OUTCOMES"]

log = logging.getLogger("authkeeper")

#: The outcomes a lease can be released with.
OUTCOMES = ("ok", "error", "blocked", "logged_out")

#: Heartbeat interval when the lease's TTL cannot be told (clocks far apart).
_FALLBACK_INTERVAL = 10.0


class Lease:
    """One leased browser session, as the ``with`` block sees it.

    Attributes:
        lease_id, session_id, site, account: what the broker leased.
        proxy: the proxy URL the session must always use (may hold credentials), or None.
        identity: Playwright ``newContext`` options fixed for the session (user agent, locale,
            timezone, viewport, extra headers), or None when the broker sends none.
        expires_at: when the lease ends unless renewed (moved by every heartbeat).
        heartbeats: how many heartbeats the broker accepted.
        lost: True once the broker said the lease is no longer held.
        summary: after release, what the broker did with the session.
    """

    def __init__(self, client: Client, data: Mapping[str, Any], ttl: Optional[int]) -> None:
        self._client = client
        self.lease_id = str(data["lease_id"])
        self.session_id = str(data.get("session_id", ""))
        self.site = str(data.get("site", ""))
        self.account = str(data.get("account", ""))
        proxy = data.get("proxy")
        self.proxy: Optional[str] = proxy if isinstance(proxy, str) and proxy else None
        identity = data.get("identity")
        self.identity: Optional[Dict[str, Any]] = dict(identity) if isinstance(identity, Mapping) else None
        self.expires_at = parse_time(str(data["lease_expires_at"]))
        self.ttl = ttl
        state = data.get("storage_state")
        self._storage_state: StorageState = (
            dict(state) if isinstance(state, Mapping) else {"cookies": [], "origins": []}
        )
        self._state_set = False
        self._outcome: Optional[str] = None
        self._contexts: List[Tuple[Any, bool]] = []
        self._async_block = False
        self.heartbeats = 0
        self.lost = False
        self.summary: Optional[ReleaseSummary] = None

    def __repr__(self) -> str:
        return (
            f"Lease(site={self.site!r}, session_id={self.session_id!r}, "
            f"has_proxy={self.proxy is not None}, expires_at={self.expires_at.isoformat()!r}, "
            f"lost={self.lost})"
        )

    # --- what the block uses --------------------------------------------------------------

    @property
    def storage_state(self) -> StorageState:
        """The session's Playwright storage state. Assign a new one to have it stored on release."""
        return self._storage_state

    @storage_state.setter
    def storage_state(self, state: StorageState) -> None:
        self._storage_state = dict(state)
        self._state_set = True

    def set_outcome(self, outcome: str) -> None:
        """The outcome to release with when the block ends normally (default ``ok``): one of
        ``ok``, ``error``, ``blocked``, ``logged_out``. Raising :class:`~authkeeper.Blocked` or
        :class:`~authkeeper.LoggedOut` does the same and leaves the block."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}")
        self._outcome = outcome

    def check(self) -> None:
        """Raises :class:`~authkeeper.LeaseLost` once the broker reclaimed the lease."""
        if self.lost:
            raise LeaseLost(
                f"lease of session {self.session_id!r} of {self.site!r} is no longer held",
                type="urn:authkeeper:problem:lease-lost",
                status=409,
            )

    def cookie_jar(self) -> http.cookiejar.CookieJar:
        """The session's cookies as a jar for ``requests`` (``cookies=jar`` or
        ``session.cookies.update(jar)``) or ``httpx`` (``httpx.Client(cookies=jar)``).
        Send ``lease.proxy`` along, and hand the jar back with :meth:`update_cookies`."""
        return cookie_jar(self._storage_state)

    def update_cookies(self, jar: http.cookiejar.CookieJar) -> None:
        """Replaces the storage state's cookies with the jar's (localStorage kept): the new state
        is stored on release."""
        state = dict(self._storage_state)
        state["cookies"] = jar_cookies(jar)
        self.storage_state = state

    def new_context(self, browser: Any, **kwargs: Any) -> Any:
        """A Playwright browser context with this session: its storage state, its proxy and its
        identity (``kwargs`` override). Works with the sync and the async Playwright API (then
        await it, inside ``async with``). The context's storage state is captured when the
        block ends and sent back on release, then the context is closed: keep it open until
        then, and do not use the session after the block."""
        options = context_options(self._storage_state, self.proxy, self.identity)
        options.update(kwargs)
        create = browser.new_context
        if inspect.iscoroutinefunction(create):
            if not self._async_block:
                raise TypeError("async Playwright needs `async with client.lease(...)`")
            return self._new_context_async(create, options)
        context = create(**options)
        script = session_storage_script(self._storage_state)
        if script is not None:
            context.add_init_script(script=script)
        self._contexts.append((context, False))
        return context

    async def _new_context_async(self, create: Callable[..., Awaitable[Any]], options: Dict[str, Any]) -> Any:
        context = await create(**options)
        script = session_storage_script(self._storage_state)
        if script is not None:
            await context.add_init_script(script=script)
        self._contexts.append((context, True))
        return context

    # --- heartbeat and release (used by LeaseScope) -----------------------------------------

    def _interval(self) -> float:
        remaining = (self.expires_at - _dt.datetime.now(_dt.timezone.utc)).total_seconds()
        ttl = float(self.ttl) if self.ttl is not None else remaining
        if ttl <= 0:
            return _FALLBACK_INTERVAL
        return max(0.2, ttl / 3.0)

    def _renewed(self, data: Any) -> None:
        self.heartbeats += 1
        if isinstance(data, Mapping) and isinstance(data.get("lease_expires_at"), str):
            self.expires_at = parse_time(data["lease_expires_at"])

    def _heartbeat_failed(self, error: AuthkeeperError) -> bool:
        """Records a failed heartbeat; True when it is worth trying again."""
        if isinstance(error, (LeaseLost, UnknownLease)):
            self.lost = True
            log.warning("authkeeper: lease of %s/%s lost: %s", self.site, self.session_id, error.detail)
            return False
        log.warning(
            "authkeeper: heartbeat of %s/%s failed (will retry): %s", self.site, self.session_id, error
        )
        return True

    def beat(self) -> bool:
        """Renews the lease now; False once it is lost."""
        try:
            self._renewed(self._client.call(_calls.heartbeat_call(self.lease_id, self.ttl)))
        except AuthkeeperError as error:
            return self._heartbeat_failed(error)
        return True

    async def beat_async(self) -> bool:
        """The async twin of :meth:`beat`."""
        try:
            self._renewed(await self._client.call_async(_calls.heartbeat_call(self.lease_id, self.ttl)))
        except AuthkeeperError as error:
            return self._heartbeat_failed(error)
        return True

    def _outcome_for(self, error: Optional[BaseException]) -> str:
        if error is None:
            return self._outcome or "ok"
        if isinstance(error, LeaseOutcome):
            return error.outcome
        return "error" if isinstance(error, Exception) else "ok"

    def _state_to_send(
        self, outcome: str, error: Optional[BaseException], captured: Optional[StorageState]
    ) -> Optional[StorageState]:
        if outcome not in ("ok", "error") or (error is not None and not isinstance(error, Exception)):
            return None
        if self._state_set:
            return self._storage_state
        return captured

    def _capture_sync(self) -> Optional[StorageState]:
        captured: Optional[StorageState] = None
        for context, is_async in self._contexts:
            if is_async:
                log.warning(
                    "authkeeper: an async Playwright context cannot be captured by a sync lease block"
                )
                continue
            try:
                captured = self._with_session_storage(_capture_state_sync(context), _read_pages_sync(context))
            except Exception as error:  # noqa: BLE001 - any Playwright (fork) error: e.g. closed
                log.warning(
                    "authkeeper: could not capture a context's storage state: %s", type(error).__name__
                )
            _close_quietly(context.close)
        return captured

    async def _capture_async(self) -> Optional[StorageState]:
        captured: Optional[StorageState] = None
        for context, is_async in self._contexts:
            try:
                if is_async:
                    state = await _capture_state_async(context)
                    captured = self._with_session_storage(state, await _read_pages_async(context))
                else:
                    state = _capture_state_sync(context)
                    captured = self._with_session_storage(state, _read_pages_sync(context))
            except Exception as error:  # noqa: BLE001 - any Playwright (fork) error: e.g. closed
                log.warning(
                    "authkeeper: could not capture a context's storage state: %s", type(error).__name__
                )
            if is_async:
                try:
                    await context.close()
                except Exception as error:  # noqa: BLE001 - already closed, or the browser is gone
                    log.debug("authkeeper: closing a context failed: %s", type(error).__name__)
            else:
                _close_quietly(context.close)
        return captured

    def _with_session_storage(self, captured: Any, seen: Dict[str, List[List[str]]]) -> StorageState:
        state: StorageState = merge_session_storage(captured, seen, self._storage_state)
        return state

    def _released(self, data: Any) -> None:
        self.summary = ReleaseSummary.from_json(data)

    def _release_failed(self, error: AuthkeeperError, block_error: Optional[BaseException]) -> None:
        if isinstance(error, (LeaseLost, UnknownLease)):
            self.lost = True
        if block_error is None:
            raise error
        log.warning(
            "authkeeper: release of %s/%s failed after the block raised %s: %s",
            self.site,
            self.session_id,
            type(block_error).__name__,
            error,
        )


def _close_quietly(close: Callable[[], Any]) -> None:
    try:
        close()
    except Exception as error:  # noqa: BLE001 - already closed, or the browser is gone
        log.debug("authkeeper: closing a context failed: %s", type(error).__name__)


class _ThreadHeartbeat:
    """Renews a lease from a daemon thread until stopped or lost."""

    def __init__(self, lease: Lease) -> None:
        self._lease = lease
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"authkeeper-heartbeat-{lease.session_id}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._lease._interval()):
            if not self._lease.beat():
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class _TaskHeartbeat:
    """Renews a lease from an asyncio task until cancelled or lost."""

    def __init__(self, lease: Lease) -> None:
        self._task = asyncio.ensure_future(self._run(lease))

    @staticmethod
    async def _run(lease: Lease) -> None:
        while True:
            await asyncio.sleep(lease._interval())
            if not await lease.beat_async():
                return

    async def stop(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


class LeaseScope:
    """What :meth:`authkeeper.Client.lease` returns: enter it with ``with`` or ``async with``
    to hold a :class:`Lease` for the block (once)."""

    def __init__(self, client: Client, site: str, account: Optional[str], ttl: Optional[int]) -> None:
        self._client = client
        self._site = site
        self._account = account
        self._ttl = ttl
        self._lease: Optional[Lease] = None
        self._thread: Optional[_ThreadHeartbeat] = None
        self._task: Optional[_TaskHeartbeat] = None

    def __repr__(self) -> str:
        return f"LeaseScope(site={self._site!r}, account={self._account!r}, ttl={self._ttl!r})"

    def _call(self) -> _calls.Call:
        if self._lease is not None:
            raise RuntimeError("a lease scope can be entered once")
        return _calls.lease_call(self._site, self._account, self._ttl)

    def __enter__(self) -> Lease:
        lease = Lease(self._client, self._client.call(self._call()), self._ttl)
        self._lease = lease
        self._thread = _ThreadHeartbeat(lease)
        return lease

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        lease = self._lease
        assert lease is not None and self._thread is not None
        self._thread.stop()
        outcome = lease._outcome_for(exc)
        captured = lease._capture_sync()
        state = lease._state_to_send(outcome, exc, captured)
        try:
            lease._released(self._client.call(_calls.release_call(lease.lease_id, outcome, state)))
        except AuthkeeperError as error:
            lease._release_failed(error, exc)

    async def __aenter__(self) -> Lease:
        data = await self._client.call_async(self._call())
        lease = Lease(self._client, data, self._ttl)
        lease._async_block = True
        self._lease = lease
        self._task = _TaskHeartbeat(lease)
        return lease

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        lease = self._lease
        assert lease is not None and self._task is not None
        await self._task.stop()
        outcome = lease._outcome_for(exc)
        captured = await lease._capture_async()
        state = lease._state_to_send(outcome, exc, captured)
        try:
            lease._released(
                await self._client.call_async(_calls.release_call(lease.lease_id, outcome, state))
            )
        except AuthkeeperError as error:
            lease._release_failed(error, exc)


def _capture_state_sync(context: Any) -> Any:
    """The context's storage state with IndexedDB (Playwright >= 1.51), else without."""
    try:
        return context.storage_state(indexed_db=True)
    except TypeError:
        return context.storage_state()


async def _capture_state_async(context: Any) -> Any:
    try:
        return await context.storage_state(indexed_db=True)
    except TypeError:
        return await context.storage_state()


def _read_pages_sync(context: Any) -> Dict[str, List[List[str]]]:
    """sessionStorage of the context's open pages, by origin (pages that cannot answer are
    skipped)."""
    seen: Dict[str, List[List[str]]] = {}
    for page in list(getattr(context, "pages", []) or []):
        try:
            origin, entries = page.evaluate(READ_SESSION_STORAGE)
        except Exception:  # noqa: BLE001, S110 - closed or navigating page: keep what we had
            continue
        if isinstance(origin, str) and origin.startswith("http"):
            seen[origin] = [list(e) for e in entries]
    return seen


async def _read_pages_async(context: Any) -> Dict[str, List[List[str]]]:
    seen: Dict[str, List[List[str]]] = {}
    for page in list(getattr(context, "pages", []) or []):
        try:
            origin, entries = await page.evaluate(READ_SESSION_STORAGE)
        except Exception:  # noqa: BLE001, S110 - closed or navigating page: keep what we had
            continue
        if isinstance(origin, str) and origin.startswith("http"):
            seen[origin] = [list(e) for e in entries]
    return seen
