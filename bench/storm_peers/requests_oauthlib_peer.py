"""Peer: requests-oauthlib (requests_oauthlib.OAuth2Session).

Careful-user configuration from its docs: auto_refresh_url (refresh when oauthlib finds the token
expired), auto_refresh_kwargs with the client credentials, token_updater keeping the process's
token set. W threads share one session; requests-oauthlib has no refresh lock and no leeway.
No coordination between processes.
"""
import os

# the mock IdP is plain HTTP on loopback; oauthlib refuses http:// without this (documented switch)
os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")

from requests_oauthlib import OAuth2Session  # noqa: E402

from common import Counters, load_token, main_guard, parse_args, run_threads  # noqa: E402


def main():
    a = parse_args()
    c = Counters()

    def token_updater(token):
        c.add("refreshes")

    s = OAuth2Session(
        client_id=a.client_id, token=load_token(a.token_file),
        auto_refresh_url=a.token_url,
        auto_refresh_kwargs={"client_id": a.client_id, "client_secret": a.client_secret},
        token_updater=token_updater)

    def one():
        return s.get(a.api, timeout=10).status_code

    run_threads(a, one, c)


if __name__ == "__main__":
    main_guard(main)
