// Playwright (playwright-core on the system Chromium) with lease.newContext(browser): the leased
// cookies and localStorage reach the page, the page's new state goes back on release, an identity
// becomes context options; and examples/node/playwright-lease.mjs run as a user would.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { chromium } from "playwright-core";

import * as ak from "../dist/index.js";
import { startPages } from "./helpers/pages.mjs";
import { CHROMIUM_ARGS, sessionState, standardStack } from "./helpers/stack.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const packageDir = resolve(here, "..");
const example = resolve(packageDir, "../../examples/node/playwright-lease.mjs");
const executablePath = process.env.AUTHKEEPER_CHROMIUM ?? "/usr/bin/chromium";

let pages;
let stack;
let client;
let browser;

before(async () => {
  pages = await startPages();
  stack = await standardStack(pages, { idps: ["main"] });
  client = new ak.Client({ url: stack.url, apiKey: stack.keys.w });
  browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS });
});

after(async () => {
  await browser?.close();
  await stack?.stop();
  await pages?.close();
});

const cookies = (state) => Object.fromEntries(state.cookies.map((c) => [c.name, c.value]));

test("newContext carries the session, and its new state goes back", async () => {
  let context;
  await ak.withLease("portal", async (lease) => {
    context = await lease.newContext(browser);
    const page = await context.newPage();
    await page.goto(pages.origin + "/page");
    assert.equal(await page.innerText("#sid"), "sid-pw");
    assert.equal(await page.evaluate(() => localStorage.getItem("tok")), "ls-sid-pw");
  }, { account: "pw", client });
  await assert.rejects(context.newPage()); // closed at release: the session is someone else's now
  await ak.withLease("portal", (lease) => {
    assert.deepEqual(cookies(lease.storageState), { sid: "sid-pw", visits: "1" });
  }, { account: "pw", client });
});

test("sessionStorage and IndexedDB go round trip through a lease", async () => {
  const state = sessionState(pages.origin, "sid-pw-storage");
  state.origins[0].sessionStorage = [{ name: "tab", value: "tab-1" }];
  state.origins[0].indexedDB = [
    { name: "app", version: 1, stores: [{ name: "kv", autoIncrement: false, records: [{ key: "token", value: "idb-1" }], indexes: [] }] },
  ];
  stack.importSession("portal", "pw-storage", state);
  const read = async () => {
    const db = await new Promise((resolve, reject) => {
      const open = indexedDB.open("app");
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    });
    const token = await new Promise((resolve) => {
      const get = db.transaction("kv").objectStore("kv").get("token");
      get.onsuccess = () => resolve(get.result);
    });
    db.close();
    return [sessionStorage.getItem("tab"), token];
  };
  const write = async () => {
    sessionStorage.setItem("tab", "tab-2");
    const db = await new Promise((resolve) => {
      const open = indexedDB.open("app");
      open.onsuccess = () => resolve(open.result);
    });
    await new Promise((resolve) => {
      const tx = db.transaction("kv", "readwrite");
      tx.objectStore("kv").put("idb-2", "token");
      tx.oncomplete = resolve;
    });
    db.close();
  };
  await ak.withLease("portal", async (lease) => {
    const page = await (await lease.newContext(browser)).newPage();
    await page.goto(pages.origin + "/page");
    assert.deepEqual(await page.evaluate(read), ["tab-1", "idb-1"]);
    await page.evaluate(write);
  }, { account: "pw-storage", client });
  await ak.withLease("portal", async (lease) => {
    const page = await (await lease.newContext(browser)).newPage();
    await page.goto(pages.origin + "/page");
    assert.deepEqual(await page.evaluate(read), ["tab-2", "idb-2"]);
  }, { account: "pw-storage", client });
});

test("an identity becomes user agent, locale, timezone, viewport and headers", async () => {
  // Today's broker sends no identity: a lease as the broker will send it, with one.
  const lease = new ak.Lease(client, {
    lease_id: "portal~x.0~0",
    session_id: "x.0",
    site: "portal",
    account: "x",
    lease_expires_at: new Date(Date.now() + 60_000).toISOString(),
    identity: {
      userAgent: "authkeeper-test/1.0",
      locale: "de-DE",
      timezoneId: "America/New_York",
      viewport: { width: 1111, height: 777 },
      extraHTTPHeaders: { "x-identity": "alice-1" },
      platform: "Linux",
    },
  }, undefined);
  const context = await lease.newContext(browser);
  try {
    const page = await context.newPage();
    const headers = (await (await page.goto(pages.origin + "/echo")).json()).headers;
    assert.equal(headers["user-agent"], "authkeeper-test/1.0");
    assert.equal(headers["x-identity"], "alice-1");
    assert.match(headers["accept-language"], /^de-DE/);
    assert.deepEqual(await page.evaluate(() => [innerWidth, innerHeight]), [1111, 777]);
    assert.equal(await page.evaluate(() => Intl.DateTimeFormat().resolvedOptions().timeZone), "America/New_York");
  } finally {
    await context.close();
  }
});

test("examples/node/playwright-lease.mjs", async () => {
  // Installed as a user would have it: the example next to node_modules/{authkeeper,playwright-core}.
  const dir = mkdtempSync(join(tmpdir(), "authkeeper-example-"));
  try {
    mkdirSync(join(dir, "node_modules"));
    symlinkSync(packageDir, join(dir, "node_modules", "authkeeper"));
    symlinkSync(join(packageDir, "node_modules", "playwright-core"), join(dir, "node_modules", "playwright-core"));
    copyFileSync(example, join(dir, "playwright-lease.mjs"));
    const env = { ...process.env, AUTHKEEPER_URL: stack.url, AUTHKEEPER_API_KEY: stack.keys.w, AUTHKEEPER_CHROMIUM: executablePath };
    const run = () => promisify(execFile)(process.execPath, [join(dir, "playwright-lease.mjs"), "portal", pages.origin + "/page", "example"], { env, timeout: 60_000 });
    const first = await run();
    assert.match(first.stdout, /session example\.0: "portal": "sid-example"/);
    assert.match(first.stdout, /released example\.0: active, 1 uses/);
    const second = await run();
    assert.match(second.stdout, /released example\.0: active, 2 uses/);
    await ak.withLease("portal", (lease) => {
      assert.deepEqual(cookies(lease.storageState), { sid: "sid-example", visits: "2" });
    }, { account: "example", client });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
