"""Peer: a plain "refresh on 401" loop (urllib, stdlib only).

Careful in-process: threads share one token set behind a lock; on a 401 the first thread
refreshes (only if the token that failed is still the current one), the others reuse the result,
and the request is retried once. No coordination between processes.
"""
import base64
import json
import threading
import urllib.error
import urllib.parse
import urllib.request

from common import Counters, load_token, main_guard, parse_args


def main():
    a = parse_args()
    c = Counters()
    state = {"tok": load_token(a.token_file)}
    lock = threading.Lock()
    basic = base64.b64encode(f"{a.client_id}:{a.client_secret}".encode()).decode()

    def call(access):
        req = urllib.request.Request(a.api, headers={"Authorization": f"Bearer {access}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                r.read()
                return r.status
        except urllib.error.HTTPError as e:
            e.read()
            return e.code

    def refresh(failed_access):
        with lock:
            tok = state["tok"]
            if tok["access_token"] != failed_access:
                return tok  # another thread already refreshed
            body = urllib.parse.urlencode({"grant_type": "refresh_token",
                                           "refresh_token": tok["refresh_token"]}).encode()
            req = urllib.request.Request(a.token_url, data=body, headers={
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded"})
            c.add("refreshes")
            with urllib.request.urlopen(req, timeout=10) as r:
                new = json.load(r)
            new.setdefault("refresh_token", tok["refresh_token"])
            state["tok"] = new
            return new

    def one():
        access = state["tok"]["access_token"]
        status = call(access)
        if status != 401:
            return status
        c.add("unauthorized")  # the worker saw it, even if the retry succeeds
        return call(refresh(access)["access_token"])

    from common import run_threads
    run_threads(a, one, c)


if __name__ == "__main__":
    main_guard(main)
