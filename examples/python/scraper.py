#!/usr/bin/env python3
"""A 50-worker scraper that never holds a credential: every request gets its bearer token from the
authkeeper broker through ``AuthkeeperAuth`` (threads + requests), and a 401 is reported and
retried once with the newer token.

    AUTHKEEPER_URL=http://127.0.0.1:7878 AUTHKEEPER_API_KEY=ak_... \\
        python examples/python/scraper.py --credential crm --url https://api.example.com/items

Prints the requests made, the 401s a worker saw (after the retry) and the retries, and exits 1 if
any worker saw a 401 (or a request failed). ``--json`` prints the numbers as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter

import requests

import authkeeper


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the API URL every worker fetches")
    parser.add_argument("--credential", default="api", help="the broker credential (default: api)")
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--json", action="store_true", help="print the numbers as one JSON line")
    args = parser.parse_args()

    client = authkeeper.Client()  # AUTHKEEPER_URL, AUTHKEEPER_API_KEY
    auth = authkeeper.AuthkeeperAuth(args.credential, client=client)
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + args.duration

    def worker() -> None:
        with requests.Session() as session:
            while time.monotonic() < stop_at:
                try:
                    outcome = str(session.get(args.url, auth=auth, timeout=30).status_code)
                except (requests.RequestException, authkeeper.AuthkeeperError) as error:
                    outcome = type(error).__name__
                with lock:
                    seen[outcome] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=worker, name=f"worker-{i}") for i in range(args.workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()

    total = sum(seen.values())
    unauthorized = seen.get("401", 0)
    failed = total - seen.get("200", 0) - unauthorized
    result = {
        "requests": total,
        "ok": seen.get("200", 0),
        "unauthorized": unauthorized,
        "failed": failed,
        "retried": auth.retried,
        "seconds": round(time.monotonic() - started, 2),
        "outcomes": dict(seen),
    }
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print(
            f"{total} requests by {args.workers} workers in {result['seconds']} s: "
            f"{unauthorized} 401s seen by workers, {auth.retried} retried after a refresh, {failed} failed"
        )
    return 1 if unauthorized or failed or not total else 0


if __name__ == "__main__":
    sys.exit(main())
