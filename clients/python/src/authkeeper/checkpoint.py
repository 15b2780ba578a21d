"""A task's saved progress, sealed in the broker's store (``/v1/checkpoints/{task}``): a worker
that has to stop (e.g. on :class:`~authkeeper.NeedsReauth`) saves, and the next one resumes.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from . import _calls
from .errors import AuthkeeperError
from .models import CheckpointSaved

if TYPE_CHECKING:  # pragma: no cover
    from .client import Client

__all__ = ["Checkpoint", "task_from_env"]


def task_from_env() -> str:
    """The task named by ``AUTHKEEPER_CHECKPOINT_URL`` (``.../v1/checkpoints/{task}``)."""
    url = os.environ.get("AUTHKEEPER_CHECKPOINT_URL", "")
    marker = "/v1/checkpoints/"
    path = urlsplit(url).path
    if marker not in path:
        raise AuthkeeperError(
            "no checkpoint task: pass one, or run under `authkeeper exec` (AUTHKEEPER_CHECKPOINT_URL)"
        )
    return unquote(path.rsplit(marker, 1)[1])


class Checkpoint:
    """The checkpoint of one task: any JSON-serialisable document.

    A client key may use the task named like its client, tasks starting with its client name
    and ``.``, ``-`` or ``_``, and the tasks in its ``checkpoints`` list.
    """

    def __init__(self, client: Client, task: str) -> None:
        self._client = client
        self.task = task

    def __repr__(self) -> str:
        return f"Checkpoint(task={self.task!r})"

    def load(self, default: Any = None) -> Any:
        """The saved document, or ``default`` when nothing is saved."""
        found = self._client.call(_calls.checkpoint_call("GET", self.task))
        return default if found is _calls.MISSING else found

    async def load_async(self, default: Any = None) -> Any:
        """The async twin of :meth:`load`."""
        found = await self._client.call_async(_calls.checkpoint_call("GET", self.task))
        return default if found is _calls.MISSING else found

    def save(self, document: Any) -> CheckpointSaved:
        """Replaces the saved document (at most the broker's ``max_body``, 64 KiB by default)."""
        return CheckpointSaved.from_json(
            self._client.call(_calls.checkpoint_call("PUT", self.task, document))
        )

    async def save_async(self, document: Any) -> CheckpointSaved:
        """The async twin of :meth:`save`."""
        return CheckpointSaved.from_json(
            await self._client.call_async(_calls.checkpoint_call("PUT", self.task, document))
        )

    def clear(self) -> bool:
        """Forgets the saved document (the task is done); False when nothing was saved."""
        return self._client.call(_calls.checkpoint_call("DELETE", self.task)) is not _calls.MISSING

    async def clear_async(self) -> bool:
        """The async twin of :meth:`clear`."""
        found = await self._client.call_async(_calls.checkpoint_call("DELETE", self.task))
        return found is not _calls.MISSING
