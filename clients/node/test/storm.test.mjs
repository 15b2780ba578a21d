// The refresh storm: 50 concurrent authkeeperFetch loops share one credential (2-second access
// tokens, refresh-token rotation, reuse detection) for ~10 s. No caller may see a 401, the IdP
// must see exactly one token-endpoint call per new generation, and the grant must survive.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import * as ak from "../dist/index.js";
import { startPages } from "./helpers/pages.mjs";
import { standardStack } from "./helpers/stack.mjs";

const WORKERS = 50;
const SECONDS = Number(process.env.AUTHKEEPER_STORM_SECONDS ?? "10");

let pages;
let stack;

before(async () => {
  pages = await startPages();
  stack = await standardStack(pages, { idps: ["storm"] });
});

after(async () => {
  await stack?.stop();
  await pages?.close();
});

test(`storm: ${WORKERS} concurrent fetches for ${SECONDS} s`, async () => {
  const client = new ak.Client({ url: stack.url, apiKey: stack.keys.w });
  const idp = stack.idps.storm;
  const api = ak.authkeeperFetch("storm", { client });
  const url = `${idp.url}/api/resource`;
  const grantId = stack.grants.storm;
  const seen = new Map();
  const before = await idp.stats();
  const stopAt = Date.now() + SECONDS * 1000;
  const worker = async () => {
    while (Date.now() < stopAt) {
      let outcome;
      try {
        const response = await api(url);
        await response.arrayBuffer();
        outcome = String(response.status);
      } catch (error) {
        outcome = error?.name ?? "error";
      }
      seen.set(outcome, (seen.get(outcome) ?? 0) + 1);
    }
  };
  await Promise.all(Array.from({ length: WORKERS }, worker));
  const afterStats = await idp.stats(); // one snapshot: calls and generations at the same instant
  const grant = afterStats.grants.find((g) => g.id === grantId);
  const grantBefore = before.grants.find((g) => g.id === grantId);
  const calls = afterStats.refresh_calls - before.refresh_calls;
  const generations = grant.generation - grantBefore.generation;
  const total = [...seen.values()].reduce((a, b) => a + b, 0);
  const worker401 = seen.get("401") ?? 0;
  const idp401 = afterStats.api_unauthorized - before.api_unauthorized;
  console.log(
    `STORM node: ${WORKERS} concurrent fetches, ${SECONDS} s: ${total} requests, ${worker401} worker-visible 401s, ` +
      `${idp401} 401s at the API absorbed by ${api.retried} retries, token-endpoint calls ${calls} == generations ` +
      `${generations} (lifetime ${afterStats.refresh_calls} vs ${grant.generation}), reuse detected ` +
      `${afterStats.reuse_detected}, grant alive ${grant.alive}`,
  );
  assert.equal(worker401, 0, JSON.stringify([...seen]));
  assert.deepEqual([...seen.keys()], ["200"]);
  assert.ok(total > 1000, `too few requests: ${total}`);
  assert.equal(calls, generations);
  assert.equal(afterStats.refresh_calls, grant.generation);
  assert.ok(generations >= SECONDS / 2 - 2);
  assert.ok(grant.alive && afterStats.reuse_detected === 0 && afterStats.grants_revoked === 0);
  assert.equal((await client.status("storm")).state, "valid");
});
