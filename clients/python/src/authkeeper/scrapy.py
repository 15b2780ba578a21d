"""A Scrapy downloader middleware that signs requests with a broker token (the ``scrapy`` extra).

.. code-block:: python

    # settings.py
    DOWNLOADER_MIDDLEWARES = {"authkeeper.scrapy.AuthkeeperMiddleware": 560}
    AUTHKEEPER_CREDENTIAL = "crm"          # or per request: meta={"authkeeper_credential": "crm"}
    # AUTHKEEPER_URL / AUTHKEEPER_API_KEY: settings, else the environment variables
    # AUTHKEEPER_MIN_TTL = 10               # seconds; 0 turns it off

Each request gets ``Authorization: Bearer <token>``. When a response is a 401 that a new token
can fix (``invalid_token``, or no challenge), the token's generation is reported to the broker and
a copy of the request is scheduled once more (``dont_filter``; counted in the crawl stats as
``authkeeper/retried``); 403 and ``insufficient_scope`` pass through. The token is set in the
downloader, never on a scheduled request, so it does not reach a ``JOBDIR`` queue on disk.
Needs Scrapy >= 2.13 (coroutine middlewares on the asyncio reactor, Scrapy's default).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.http import Response

from .challenge import should_refresh
from .client import Client
from .tokens import DEFAULT_MIN_TTL, TokenSource

__all__ = ["AuthkeeperMiddleware"]

_CREDENTIAL = "authkeeper_credential"
_GENERATION = "authkeeper_generation"
_RETRIED = "authkeeper_retried"


class AuthkeeperMiddleware:
    """Scrapy downloader middleware: broker tokens on requests, one retry after a 401."""

    def __init__(
        self, client: Client, credential: Optional[str] = None, min_ttl: Optional[float] = DEFAULT_MIN_TTL
    ) -> None:
        self.client = client
        self.credential = credential
        self.min_ttl = min_ttl
        self._sources: Dict[str, TokenSource] = {}
        self._stats: Any = None

    @property
    def retried(self) -> int:
        """How many requests were scheduled again after a 401."""
        return sum(source.retried for source in self._sources.values())

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> AuthkeeperMiddleware:
        """Reads ``AUTHKEEPER_URL``, ``AUTHKEEPER_API_KEY``, ``AUTHKEEPER_CREDENTIAL`` and
        ``AUTHKEEPER_MIN_TTL`` from the settings (the first two default to the environment)."""
        settings = crawler.settings
        client = Client(
            url=settings.get("AUTHKEEPER_URL") or None,
            api_key=settings.get("AUTHKEEPER_API_KEY") or None,
        )
        min_ttl = settings.getfloat("AUTHKEEPER_MIN_TTL", DEFAULT_MIN_TTL)
        middleware = cls(client, settings.get("AUTHKEEPER_CREDENTIAL") or None, min_ttl or None)
        middleware._stats = crawler.stats
        crawler.signals.connect(middleware.spider_closed, signal=signals.spider_closed)
        return middleware

    def _source(self, credential: str) -> TokenSource:
        source = self._sources.get(credential)
        if source is None:
            source = self._sources[credential] = TokenSource(credential, self.client, self.min_ttl)
        return source

    def _credential(self, request: Request) -> Optional[str]:
        credential = request.meta.get(_CREDENTIAL, self.credential)
        return credential if isinstance(credential, str) and credential else None

    async def process_request(self, request: Request, spider: Any = None) -> None:
        """Sets the ``Authorization`` header from the broker."""
        credential = self._credential(request)
        if credential is None:
            return None
        token = await self._source(credential).token_async()
        request.headers["Authorization"] = token.authorization
        request.meta[_GENERATION] = token.generation
        return None

    async def process_response(self, request: Request, response: Response, spider: Any = None) -> Any:
        """Reports a refused token and schedules the request once more."""
        credential = self._credential(request)
        generation = request.meta.get(_GENERATION)
        if credential is None or not isinstance(generation, int) or request.meta.get(_RETRIED):
            return response
        challenges = [value.decode("latin-1") for value in response.headers.getlist("WWW-Authenticate")]
        if not should_refresh(response.status, challenges):
            return response
        await self._source(credential).rejected_async(generation)
        if self._stats is not None:
            self._stats.inc_value("authkeeper/retried")
        retry = request.replace(dont_filter=True)
        retry.meta[_RETRIED] = True
        retry.meta.pop(_GENERATION, None)
        # The fresh token is fetched again by process_request: never store one on a request
        # that goes back through the scheduler.
        retry.headers.pop("Authorization", None)
        return retry

    async def spider_closed(self, spider: Any = None) -> None:
        """Closes the broker connections."""
        await self.client.aclose()
