"""Shared plumbing for bench/storm peer workers (stdlib only).

A worker process runs W workers (threads or asyncio tasks) from --start-at for --duration
seconds; each loops: get a token the way its client does, call the protected API, count the
outcome, sleep --think. At the end it writes one JSON line of counters to --out.
"""
import argparse
import json
import os
import threading
import time
import traceback


def parse_args(extra=None):
    p = argparse.ArgumentParser()
    p.add_argument("--api", required=True, help="protected API URL")
    p.add_argument("--token-url", default="")
    p.add_argument("--token-file", default="", help="initial token response JSON (shared at start)")
    p.add_argument("--client-id", default="mock-client")
    p.add_argument("--client-secret", default="mock-secret")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--start-at", type=float, default=0.0)
    p.add_argument("--think", type=float, default=0.005)
    p.add_argument("--ttl", type=float, default=2.0)
    p.add_argument("--out", required=True)
    if extra:
        extra(p)
    a = p.parse_args()
    if not a.start_at:
        a.start_at = time.time()
    return a


def load_token(path):
    # the harness writes the file (atomically) just before the run starts, once every process
    # has imported its libraries, so nobody starts with a token that is already old
    while not os.path.exists(path):
        time.sleep(0.01)
    with open(path) as f:
        tok = json.load(f)
    tok.pop("grant_id", None)
    # what a library stores: the absolute expiry computed when the token was received
    tok.setdefault("expires_at", int(time.time()) + int(tok.get("expires_in", 0)))
    return tok


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.unauthorized = 0  # API answered 401 to worker code
        self.errors = 0  # anything else: refresh failed (invalid_grant), network, 5xx
        self.refreshes = 0  # token-endpoint calls this process made (where observable)
        self.samples = {}

    def add(self, field, n=1):
        with self.lock:
            setattr(self, field, getattr(self, field) + n)

    def error(self, exc):
        with self.lock:
            self.errors += 1
            key = f"{type(exc).__name__}: {str(exc)[:120]}"
            if len(self.samples) < 5 or key in self.samples:
                self.samples[key] = self.samples.get(key, 0) + 1

    def dump(self, path, **extra):
        with self.lock:
            d = dict(ok=self.ok, unauthorized=self.unauthorized, errors=self.errors,
                     refreshes=self.refreshes, error_samples=self.samples, **extra)
        with open(path, "w") as f:
            json.dump(d, f)


def wait_start(a):
    delay = a.start_at - time.time()
    if delay > 0:
        time.sleep(delay)


def run_threads(a, one_request, counters):
    """one_request() -> HTTP status of the API call (or raises)."""
    wait_start(a)
    deadline = a.start_at + a.duration

    def loop():
        while time.time() < deadline:
            try:
                status = one_request()
                if status == 200:
                    counters.add("ok")
                elif status == 401:
                    counters.add("unauthorized")
                else:
                    counters.error(RuntimeError(f"API status {status}"))
            except Exception as e:  # noqa: BLE001 - a worker must survive its client failing
                counters.error(e)
                time.sleep(a.think * 4)  # don't spin on a dead grant
            time.sleep(a.think)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(a.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counters.dump(a.out)


def main_guard(fn):
    try:
        fn()
    except Exception:
        traceback.print_exc()
        raise
