"""The refresh storm: 50 threads with requests (examples/python/scraper.py) and 50 asyncio tasks
with httpx (tests/_async_workers.py), two processes sharing one credential through the broker
(2-second access tokens, refresh-token rotation, reuse detection) for ~10 s with AuthkeeperAuth.
No worker may see a 401, the IdP must see exactly one token-endpoint call per new generation, and
the grant must survive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

import authkeeper
from _stack import Stack

WORKERS = 50
SECONDS = float(os.environ.get("AUTHKEEPER_STORM_SECONDS", "10"))
HERE = Path(__file__).resolve().parent
SCRAPER = HERE.parents[2] / "examples" / "python" / "scraper.py"


def _result(process: subprocess.Popen[str], name: str) -> Dict[str, Any]:
    out, err = process.communicate(timeout=SECONDS + 60)
    assert out.strip(), f"{name} printed nothing (exit {process.returncode}):\n{err[-2000:]}"
    result: Dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def test_storm_50_threads_and_50_tasks(
    stack: Stack, client: authkeeper.Client, broker_env: Dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    idp = stack.idps["storm"]
    api = f"{idp.url}/api/resource"
    grant_id = stack.grants["storm"]
    common = ["--url", api, "--credential", "storm", "--duration", str(SECONDS)]
    before = idp.stats()
    threads = subprocess.Popen(
        [sys.executable, str(SCRAPER), *common, "--workers", str(WORKERS), "--json"],
        env=broker_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    tasks = subprocess.Popen(
        [sys.executable, str(HERE / "_async_workers.py"), *common, "--tasks", str(WORKERS)],
        env=broker_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sides = {
        "requests threads": _result(threads, "scraper.py"),
        "httpx tasks": _result(tasks, "_async_workers.py"),
    }
    after = idp.stats()  # one snapshot: calls and generations read at the same instant

    grant = next(g for g in after["grants"] if g["id"] == grant_id)
    grant_before = next(g for g in before["grants"] if g["id"] == grant_id)
    calls = after["refresh_calls"] - before["refresh_calls"]
    generations = grant["generation"] - grant_before["generation"]
    total = sum(side["requests"] for side in sides.values())
    worker_401 = sum(side["unauthorized"] for side in sides.values())
    failed = sum(side["failed"] for side in sides.values())
    retried = sum(side["retried"] for side in sides.values())
    idp_401 = after["api_unauthorized"] - before["api_unauthorized"]
    per_side = ", ".join(f"{name} {side['requests']}" for name, side in sides.items())
    with capsys.disabled():
        print(
            f"\nSTORM python: {WORKERS} threads (requests) + {WORKERS} asyncio tasks (httpx), {SECONDS:g} s: "
            f"{total} requests ({per_side}), {worker_401} worker-visible 401s, {failed} failed, "
            f"{idp_401} 401s at the API absorbed by {retried} retries, token-endpoint calls {calls} "
            f"== generations {generations} (lifetime {after['refresh_calls']} vs {grant['generation']}), "
            f"reuse detected {after['reuse_detected']}, grant alive {grant['alive']}"
        )
    assert worker_401 == 0 and failed == 0, sides
    assert threads.returncode == 0, sides["requests threads"]
    assert total > 1000, sides
    assert calls == generations, (calls, generations)
    assert after["refresh_calls"] == grant["generation"]
    assert generations >= SECONDS / 2 - 2  # the tokens really did expire and get refreshed
    assert grant["alive"] and after["reuse_detected"] == 0 and after["grants_revoked"] == 0
    assert client.status("storm")["state"] == "valid"
