"""The examples in examples/python, run as a user would (subprocesses with the environment that
``authkeeper exec`` sets). scraper.py also runs as the thread half of test_storm.py."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

import authkeeper
from _pages import PageServer
from _stack import Stack

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "python"


def _run(args: List[str], env: Dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_scraper(stack: Stack, broker_env: Dict[str, str]) -> None:
    api = f"{stack.idps['main'].url}/api/resource"
    run = _run(
        [str(EXAMPLES / "scraper.py"), "--url", api, "--credential", "api", "--duration", "4"], broker_env
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "by 50 workers" in run.stdout and " 0 401s seen by workers" in run.stdout
    # and it fails loudly when workers do see 401s (a scope the token lacks):
    bad = _run(
        [
            str(EXAMPLES / "scraper.py"),
            "--url",
            api.replace("resource", "admin"),
            "--workers",
            "2",
            "--duration",
            "0.5",
        ],
        broker_env,
    )
    assert bad.returncode == 1


def test_agent_checkpoint_resumes_after_reauth(stack: Stack, broker_env: Dict[str, str]) -> None:
    api = f"{stack.idps['main'].url}/api"
    args = [str(EXAMPLES / "agent_checkpoint.py"), "--credential", "agent", "--task", "w.agent", "--url", api,
            "--steps", "15", "--step-delay", "0.05"]  # fmt: skip
    first = subprocess.Popen(
        [sys.executable, *args], env=broker_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert first.stdout is not None
    lines = []
    for line in first.stdout:
        lines.append(line.strip())
        if line.startswith("step 3 done"):
            stack.revoke("agent")  # the grant dies mid-run
    first.wait(timeout=60)
    output = "\n".join(lines)
    assert first.returncode == 3, output + (first.stderr.read() if first.stderr else "")
    assert "starting at step 0" in output
    assert "needs re-authentication (authkeeper login agent)" in output
    saved_at = int(output.rsplit("progress saved at step ", 1)[1].split()[0])
    assert 4 <= saved_at < 15
    with authkeeper.Client(stack.url, stack.keys["w"]) as client:
        assert client.checkpoint("w.agent").load()["step"] == saved_at

        stack.import_grant("agent")  # a human logs in again
        second = _run(args, broker_env)
        assert second.returncode == 0, second.stdout + second.stderr
        assert f"resuming at step {saved_at}" in second.stdout
        assert "step 0 done" not in second.stdout  # resumed, not restarted
        assert "done: 15 steps" in second.stdout
        assert client.checkpoint("w.agent").load() is None  # cleared when done


def test_agent_checkpoint_waits_for_reauth(stack: Stack, broker_env: Dict[str, str]) -> None:
    api = f"{stack.idps['main'].url}/api"
    stack.revoke("agent")
    time.sleep(2.2)  # the cached token expires
    args = [str(EXAMPLES / "agent_checkpoint.py"), "--credential", "agent", "--task", "w.agent-wait",
            "--url", api, "--steps", "3", "--wait", "30"]  # fmt: skip
    waiting = subprocess.Popen(
        [sys.executable, *args], env=broker_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert waiting.stdout is not None
    for line in waiting.stdout:
        if line.startswith("waiting up to"):
            stack.import_grant("agent")
            break
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, out + err
    assert "done: 3 steps" in out


def test_playwright_lease(stack: Stack, pages: PageServer, broker_env: Dict[str, str], chromium: str) -> None:
    pytest.importorskip("playwright")
    env = {**broker_env, "AUTHKEEPER_CHROMIUM": chromium}
    args = [str(EXAMPLES / "playwright_lease.py"), "--site", "portal", "--account", "example"]
    run = _run([*args, "--url", pages.origin + "/page"], env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "session example.0: 'portal': 'sid-example'" in run.stdout
    assert "released example.0: active, 1 uses" in run.stdout
    again = _run([*args, "--url", pages.origin + "/page"], env)
    assert "released example.0: active, 2 uses" in again.stdout, again.stdout + again.stderr
    with authkeeper.Client(stack.url, stack.keys["w"]) as client:
        with client.lease("portal", account="example") as lease:
            cookies = {c["name"]: c["value"] for c in lease.storage_state["cookies"]}
    assert cookies == {"sid": "sid-example", "visits": "2"}  # each run sent the page's new state back
