"""``TokenSource``: the tokens of one credential for request-signing integrations
(:class:`~authkeeper.AuthkeeperAuth`, the Scrapy middleware), with the default ``min_ttl`` and
its fallback, and the report of a refused token.
"""

from __future__ import annotations

import logging
import threading
from typing import Optional

from .client import Client
from .errors import InvalidRequest
from .models import Token

__all__ = ["TokenSource", "DEFAULT_MIN_TTL"]

log = logging.getLogger("authkeeper")

#: Seconds a token must still be valid when it is attached to a request, so that it does not
#: expire in flight: long enough for a slow request, short next to common lifetimes (5 min to
#: 1 h, where it is 0.3 %-3 % and never makes the broker refresh earlier than its own 80 %
#: schedule). For shorter lifetimes the broker refuses it (400) and the token is asked for
#: without ``min_ttl`` from then on; the 401 retry covers the rest.
DEFAULT_MIN_TTL = 10.0


class TokenSource:
    """Tokens of ``credential`` from ``client``, at least ``min_ttl`` seconds from expiry.

    Safe to share between threads and tasks.
    """

    def __init__(self, credential: str, client: Client, min_ttl: Optional[float] = DEFAULT_MIN_TTL) -> None:
        self.credential = credential
        self.client = client
        self.min_ttl = min_ttl
        self._min_ttl_refused = False
        self._lock = threading.Lock()
        self._retried = 0

    def __repr__(self) -> str:
        return f"TokenSource(credential={self.credential!r}, min_ttl={self.min_ttl!r})"

    @property
    def retried(self) -> int:
        """How many refused tokens were reported (each followed by one retry)."""
        return self._retried

    def _min_ttl_param(self) -> Optional[float]:
        return None if self._min_ttl_refused else self.min_ttl

    def _note_refused(self, error: InvalidRequest) -> None:
        # The broker refuses a min_ttl that is not shorter than the token's lifetime: this
        # credential's tokens live too briefly for it, so stop asking for it.
        self._min_ttl_refused = True
        log.info(
            "authkeeper: %s: min_ttl=%s refused (%s); asking without it",
            self.credential,
            self.min_ttl,
            error.detail,
        )

    def token(self) -> Token:
        """A token for the next request."""
        min_ttl = self._min_ttl_param()
        if min_ttl is not None:
            try:
                return self.client.token(self.credential, min_ttl=min_ttl)
            except InvalidRequest as error:
                self._note_refused(error)
        return self.client.token(self.credential)

    async def token_async(self) -> Token:
        """The async twin of :meth:`token`."""
        min_ttl = self._min_ttl_param()
        if min_ttl is not None:
            try:
                return await self.client.token_async(self.credential, min_ttl=min_ttl)
            except InvalidRequest as error:
                self._note_refused(error)
        return await self.client.token_async(self.credential)

    def _count(self) -> None:
        with self._lock:
            self._retried += 1

    def rejected(self, generation: int) -> Token:
        """Reports that an API refused the token of ``generation``; answers the newer token to
        retry with."""
        fresh = self.client.rejected(self.credential, generation)
        self._count()
        return fresh

    async def rejected_async(self, generation: int) -> Token:
        """The async twin of :meth:`rejected`."""
        fresh = await self.client.rejected_async(self.credential, generation)
        self._count()
        return fresh
