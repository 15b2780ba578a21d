"""Exceptions raised by the authkeeper client, and the mapping from the broker's RFC 9457
``application/problem+json`` answers to them.

Every exception is an :class:`AuthkeeperError`. Answers of the broker become a
:class:`BrokerError` subclass chosen by the problem ``type``
(``urn:authkeeper:problem:<slug>``); a broker that cannot be reached is a :class:`TransportError`.
:class:`Blocked` and :class:`LoggedOut` are raised by *your* code inside a lease to release it
with that outcome.

Messages carry the broker's ``detail`` (which never holds a secret) and never a token, a cookie
or a client key.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any, Dict, Mapping, Optional, Type

PROBLEM_PREFIX = "urn:authkeeper:problem:"

__all__ = [
    "AuthkeeperError",
    "TransportError",
    "BrokerError",
    "NeedsReauth",
    "Unavailable",
    "Forbidden",
    "Unauthorized",
    "InvalidRequest",
    "NoSessionAvailable",
    "LeaseLost",
    "UnknownLease",
    "LeaseOutcome",
    "Blocked",
    "LoggedOut",
    "error_from_response",
    "parse_retry_after",
]


class AuthkeeperError(Exception):
    """Base class of every exception of this package."""


class TransportError(AuthkeeperError):
    """The broker could not be reached or did not answer in time (the cause is chained)."""


class BrokerError(AuthkeeperError):
    """The broker answered with an error.

    Attributes:
        type: the problem type, e.g. ``urn:authkeeper:problem:configuration`` (``about:blank``
            when the answer was not problem+json).
        status: the HTTP status.
        title: the problem's fixed title.
        detail: what went wrong this time (never a secret).
        credential: the credential concerned, when the broker named one.
        problem: the whole problem document as answered.
    """

    def __init__(
        self,
        detail: str,
        *,
        type: str = "about:blank",
        status: int = 0,
        title: str = "",
        credential: Optional[str] = None,
        problem: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__(detail)
        self.type = type
        self.status = status
        self.title = title
        self.detail = detail
        self.credential = credential
        self.problem: Dict[str, Any] = dict(problem or {})

    @property
    def slug(self) -> str:
        """The problem type without its ``urn:authkeeper:problem:`` prefix."""
        return self.type[len(PROBLEM_PREFIX) :] if self.type.startswith(PROBLEM_PREFIX) else self.type

    def __str__(self) -> str:
        prefix = f"{self.title} ({self.status})" if self.title else f"HTTP {self.status}"
        return f"{prefix}: {self.detail}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(type={self.type!r}, status={self.status}, detail={self.detail!r})"


class NeedsReauth(BrokerError):
    """The credential's grant is dead: a human must log in again (``authkeeper login NAME``) or
    import new tokens. ``login_hint`` says what to run."""

    @property
    def login_hint(self) -> Optional[str]:
        """What a human should run, e.g. ``authkeeper login crm``."""
        hint = self.problem.get("login_hint")
        return hint if isinstance(hint, str) else None


class _RetryAfter(BrokerError):
    """A problem that says when to try again (``Retry-After``)."""

    def __init__(self, detail: str, *, retry_after: Optional[float] = None, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        #: Seconds to wait before trying again, from the ``Retry-After`` header (None if absent).
        self.retry_after = retry_after


class Unavailable(_RetryAfter):
    """Refreshing failed transiently (provider down, rate-limited): retry after ``retry_after``
    seconds. Also raised for the store being unavailable, the broker not being ready yet, and a
    request timing out at the broker."""

    @property
    def next_attempt_at(self) -> Optional[str]:
        """When the broker tries the provider again (RFC 3339), when it said."""
        value = self.problem.get("next_attempt_at")
        return value if isinstance(value, str) else None


class Forbidden(BrokerError):
    """The client key may not use this credential, site or checkpoint (or it does not exist:
    the broker answers both the same way)."""


class Unauthorized(BrokerError):
    """No client key was sent, or the broker does not know it (``AUTHKEEPER_API_KEY``)."""


class InvalidRequest(BrokerError):
    """The broker refused a malformed request (name, parameter or body), e.g. a ``min_ttl`` not
    shorter than the token's lifetime."""


class NoSessionAvailable(_RetryAfter):
    """Every session of the site is leased; ``retry_after`` is when the soonest lease ends."""


class LeaseLost(BrokerError):
    """The session lease expired and was reclaimed (or was already released): the storage state
    sent with it was not stored."""


class UnknownLease(BrokerError):
    """The broker knows no such lease."""


class LeaseOutcome(AuthkeeperError):
    """Raise a subclass inside a lease block to release the session with that outcome."""

    outcome = "error"


class Blocked(LeaseOutcome):
    """Raise inside a lease block when the site blocked this session (captcha, ban, 429 wall):
    the lease is released with outcome ``blocked`` (which retires the session at the default
    pool policy). The exception propagates after the release."""

    outcome = "blocked"


class LoggedOut(LeaseOutcome):
    """Raise inside a lease block when the session turned out to be logged out: the lease is
    released with outcome ``logged_out`` (the session is retired or logged in again). The
    exception propagates after the release."""

    outcome = "logged_out"


_BY_SLUG: Dict[str, Type[BrokerError]] = {
    "needs-reauth": NeedsReauth,
    "unavailable": Unavailable,
    "store-unavailable": Unavailable,
    "not-ready": Unavailable,
    "timeout": Unavailable,
    "forbidden": Forbidden,
    "unknown-credential": Forbidden,
    "unauthorized": Unauthorized,
    "invalid-request": InvalidRequest,
    "no-session-available": NoSessionAvailable,
    "lease-lost": LeaseLost,
    "unknown-lease": UnknownLease,
}


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date (never negative)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, parsed.timestamp() - (time.time() if now is None else now))


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> BrokerError:
    """The exception for an error answer of the broker (``headers`` case-insensitive)."""
    problem: Dict[str, Any] = {}
    try:
        decoded = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError):
        decoded = None
    if isinstance(decoded, dict) and isinstance(decoded.get("type"), str):
        problem = decoded
    problem_type = str(problem.get("type", "about:blank"))
    # A non-problem answer (e.g. from a proxy in between) is summarised by its status only: its
    # body is not ours to repeat.
    detail = str(problem.get("detail") or f"the broker answered HTTP {status}")
    credential = problem.get("credential")
    kwargs: Dict[str, Any] = dict(
        type=problem_type,
        status=status,
        title=str(problem.get("title", "")),
        credential=credential if isinstance(credential, str) else None,
        problem=problem,
    )
    slug = problem_type[len(PROBLEM_PREFIX) :] if problem_type.startswith(PROBLEM_PREFIX) else ""
    cls = _BY_SLUG.get(slug, BrokerError)
    if issubclass(cls, _RetryAfter):
        return cls(detail, retry_after=parse_retry_after(headers.get("retry-after")), **kwargs)
    return cls(detail, **kwargs)
