// The token API against the real broker: tokens, rejected reports, long polls, every error
// mapped to its class.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createServer } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

import * as ak from "../dist/index.js";
import { startPages } from "./helpers/pages.mjs";
import { standardStack } from "./helpers/stack.mjs";

let pages;
let stack;
let client;

before(async () => {
  pages = await startPages();
  stack = await standardStack(pages, { idps: ["main", "faulty"] });
  client = new ak.Client({ url: stack.url, apiKey: stack.keys.w });
});

after(async () => {
  await stack?.stop();
  await pages?.close();
});

async function until(fn, what) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await fn();
    } catch (error) {
      return error;
    }
    assert.ok(Date.now() < deadline, what);
    await sleep(200);
  }
}

test("token and rejected", async () => {
  const token = await client.token("api");
  assert.ok(token.accessToken && token.generation >= 1);
  assert.ok(token.expiresIn > 0 && token.expiresIn <= 2.5);
  const fresh = await client.rejected("api", token.generation);
  assert.ok(fresh.generation > token.generation);
  const again = await client.rejected("api", token.generation); // stale: no second refresh
  assert.ok(again.generation >= fresh.generation);
});

test("minTtl", async () => {
  assert.ok((await client.token("api", { minTtl: 1 })).expiresIn > 0.9);
  await assert.rejects(client.token("api", { minTtl: 60 }), (error) => {
    assert.ok(error instanceof ak.InvalidRequest);
    assert.equal(error.status, 400);
    assert.match(error.detail, /min_ttl/);
    return true;
  });
});

test("forbidden, unknown and unauthorized", async () => {
  for (const name of ["secret", "no-such-credential"]) {
    await assert.rejects(client.token(name), (error) => error instanceof ak.Forbidden && error.status === 403);
  }
  const other = new ak.Client({ url: stack.url, apiKey: stack.keys.other });
  assert.ok((await other.token("secret")).generation >= 1);
  for (const apiKey of ["ak_not-a-key", ""]) {
    const bad = new ak.Client({ url: stack.url, apiKey });
    await assert.rejects(bad.token("api"), (error) => error instanceof ak.Unauthorized && error.status === 401);
  }
});

test("needs-reauth, then waitForReauth", async () => {
  await stack.revoke("reauth");
  const error = await until(() => client.token("reauth"), "the revoked grant never surfaced");
  assert.ok(error instanceof ak.NeedsReauth, String(error));
  assert.equal(error.status, 409);
  assert.equal(error.loginHint, "authkeeper login reauth");
  assert.equal(error.credential, "reauth");
  assert.equal((await client.status("reauth")).state, "needs_reauth");
  await assert.rejects(client.waitForReauth("reauth", 1.5), ak.NeedsReauth);
  const relogin = sleep(1000).then(() => stack.importGrant("reauth"));
  const started = Date.now();
  const token = await client.waitForReauth("reauth", 20);
  await relogin;
  assert.ok(Date.now() - started > 500);
  assert.equal((await client.status("reauth")).state, "valid");
  assert.equal(token.generation, (await client.token("reauth")).generation);
});

test("unavailable carries retryAfter", async () => {
  const idp = stack.idps.faulty;
  await idp.knobs({ fault_503_rate: 1.0, retry_after_secs: 7 });
  try {
    const error = await until(() => client.token("flaky"), "the failing IdP never surfaced");
    assert.ok(error instanceof ak.Unavailable, String(error));
    assert.equal(error.status, 503);
    assert.ok(error.retryAfter > 0 && error.retryAfter <= 8);
    assert.ok(error.nextAttemptAt);
  } finally {
    await idp.knobs({ fault_503_rate: 0.0, retry_after_secs: null });
  }
});

test("transport error", async () => {
  const port = await new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
  const nowhere = new ak.Client({ url: `http://127.0.0.1:${port}`, apiKey: "ak_x", timeoutMs: 2000 });
  await assert.rejects(nowhere.token("api"), ak.TransportError);
});

test("every error is an AuthkeeperError", () => {
  for (const cls of [ak.NeedsReauth, ak.Unavailable, ak.Forbidden, ak.Unauthorized, ak.NoSessionAvailable, ak.LeaseLost, ak.BrokerError, ak.TransportError, ak.Blocked, ak.LoggedOut]) {
    assert.ok(cls.prototype instanceof ak.AuthkeeperError, cls.name);
  }
});
