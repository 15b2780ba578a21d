"""The asyncio half of the storm test, run as its own process: N tasks on one event loop share
one ``httpx.AsyncClient`` with ``AuthkeeperAuth`` and fetch ``--url`` for ``--duration`` seconds.
Prints one JSON line like examples/python/scraper.py --json.

(In the test's own process, 50 busy threads would starve an event loop of the GIL for seconds.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

import httpx

import authkeeper


async def run(url: str, credential: str, tasks: int, duration: float) -> dict[str, object]:
    client = authkeeper.Client()
    auth = authkeeper.AuthkeeperAuth(credential, client=client)
    seen: Counter[str] = Counter()
    stop_at = time.monotonic() + duration
    limits = httpx.Limits(max_connections=tasks, max_keepalive_connections=tasks)
    async with httpx.AsyncClient(auth=auth, limits=limits, timeout=30) as http:

        async def one() -> None:
            while time.monotonic() < stop_at:
                try:
                    seen[str((await http.get(url)).status_code)] += 1
                except (httpx.HTTPError, authkeeper.AuthkeeperError) as error:
                    seen[type(error).__name__] += 1

        await asyncio.gather(*(one() for _ in range(tasks)))
    await client.aclose()
    total = sum(seen.values())
    return {
        "requests": total,
        "ok": seen.get("200", 0),
        "unauthorized": seen.get("401", 0),
        "failed": total - seen.get("200", 0) - seen.get("401", 0),
        "retried": auth.retried,
        "outcomes": dict(seen),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--credential", required=True)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.credential, args.tasks, args.duration))), flush=True)


if __name__ == "__main__":
    main()
