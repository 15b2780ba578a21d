// withLease against the real broker: every outcome (checked in GET /v1/sessions), heartbeats past
// the TTL, the storage state sent back, a lost lease, the Cookie header for HTTP-only workers;
// and checkpoints.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { inspect } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";

import * as ak from "../dist/index.js";
import { startPages } from "./helpers/pages.mjs";
import { sessionState, standardStack } from "./helpers/stack.mjs";

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

async function session(account) {
  const found = (await client.sessions("portal")).filter((s) => s.account === account);
  assert.equal(found.length, 1);
  return found[0];
}

const rawLease = (account, ttl) =>
  client.call({ method: "POST", path: "/v1/sessions/portal/lease", body: { account, lease_ttl: ttl } });

test("ok: released, one more use, returns the callback's value", async () => {
  const before = await session("alice");
  let seen;
  const result = await ak.withLease(
    "portal",
    async (lease) => {
      seen = lease;
      assert.equal(lease.sessionId, "alice.0");
      assert.equal(lease.storageState.cookies[0].value, "sid-alice");
      assert.equal(lease.proxy, undefined);
      assert.equal(lease.identity, undefined);
      assert.equal((await session("alice")).leased_by, "w");
      assert.ok(!inspect(lease).includes("sid-alice") && !JSON.stringify(lease).includes("sid-alice"));
      return 42;
    },
    { account: "alice", client },
  );
  assert.equal(result, 42);
  assert.equal(seen.summary.state, "active");
  const after = await session("alice");
  assert.equal(after.leased_by, null);
  assert.equal(after.usage_count, before.usage_count + 1);
});

test("error outcome when the callback throws", async () => {
  await assert.rejects(
    ak.withLease("portal", () => { throw new RangeError("boom"); }, { account: "bob", client }),
    RangeError,
  );
  const bob = await session("bob");
  assert.equal(bob.leased_by, null);
  assert.equal(bob.error_score, 1);
});

test("Blocked retires the session", async () => {
  await assert.rejects(
    ak.withLease("portal", () => { throw new ak.Blocked("captcha"); }, { account: "carol", client }),
    ak.Blocked,
  );
  const carol = await session("carol");
  assert.equal(carol.state, "retired");
  assert.ok(carol.error_score >= 3);
});

test("LoggedOut", async () => {
  await assert.rejects(
    ak.withLease("portal", async () => { throw new ak.LoggedOut("sent to /login"); }, { account: "dave", client }),
    ak.LoggedOut,
  );
  assert.equal((await session("dave")).state, "retired");
});

test("setOutcome without throwing", async () => {
  await ak.withLease("portal", (lease) => {
    lease.setOutcome("error");
    assert.throws(() => lease.setOutcome("fine"), TypeError);
  }, { account: "erin", client });
  assert.equal((await session("erin")).error_score, 1);
});

test("heartbeat keeps a short lease past its TTL", async () => {
  // Control: without heartbeats a 1-second lease is taken over by the next caller.
  const unattended = await rawLease("grace", 1);
  await sleep(1500);
  await ak.withLease("portal", (taker) => assert.notEqual(taker.leaseId, unattended.lease_id), { account: "grace", client });

  await ak.withLease("portal", async (lease) => {
    const firstExpiry = lease.expiresAt;
    await sleep(4500);
    await assert.rejects(rawLease("grace"), (error) => {
      assert.ok(error instanceof ak.NoSessionAvailable);
      assert.ok(error.retryAfter >= 1);
      return true;
    });
    assert.ok(lease.heartbeats >= 3, `heartbeats: ${lease.heartbeats}`);
    assert.ok(lease.expiresAt > firstExpiry);
    assert.equal(lease.lost, false);
  }, { account: "grace", ttl: 2, client });
  assert.equal((await session("grace")).leased_by, null);
});

test("storage state sent back on ok and on error", async () => {
  await ak.withLease("portal", (lease) => {
    lease.storageState = sessionState(pages.origin, "sid-heidi-2");
  }, { account: "heidi", client });
  await assert.rejects(
    ak.withLease("portal", (lease) => {
      assert.equal(lease.storageState.cookies[0].value, "sid-heidi-2");
      lease.storageState = sessionState(pages.origin, "sid-heidi-3");
      throw new Error("page crashed");
    }, { account: "heidi", client }),
  );
  await ak.withLease("portal", (lease) => {
    assert.equal(lease.storageState.cookies[0].value, "sid-heidi-3");
  }, { account: "heidi", client });
});

test("a lost lease throws LeaseLost; the callback's own error wins", async () => {
  const release = (lease) =>
    client.call({ method: "POST", path: `/v1/leases/${encodeURIComponent(lease.leaseId)}/release`, body: { outcome: "ok" } });
  let held;
  await assert.rejects(
    ak.withLease("portal", async (lease) => {
      held = lease;
      await release(lease); // released behind its back, as the janitor does with an expired lease
    }, { account: "ivan", client }),
    (error) => error instanceof ak.LeaseLost && error.status === 409,
  );
  assert.equal(held.lost, true);
  await assert.rejects(
    ak.withLease("portal", async (lease) => {
      await release(lease);
      throw new SyntaxError("mine");
    }, { account: "ivan", client }),
    SyntaxError,
  );
});

test("cookie header for HTTP-only workers", async () => {
  await ak.withLease("portal", async (lease) => {
    assert.equal(lease.cookieHeader(pages.origin + "/echo"), "sid=sid-judy");
    assert.equal(lease.cookieHeader("https://elsewhere.example/"), "");
    const echoed = await (await fetch(pages.origin + "/echo", { headers: { cookie: lease.cookieHeader(pages.origin) } })).json();
    assert.equal(echoed.cookie, "sid=sid-judy");
  }, { account: "judy", client });
});

test("a site the key may not use", async () => {
  const other = new ak.Client({ url: stack.url, apiKey: stack.keys.other });
  await assert.rejects(ak.withLease("portal", () => {}, { client: other }), ak.Forbidden);
});

test("checkpoints: save, load, clear", async () => {
  const checkpoint = client.checkpoint(`w.crawl-${Date.now()}`);
  assert.equal(await checkpoint.load(), undefined);
  assert.deepEqual(await checkpoint.load({ step: 0 }), { step: 0 });
  assert.equal((await checkpoint.save({ step: 3 })).version, 1);
  assert.equal((await checkpoint.save({ step: 4, done: [1, 2] })).version, 2);
  assert.deepEqual(await checkpoint.load(), { step: 4, done: [1, 2] });
  assert.equal(await checkpoint.clear(), true);
  assert.equal(await checkpoint.load(), undefined);
  assert.equal(await checkpoint.clear(), false);
  await client.checkpoint("shared-task").save(null);
  assert.equal(await client.checkpoint("shared-task").load("fallback"), null);
  await assert.rejects(client.checkpoint("someone-else").save({}), ak.Forbidden);
  process.env.AUTHKEEPER_CHECKPOINT_URL = `${stack.url}/v1/checkpoints/w.from-env`;
  assert.equal(client.checkpoint().task, "w.from-env");
  delete process.env.AUTHKEEPER_CHECKPOINT_URL;
  assert.throws(() => client.checkpoint(), ak.AuthkeeperError);
});

test("acquireLease and release in two steps", async () => {
  const lease = await ak.acquireLease("portal", { account: "erin", client, ttl: 30 });
  assert.equal((await session("erin")).leased_by, "w");
  const summary = await lease.release("ok");
  assert.equal(summary.session_id, "erin.0");
  assert.equal((await session("erin")).leased_by, null);
  await assert.rejects(lease.release(), ak.AuthkeeperError);
});
