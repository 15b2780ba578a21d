"""authkeeper rows against one `authkeeper serve`:
  --mode token: GET /v1/credentials/NAME/token with a client key, call the API; on a 401 report
                the token's generation to POST .../rejected and retry once with the answer.
  --mode proxy: call the API through the broker's proxy /proxy/NAME/... (with the client key;
                the broker injects the token); --api is then the proxy URL.
Each worker thread keeps its own HTTP/1.1 keep-alive connections. --broker may list several
replicas (comma-separated): worker thread t of process --index i uses replica (i*W + t) mod n,
so the P×W threads are spread evenly over them."""
import http.client
import itertools
import json
import threading
import urllib.parse

from common import Counters, main_guard, parse_args, run_threads


def extra(p):
    p.add_argument("--mode", choices=["token", "proxy"], required=True)
    p.add_argument("--broker", default="", help="broker base URL(s), comma-separated")
    p.add_argument("--index", type=int, default=0, help="this process's index (spreads threads)")
    p.add_argument("--key", default="", help="client key ak_...")
    p.add_argument("--name", default="api")


class Conn(threading.local):
    def get(self, url):
        u = urllib.parse.urlsplit(url)
        attr = f"c_{u.port}"
        if not hasattr(self, attr):
            setattr(self, attr, http.client.HTTPConnection(u.hostname, u.port, timeout=10))
        return getattr(self, attr), u

    def request(self, method, url, headers=None, body=None):
        conn, u = self.get(url)
        path = u.path + (f"?{u.query}" if u.query else "")
        for attempt in range(2):
            try:
                conn.request(method, path, body=body, headers=headers or {})
                r = conn.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                if attempt:
                    raise


def main():
    a = parse_args(extra)
    c = Counters()
    conns = Conn()
    auth = {"Authorization": f"Bearer {a.key}"}
    bases = [f"{b}/v1/credentials/{a.name}" for b in a.broker.split(",") if b]
    slots = itertools.count(a.index * a.workers)
    mine = threading.local()

    def my_base():
        if not hasattr(mine, "base"):
            mine.base = bases[next(slots) % len(bases)]
        return mine.base

    def token():
        status, body = conns.request("GET", f"{my_base()}/token", auth)
        if status != 200:
            raise RuntimeError(f"token API {status}: {body[:200]!r}")
        return json.loads(body)

    def one_token():
        t = token()
        status, _ = conns.request("GET", a.api, {"Authorization": f"Bearer {t['access_token']}"})
        if status != 401:
            return status
        c.add("unauthorized")
        status, body = conns.request("POST", f"{my_base()}/rejected",
                                     {**auth, "Content-Type": "application/json"},
                                     json.dumps({"generation": t["generation"]}))
        if status != 200:
            raise RuntimeError(f"rejected {status}: {body[:200]!r}")
        t = json.loads(body)
        status, _ = conns.request("GET", a.api, {"Authorization": f"Bearer {t['access_token']}"})
        return status

    def one_proxy():
        status, _ = conns.request("GET", a.api, auth)  # the broker swaps the key for the token
        return status

    run_threads(a, one_token if a.mode == "token" else one_proxy, c)


if __name__ == "__main__":
    main_guard(main)
