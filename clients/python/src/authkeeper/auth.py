"""``AuthkeeperAuth``: bearer tokens from the broker for ``requests`` and ``httpx`` (sync and async),
with the 401 → report → retry-once dance.

This module imports ``requests`` when it is installed (the ``requests`` extra) so that
``AuthkeeperAuth`` is a real ``requests.auth.AuthBase``; ``import authkeeper`` alone does not
import it (the name is loaded on first use).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, AsyncGenerator, Generator, Optional

import httpx

from .challenge import should_refresh
from .client import Client
from .models import Token
from .tokens import DEFAULT_MIN_TTL, TokenSource

try:
    from requests.auth import AuthBase as _RequestsAuthBase
except ImportError:  # requests is an optional extra: then this is plain httpx auth

    class _RequestsAuthBase:  # type: ignore[no-redef]
        """Stands in for ``requests.auth.AuthBase`` when requests is not installed."""


if TYPE_CHECKING:  # pragma: no cover
    import requests

__all__ = ["AuthkeeperAuth"]

log = logging.getLogger("authkeeper")

_UNREPLAYABLE = object()


class AuthkeeperAuth(httpx.Auth, _RequestsAuthBase):
    """Attaches ``Authorization: Bearer <token>`` for credential ``credential`` to every request.

    Works as ``requests`` auth (``requests.get(url, auth=AuthkeeperAuth("crm"))``) and as
    ``httpx`` auth for ``httpx.Client`` and ``httpx.AsyncClient``. When the API answers 401 and
    its ``WWW-Authenticate`` says ``invalid_token`` (or the 401 has no challenge), the token's
    generation is reported to the broker (``POST /v1/credentials/{name}/rejected``) and the
    request is sent once more with the newer token. A 403 or a 401 ``insufficient_scope`` is
    never retried. Request bodies are kept for the retry (httpx reads streams first; a requests
    body that is a one-shot iterator is not retried).

    Args:
        credential: the credential's name in the broker.
        client: the broker client (default: ``Client()`` from ``AUTHKEEPER_URL`` and
            ``AUTHKEEPER_API_KEY``).
        min_ttl: seconds the token must stay valid (default :data:`DEFAULT_MIN_TTL`; None: no
            minimum).

    One instance may be shared by any number of threads and tasks.
    """

    requires_request_body = True
    requires_response_body = False

    def __init__(
        self,
        credential: str,
        client: Optional[Client] = None,
        min_ttl: Optional[float] = DEFAULT_MIN_TTL,
    ) -> None:
        self.tokens = TokenSource(credential, client if client is not None else Client(), min_ttl)

    def __repr__(self) -> str:
        return f"AuthkeeperAuth(credential={self.credential!r}, client={self.client!r})"

    @property
    def credential(self) -> str:
        """The credential's name."""
        return self.tokens.credential

    @property
    def client(self) -> Client:
        """The broker client."""
        return self.tokens.client

    @property
    def retried(self) -> int:
        """How many requests were sent again after a 401 (each with a newer token)."""
        return self.tokens.retried

    # --- httpx ----------------------------------------------------------------------------

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.read()  # buffer a streamed body so that it can be sent twice
        token = self.tokens.token()
        request.headers["Authorization"] = token.authorization
        response = yield request
        if should_refresh(response.status_code, response.headers.get_list("www-authenticate")):
            request.headers["Authorization"] = self.tokens.rejected(token.generation).authorization
            yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.tokens.token_async()
        request.headers["Authorization"] = token.authorization
        response = yield request
        if should_refresh(response.status_code, response.headers.get_list("www-authenticate")):
            request.headers["Authorization"] = (
                await self.tokens.rejected_async(token.generation)
            ).authorization
            yield request

    # --- requests -------------------------------------------------------------------------

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self.tokens.token()
        r.headers["Authorization"] = token.authorization
        position = _body_position(r)

        def retry_once(response: requests.Response, **kwargs: Any) -> requests.Response:
            header = response.headers.get("www-authenticate")
            if not should_refresh(response.status_code, [header] if header else []):
                return response
            if position is _UNREPLAYABLE:
                log.warning(
                    "authkeeper: %s: 401 not retried: the request body cannot be replayed",
                    self.credential,
                )
                return response
            return self._resend(response, token, position, retry_once, kwargs)

        r.register_hook("response", retry_once)  # type: ignore[no-untyped-call]
        return r

    def _resend(
        self,
        response: requests.Response,
        token: Token,
        position: Any,
        hook: Any,
        send_kwargs: Any,
    ) -> requests.Response:
        from requests.cookies import extract_cookies_to_jar

        fresh = self.tokens.rejected(token.generation)
        original = response.request
        if position is not None and hasattr(original.body, "seek"):
            original.body.seek(position)  # type: ignore[union-attr]
        _ = response.content  # drain, so the connection can be reused
        response.close()
        again = original.copy()
        # The copy shares the hooks dict: give it its own, without this hook (one retry only).
        again.hooks = {event: [h for h in hooks if h is not hook] for event, hooks in original.hooks.items()}
        cookies = getattr(again, "_cookies", None)
        if cookies is not None:
            extract_cookies_to_jar(cookies, original, response.raw)  # type: ignore[no-untyped-call]
            again.prepare_cookies(cookies)
        again.headers["Authorization"] = fresh.authorization
        retried: requests.Response = response.connection.send(again, **send_kwargs)
        retried.history.append(response)
        retried.request = again
        return retried


def _body_position(r: requests.PreparedRequest) -> Any:
    """Where a file-like body starts (to rewind it for a retry), None for bytes/str/no body,
    or ``_UNREPLAYABLE`` for a one-shot iterator."""
    body = r.body
    if body is None or isinstance(body, (bytes, str)):
        return None
    tell = getattr(body, "tell", None)
    if tell is not None and hasattr(body, "seek"):
        try:
            return tell()
        except OSError:
            return _UNREPLAYABLE
    return _UNREPLAYABLE
