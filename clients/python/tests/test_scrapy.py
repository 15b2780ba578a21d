"""The Scrapy middleware in a real crawl (CrawlerProcess in a subprocess) against the mock API with
2-second tokens and the scripted pages: tokens attached, a 401 reported and retried once, 403 and
``insufficient_scope`` passed through, a per-request credential honoured."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Dict

import pytest

from _pages import PageServer
from _stack import Stack

pytest.importorskip("scrapy")

HERE = Path(__file__).resolve().parent


def test_scrapy_crawl(stack: Stack, pages: PageServer, broker_env: Dict[str, str], tmp_path: Path) -> None:
    key = uuid.uuid4().hex
    out = tmp_path / "crawl.json"
    api = f"{stack.idps['main'].url}/api/resource"
    before = {path: len(pages.hits_for(path)) for path in ("/forbidden", "/scope")}
    run = subprocess.run(
        [
            sys.executable,
            str(HERE / "_scrapy_crawl.py"),
            "--api",
            api,
            "--pages",
            pages.origin,
            "--key",
            key,
            "--duration",
            "4",
            "--out",
            str(out),
        ],
        env=broker_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and out.exists(), run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["finish_reason"] == "finished"
    assert result["probes"] == {"once401": 200, "forbidden": 403, "scope": 401, "override": 200}
    once = pages.hits_for(f"/once401/{key}")
    assert len(once) == 2 and once[0].authorization != once[1].authorization
    assert all(hit.authorization and hit.authorization.startswith("Bearer ") for hit in once)
    assert result["retried"] >= 1
    assert {path: len(pages.hits_for(path)) - n for path, n in before.items()} == {
        "/forbidden": 1,
        "/scope": 1,
    }
    statuses = result["api_statuses"]
    assert set(statuses) == {"200"}, statuses  # no 401 reached the spider over two token lifetimes
    assert statuses["200"] > 20
    assert "Bearer " not in run.stderr  # no token in Scrapy's log
