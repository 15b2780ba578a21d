"""authkeeper — the Python client of the authkeeper broker.

Workers never hold a credential: they ask the broker for a token, report a refused one, save
their progress, and lease logged-in browser sessions.

.. code-block:: python

    import authkeeper, requests

    auth = authkeeper.AuthkeeperAuth("crm")          # AUTHKEEPER_URL, AUTHKEEPER_API_KEY
    requests.get("https://api.example.com/me", auth=auth)

    client = authkeeper.Client()
    with client.lease("portal") as lease:            # a logged-in browser session
        context = lease.new_context(browser)         # Playwright, with its state, proxy, identity
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .checkpoint import Checkpoint
from .client import Client
from .errors import (
    AuthkeeperError,
    Blocked,
    BrokerError,
    Forbidden,
    InvalidRequest,
    LeaseLost,
    LeaseOutcome,
    LoggedOut,
    NeedsReauth,
    NoSessionAvailable,
    TransportError,
    Unauthorized,
    Unavailable,
    UnknownLease,
)
from .lease import Lease, LeaseScope
from .models import CheckpointSaved, ReleaseSummary, StorageState, Token
from .tokens import DEFAULT_MIN_TTL, TokenSource

if TYPE_CHECKING:  # pragma: no cover
    from .auth import AuthkeeperAuth

__version__ = "0.1.0"

__all__ = [
    "AuthkeeperAuth",
    "AuthkeeperError",
    "Blocked",
    "BrokerError",
    "Checkpoint",
    "CheckpointSaved",
    "Client",
    "DEFAULT_MIN_TTL",
    "Forbidden",
    "InvalidRequest",
    "Lease",
    "LeaseLost",
    "LeaseOutcome",
    "LeaseScope",
    "LoggedOut",
    "NeedsReauth",
    "NoSessionAvailable",
    "ReleaseSummary",
    "StorageState",
    "Token",
    "TokenSource",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "UnknownLease",
]


def __getattr__(name: str) -> Any:
    # AuthkeeperAuth imports requests (when installed): load it on first use only.
    if name == "AuthkeeperAuth":
        from .auth import AuthkeeperAuth

        return AuthkeeperAuth
    raise AttributeError(f"module 'authkeeper' has no attribute {name!r}")
