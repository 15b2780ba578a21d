"""Peer: authlib's async httpx client (authlib.integrations.httpx_client.AsyncOAuth2Client).

Careful-user configuration: token_endpoint set so the client refreshes automatically before
each request, leeway = TTL/4 (the default 60 s would refresh on every call with short tokens),
update_token callback keeps the process's token set. W asyncio tasks share one client, whose
refresh lock makes refreshes single-flight inside the process. No coordination between processes.
"""
import asyncio
import time

from authlib.integrations.httpx_client import AsyncOAuth2Client

from common import Counters, load_token, main_guard, parse_args


async def amain(a):
    c = Counters()

    async def update_token(token, refresh_token=None, access_token=None):
        c.add("refreshes")  # a careful app would persist the new set here

    client = AsyncOAuth2Client(
        client_id=a.client_id, client_secret=a.client_secret,
        token_endpoint_auth_method="client_secret_basic",
        token=load_token(a.token_file), token_endpoint=a.token_url,
        update_token=update_token, leeway=a.ttl / 4, timeout=10)
    delay = a.start_at - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    deadline = a.start_at + a.duration

    async def loop():
        while time.time() < deadline:
            try:
                r = await client.get(a.api)
                if r.status_code == 200:
                    c.add("ok")
                elif r.status_code == 401:
                    c.add("unauthorized")
                else:
                    c.error(RuntimeError(f"API status {r.status_code}"))
            except Exception as e:  # noqa: BLE001
                c.error(e)
                await asyncio.sleep(a.think * 4)
            await asyncio.sleep(a.think)

    await asyncio.gather(*(loop() for _ in range(a.workers)))
    await client.aclose()
    c.dump(a.out)


if __name__ == "__main__":
    main_guard(lambda: asyncio.run(amain(parse_args())))
