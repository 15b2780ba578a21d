"""``authkeeper mcp`` (stdio) and the broker's ``/mcp`` (streamable HTTP) driven by the official MCP
Python SDK as an agent would: APIs through the injecting proxy without ever seeing a token, a
browser session lease, checkpoints, and needs-reauth as a tool error naming the login."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

mcp = pytest.importorskip("mcp", reason="the MCP Python SDK needs Python >= 3.10")

import anyio  # noqa: E402
import httpx2  # noqa: E402
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

import authkeeper  # noqa: E402
from _stack import Stack  # noqa: E402

TOOLS = {
    "call_api",
    "credential_status",
    "wait_for_reauth",
    "lease_session",
    "renew_session",
    "release_session",
    "save_checkpoint",
    "load_checkpoint",
}


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def value_of(result: Any) -> Dict[str, Any]:
    assert not result.is_error, text_of(result)
    value: Dict[str, Any] = json.loads(text_of(result))
    return value


def current_token(stack: Stack, credential: str) -> str:
    """The credential's access token, as a worker with the ``token`` permission sees it."""
    with authkeeper.Client(stack.url, stack.keys["w"]) as client:
        return client.token(credential).access_token


def stdio_params(authkeeper_bin: str, stack: Stack) -> StdioServerParameters:
    return StdioServerParameters(
        command=authkeeper_bin,
        args=["mcp"],
        env={
            "AUTHKEEPER_URL": stack.url,
            "AUTHKEEPER_API_KEY": stack.keys["agent"],
            "AUTHKEEPER_CHECKPOINT_URL": f"{stack.url}/v1/checkpoints/agent.research",
            "AUTHKEEPER_LOG": "warn",
        },
    )


async def exercise(session: ClientSession, stack: Stack, seen: List[str]) -> None:
    """The agent's tour of the tools; every result's text is appended to ``seen``."""

    async def call(name: str, arguments: Dict[str, Any]) -> Any:
        result = await session.call_tool(name, arguments)
        seen.append(text_of(result))
        return result

    await session.initialize()
    tools = {tool.name for tool in (await session.list_tools()).tools}
    assert TOOLS <= tools, tools

    answer = value_of(
        await call("call_api", {"credential": "mcp", "path": "/api/items?page=2", "method": "GET"})
    )
    assert answer["status"] == 200, answer
    assert answer["body"]["ok"] is True and answer["body"]["path"] == "/api/items"
    posted = value_of(
        await call(
            "call_api", {"credential": "mcp", "path": "/api/notes", "method": "POST", "body": {"n": 1}}
        )
    )
    assert posted["body"]["method"] == "POST" and posted["body"]["body_len"] == len('{"n":1}')

    refused = await call(
        "call_api", {"credential": "mcp", "path": "/api/x", "headers": {"Authorization": "Bearer mine"}}
    )
    assert refused.is_error and "may not be set" in text_of(refused)
    forbidden = await call("call_api", {"credential": "secret", "path": "/api/x"})
    assert forbidden.is_error and "forbidden" in text_of(forbidden)

    status = value_of(await call("credential_status", {"credential": "mcp"}))
    assert status["state"] == "valid", status

    saved = value_of(await call("save_checkpoint", {"data": {"done": 3, "cursor": "p-3"}}))
    assert saved["version"] >= 1, saved
    loaded = value_of(await call("load_checkpoint", {}))
    assert loaded["found"] is True and loaded["data"] == {"done": 3, "cursor": "p-3"}


def test_stdio_agent_uses_apis_sessions_and_checkpoints(authkeeper_bin: str, stack: Stack) -> None:
    seen: List[str] = []

    async def run() -> None:
        async with stdio_client(stdio_params(authkeeper_bin, stack), errlog=sys.stderr) as (read, write):
            async with ClientSession(read, write) as session:
                await exercise(session, stack, seen)
                # A browser session: the storage state goes to a private file for the agent's
                # browser tool, never into the conversation.
                leased = await session.call_tool("lease_session", {"site": "portal", "account": "mcp-agent"})
                seen.append(text_of(leased))
                lease = value_of(leased)
                path = Path(lease["storage_state_path"])
                assert oct(path.stat().st_mode & 0o777) == "0o600"
                state = json.loads(path.read_text())
                assert state["cookies"][0]["value"] == "sid-mcp-agent"
                assert "sid-mcp-agent" not in text_of(leased)
                renewed = value_of(
                    await session.call_tool(
                        "renew_session", {"lease_id": lease["lease_id"], "ttl_seconds": 60}
                    )
                )
                assert "lease_expires_at" in renewed, renewed
                state["cookies"][0]["value"] = "sid-mcp-agent-2"
                path.write_text(json.dumps(state))
                released = await session.call_tool("release_session", {"lease_id": lease["lease_id"]})
                seen.append(text_of(released))
                assert not released.is_error, text_of(released)
                assert not path.exists(), "the state file is removed at release"

    anyio.run(run)
    token = current_token(stack, "mcp")
    assert all(token not in text for text in seen), "a token reached the model"
    assert all("sid-mcp-agent" not in text for text in seen), "a cookie value reached the model"
    # The session kept the cookie the agent's work earned.
    with authkeeper.Client(stack.url, stack.keys["w"]) as client:
        with client.lease("portal", account="mcp-agent") as lease:
            assert lease.storage_state["cookies"][0]["value"] == "sid-mcp-agent-2"


def test_needs_reauth_is_a_tool_error_naming_the_login(authkeeper_bin: str, stack: Stack) -> None:
    stack.revoke("mcp-reauth")

    async def run() -> str:
        async with stdio_client(stdio_params(authkeeper_bin, stack), errlog=sys.stderr) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                deadline = time.monotonic() + 20
                while True:
                    result = await session.call_tool(
                        "call_api", {"credential": "mcp-reauth", "path": "/api/me"}
                    )
                    if result.is_error:
                        return text_of(result)
                    assert time.monotonic() < deadline, "the revoked grant never surfaced"
                    await anyio.sleep(0.5)

    text = anyio.run(run)
    assert "needs-reauth" in text and "authkeeper login mcp-reauth" in text, text
    stack.import_grant("mcp-reauth")


def test_streamable_http_on_the_broker(stack: Stack) -> None:
    seen: List[str] = []

    async def run() -> None:
        headers = {"Authorization": f"Bearer {stack.keys['agent']}"}
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http:
            async with streamable_http_client(f"{stack.url}/mcp", http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    answer = value_of(
                        await session.call_tool("call_api", {"credential": "mcp", "path": "/api/me"})
                    )
                    seen.append(json.dumps(answer))
                    assert answer["status"] == 200 and answer["body"]["ok"] is True
                    saved = value_of(
                        await session.call_tool("save_checkpoint", {"task": "agent.http", "data": [1, 2]})
                    )
                    assert saved["version"] >= 1
                    loaded = value_of(await session.call_tool("load_checkpoint", {"task": "agent.http"}))
                    assert loaded["data"] == [1, 2]

    anyio.run(run)
    assert all(current_token(stack, "mcp") not in text for text in seen)
    # Without a client key the MCP endpoint answers 401, like every protected route.
    anonymous = httpx2.post(
        f"{stack.url}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={"accept": "application/json, text/event-stream"},
    )
    assert anonymous.status_code == 401


def test_a_missing_key_is_a_clear_error(authkeeper_bin: str) -> None:
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHKEEPER_")}
    out = subprocess.run(
        [authkeeper_bin, "mcp", "--url", "http://127.0.0.1:9"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 2 and "AUTHKEEPER_API_KEY" in out.stderr, out.stderr
