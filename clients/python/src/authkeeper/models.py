"""Values the broker answers: tokens, release summaries, saved checkpoints.

Secret fields (the access token) are left out of every ``repr``.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

__all__ = ["Token", "ReleaseSummary", "CheckpointSaved", "StorageState", "parse_time"]

#: A Playwright ``storageState`` document: ``{"cookies": [...], "origins": [...]}``.
StorageState = Dict[str, Any]


def parse_time(value: str) -> _dt.datetime:
    """An RFC 3339 timestamp as the broker writes it (``2025-01-01T12:00:00.000Z``), aware UTC."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = _dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


@dataclass(frozen=True)
class Token:
    """An access token handed out by the broker.

    Attributes:
        access_token: the bearer token (never printed by ``repr``; do not log it).
        token_type: as the provider said, usually ``Bearer``.
        expires_at: when it expires (aware UTC).
        generation: which token set it belongs to; report it with
            :meth:`authkeeper.Client.rejected` when an API answers 401.
    """

    access_token: str = field(repr=False)
    token_type: str
    expires_at: _dt.datetime
    generation: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Token:
        """Builds a token from the broker's JSON answer."""
        return cls(
            access_token=str(data["access_token"]),
            token_type=str(data.get("token_type") or "Bearer"),
            expires_at=parse_time(str(data["expires_at"])),
            generation=int(data["generation"]),
        )

    @property
    def expires_in(self) -> float:
        """Seconds until it expires (negative once expired)."""
        return (self.expires_at - _now()).total_seconds()

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value: ``Bearer <token>``."""
        return f"Bearer {self.access_token}"


@dataclass(frozen=True)
class ReleaseSummary:
    """What the broker did with a released session (pool policy applied)."""

    session_id: str
    state: str
    reason: Optional[str]
    error_score: float
    usage_count: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReleaseSummary:
        """Builds a summary from the broker's JSON answer."""
        reason = data.get("reason")
        return cls(
            session_id=str(data["session_id"]),
            state=str(data["state"]),
            reason=reason if isinstance(reason, str) else None,
            error_score=float(data.get("error_score", 0.0)),
            usage_count=int(data.get("usage_count", 0)),
        )


@dataclass(frozen=True)
class CheckpointSaved:
    """Where a saved checkpoint landed: its task, version (bumped by every save) and time."""

    task: str
    version: int
    updated_at: _dt.datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckpointSaved:
        """Builds the answer of a save."""
        return cls(
            task=str(data["task"]),
            version=int(data["version"]),
            updated_at=parse_time(str(data["updated_at"])),
        )


def session_list(data: Any) -> List[Dict[str, Any]]:
    """The ``sessions`` array of ``GET /v1/sessions`` (metadata only)."""
    if isinstance(data, dict) and isinstance(data.get("sessions"), list):
        return [s for s in data["sessions"] if isinstance(s, dict)]
    return []
