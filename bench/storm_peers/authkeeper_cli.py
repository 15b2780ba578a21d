"""authkeeper row: W threads per process, each loop runs `authkeeper token NAME` as a new OS
process (the store's lease makes refreshes exactly-once across all of them) and calls the API
with the printed token."""
import subprocess
import urllib.error
import urllib.request

from common import Counters, main_guard, parse_args, run_threads


def extra(p):
    p.add_argument("--bin", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--name", default="api")


def main():
    a = parse_args(extra)
    c = Counters()

    def one():
        out = subprocess.run([a.bin, "--config", a.config, "token", a.name],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"authkeeper token exit {out.returncode}: {out.stderr.strip()[:200]}")
        req = urllib.request.Request(a.api, headers={"Authorization": f"Bearer {out.stdout.strip()}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                r.read()
                return r.status
        except urllib.error.HTTPError as e:
            e.read()
            return e.code

    run_threads(a, one, c)


if __name__ == "__main__":
    main_guard(main)
