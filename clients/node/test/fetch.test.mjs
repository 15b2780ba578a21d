// authkeeperFetch: the token is attached, a 401 that a new token can fix is reported and retried
// once with the body replayed, 403 and insufficient_scope are never retried.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";

import * as ak from "../dist/index.js";
import { startPages } from "./helpers/pages.mjs";
import { standardStack } from "./helpers/stack.mjs";

let pages;
let stack;
let client;

before(async () => {
  pages = await startPages();
  stack = await standardStack(pages, { idps: ["main"] });
  client = new ak.Client({ url: stack.url, apiKey: stack.keys.w });
});

after(async () => {
  await stack?.stop();
  await pages?.close();
});

function assertRetried(path, body = "") {
  const hits = pages.hitsFor(path);
  assert.equal(hits.length, 2);
  const [first, second] = hits;
  assert.match(first.authorization, /^Bearer /);
  assert.ok(second.authorization && second.authorization !== first.authorization);
  assert.equal(first.body, body);
  assert.equal(second.body, body);
}

test("retries an invalid_token 401 once, replaying the body", async () => {
  const api = ak.authkeeperFetch("retry", { client });
  const path = `/once401/${randomUUID()}`;
  const response = await api(pages.origin + path, { method: "POST", body: "payload", headers: { "x-keep": "1" } });
  assert.equal(response.status, 200);
  assert.equal((await response.json()).body_len, 7);
  assert.equal(api.retried, 1);
  assertRetried(path, "payload");
});

test("replays a streamed body and a Request object", async () => {
  const api = ak.authkeeperFetch("retry", { client });
  const path = `/once401/${randomUUID()}`;
  const stream = new ReadableStream({
    start(controller) {
      controller.enqueue(new TextEncoder().encode("streamed "));
      controller.enqueue(new TextEncoder().encode("body"));
      controller.close();
    },
  });
  const request = new Request(pages.origin + path, { method: "PUT", body: stream, duplex: "half" });
  assert.equal((await api(request)).status, 200);
  assertRetried(path, "streamed body");
});

test("retries a 401 without a challenge", async () => {
  const api = ak.authkeeperFetch("retry", { client });
  const path = `/bare401/${randomUUID()}`;
  assert.equal((await api(new URL(pages.origin + path))).status, 200);
  assertRetried(path);
});

test("never retries a 403 or insufficient_scope", async () => {
  const api = ak.authkeeperFetch("retry", { client });
  const before = { forbidden: pages.hitsFor("/forbidden").length, scope: pages.hitsFor("/scope").length };
  assert.equal((await api(pages.origin + "/forbidden")).status, 403);
  assert.equal((await api(pages.origin + "/scope")).status, 401);
  assert.equal(pages.hitsFor("/forbidden").length - before.forbidden, 1);
  assert.equal(pages.hitsFor("/scope").length - before.scope, 1);
  assert.equal(api.retried, 0);
});

test("the default minTtl falls back for short-lived tokens", async () => {
  const api = ak.authkeeperFetch("api", { client });
  assert.equal(api.tokens.minTtl, ak.DEFAULT_MIN_TTL);
  const mock = `${stack.idps.main.url}/api/resource`;
  const response = await api(mock);
  assert.equal(response.status, 200);
  assert.equal((await response.json()).ok, true);
  assert.equal((await api(mock.replace("resource", "admin"))).status, 403); // insufficient_scope
  assert.equal(api.retried, 0);
});
