"""Checkpoints against the real broker: save, load, clear, sync and async, permissions."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import authkeeper
from authkeeper.checkpoint import task_from_env


def test_save_load_clear(client: authkeeper.Client) -> None:
    checkpoint = client.checkpoint(f"w.crawl-{uuid.uuid4().hex[:8]}")
    assert checkpoint.load() is None
    assert checkpoint.load(default={"step": 0}) == {"step": 0}
    first = checkpoint.save({"step": 3, "cursor": "p-3"})
    assert first.version == 1 and first.task == checkpoint.task
    second = checkpoint.save({"step": 4, "cursor": "p-4", "done": [1, 2, 3, 4]})
    assert second.version == 2
    assert checkpoint.load() == {"step": 4, "cursor": "p-4", "done": [1, 2, 3, 4]}
    assert checkpoint.clear() is True
    assert checkpoint.load() is None
    assert checkpoint.clear() is False


def test_async_and_any_json(client: authkeeper.Client) -> None:
    checkpoint = client.checkpoint("w.async")

    async def run() -> None:
        await checkpoint.save_async([1, "two", None, {"three": 3.5}])
        assert await checkpoint.load_async() == [1, "two", None, {"three": 3.5}]
        assert await checkpoint.clear_async() is True
        assert await checkpoint.load_async("nothing") == "nothing"
        await client.aclose()

    asyncio.run(run())


def test_tasks_the_key_may_use(client: authkeeper.Client) -> None:
    client.checkpoint("shared-task").save({"ok": True})  # listed in the key's checkpoints
    assert client.checkpoint("shared-task").clear()
    client.checkpoint("w").save(1)  # the task named like the client
    assert client.checkpoint("w").clear()
    with pytest.raises(authkeeper.Forbidden):
        client.checkpoint("someone-else").save({})
    with pytest.raises(authkeeper.Forbidden):
        client.checkpoint("wx").load()


def test_task_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHKEEPER_CHECKPOINT_URL", "http://127.0.0.1:1/v1/checkpoints/crm.nightly")
    assert task_from_env() == "crm.nightly"
    monkeypatch.delenv("AUTHKEEPER_CHECKPOINT_URL")
    with pytest.raises(authkeeper.AuthkeeperError):
        task_from_env()
