"""Peer: authlib's sync requests session (authlib.integrations.requests_client.OAuth2Session).

Careful-user configuration: token_endpoint set (automatic refresh before each request),
leeway = TTL/4, update_token callback. W threads share one session, as requests allows; the sync
session has no refresh lock. No coordination between processes.
"""
from authlib.integrations.requests_client import OAuth2Session

from common import Counters, load_token, main_guard, parse_args, run_threads


def main():
    a = parse_args()
    c = Counters()

    def update_token(token, refresh_token=None, access_token=None):
        c.add("refreshes")

    s = OAuth2Session(
        client_id=a.client_id, client_secret=a.client_secret,
        token_endpoint_auth_method="client_secret_basic",
        token=load_token(a.token_file), token_endpoint=a.token_url,
        update_token=update_token, leeway=a.ttl / 4)

    def one():
        return s.get(a.api, timeout=10).status_code

    run_threads(a, one, c)


if __name__ == "__main__":
    main_guard(main)
