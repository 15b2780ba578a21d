#!/usr/bin/env python3
"""An agent task that survives a dead login: it checkpoints its progress in the broker after every
step, and when the credential needs re-authentication it saves, says what a human must run, and
exits (status 3, as ``authkeeper`` does). After ``authkeeper login`` / ``import``, the next run
resumes from the checkpoint instead of starting over.

    AUTHKEEPER_URL=... AUTHKEEPER_API_KEY=... python examples/python/agent_checkpoint.py \\
        --credential crm --task scrapers.crm-sync --url https://api.example.com/items --steps 50

``--wait SECONDS`` waits that long for the re-login instead of exiting.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Dict

import httpx

import authkeeper

EXIT_NEEDS_REAUTH = 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--credential", required=True)
    parser.add_argument("--task", required=True, help="the checkpoint's task name")
    parser.add_argument("--url", required=True, help="API base URL; step N fetches URL/step/N")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--step-delay", type=float, default=0.1, help="seconds of 'work' per step")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for a re-login")
    args = parser.parse_args()

    client = authkeeper.Client()
    checkpoint = client.checkpoint(args.task)
    state: Dict[str, Any] = checkpoint.load(default={"step": 0, "results": []})
    if state["step"]:
        print(f"resuming at step {state['step']} (from the checkpoint)", flush=True)
    else:
        print("starting at step 0", flush=True)

    auth = authkeeper.AuthkeeperAuth(args.credential, client=client)
    with httpx.Client(auth=auth, timeout=30) as http:
        while state["step"] < args.steps:
            step = state["step"]
            try:
                response = http.get(f"{args.url}/step/{step}")
                response.raise_for_status()
            except authkeeper.NeedsReauth as error:
                checkpoint.save(state)
                print(
                    f"needs re-authentication ({error.login_hint}); progress saved at step {step}", flush=True
                )
                if args.wait <= 0:
                    return EXIT_NEEDS_REAUTH
                print(f"waiting up to {args.wait:g} s for a re-login", flush=True)
                try:
                    client.wait_for_reauth(args.credential, args.wait)
                except authkeeper.NeedsReauth:
                    return EXIT_NEEDS_REAUTH
                continue
            state["results"].append(response.json().get("path"))
            state["step"] = step + 1
            checkpoint.save(state)
            print(f"step {step} done", flush=True)
            time.sleep(args.step_delay)

    checkpoint.clear()
    client.close()
    print(f"done: {len(state['results'])} steps", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
