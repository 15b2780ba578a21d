// Test harness: real `authkeeper mock-idp` and `authkeeper serve` processes on free loopback
// ports, in a temp dir with their own store and key. Every process runs in its own process group
// and is stopped by PID (SIGTERM, then SIGKILL), also when the test process exits early.
import { spawn, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, openSync, readFileSync, writeFileSync, rmSync, closeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

const READY_TIMEOUT_MS = 30_000;
const live = new Set();
process.on("exit", () => {
  for (const child of live) {
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
});

export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

async function http(method, url, body) {
  const response = await fetch(url, {
    method,
    body: body === undefined ? undefined : JSON.stringify(body),
    headers: body === undefined ? {} : { "content-type": "application/json" },
    signal: AbortSignal.timeout(10_000),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${url}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

/** A server process whose output names its URL. */
class Process {
  constructor(name, argv, dir, env, pattern) {
    this.name = name;
    this.logPath = join(dir, `${name}.log`);
    const log = openSync(this.logPath, "w");
    this.child = spawn(argv[0], argv.slice(1), { cwd: dir, env, detached: true, stdio: ["ignore", log, log] });
    closeSync(log);
    live.add(this.child);
    this.exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.once("exit", () => live.delete(this.child));
    this.pattern = pattern;
  }

  async ready() {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (Date.now() < deadline) {
      const match = readFileSync(this.logPath, "utf8").match(this.pattern);
      if (match) return (this.url = match[1]);
      if (this.child.exitCode !== null) break;
      await sleep(50);
    }
    await this.stop();
    throw new Error(`${this.name} did not start:\n${this.tail()}`);
  }

  tail(chars = 3000) {
    return readFileSync(this.logPath, "utf8").slice(-chars);
  }

  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    try {
      process.kill(-this.child.pid, "SIGTERM");
    } catch {
      return;
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-this.child.pid, "SIGKILL");
      } catch {
        // gone meanwhile
      }
    }, 5000);
    await this.exited;
    clearTimeout(timer);
  }
}

/** `authkeeper mock-idp`: 2-second access tokens, rotation and reuse detection (its defaults). */
export class MockIdp {
  constructor(process) {
    this.process = process;
    this.url = process.url;
  }
  mint() {
    return http("POST", `${this.url}/admin/grants`);
  }
  revoke(grantId) {
    return http("POST", `${this.url}/admin/grants/${grantId}/revoke`);
  }
  stats() {
    return http("GET", `${this.url}/admin/stats`);
  }
  knobs(patch) {
    return http("PUT", `${this.url}/admin/knobs`, patch);
  }
}

const q = (value) => JSON.stringify(value);

/**
 * Mock IdPs, credentials, sites, client keys, then one broker: `addIdp`, `addCredential`,
 * `addSite`, `addClient`, `start()`; always `stop()` (it stops whatever was started).
 */
export class Stack {
  constructor(binary = process.env.AUTHKEEPER_BIN) {
    if (!binary) throw new Error("AUTHKEEPER_BIN must name the authkeeper binary");
    this.binary = binary;
    this.dir = mkdtempSync(join(tmpdir(), "authkeeper-node-"));
    this.configPath = join(this.dir, "authkeeper.toml");
    this.env = {
      ...process.env,
      AUTHKEEPER_STORE: join(this.dir, "store.db"),
      AUTHKEEPER_KEY: randomBytes(32).toString("base64"),
      AUTHKEEPER_LOG: "warn",
    };
    this.idps = {};
    this.credentials = {};
    this.grants = {};
    this.sites = {};
    this.clients = {};
    this.keys = {};
    this.processes = [];
    this.url = "";
  }

  async addIdp(name, accessTtl = "2s") {
    const proc = new Process(
      `idp-${name}`,
      [this.binary, "mock-idp", "--listen", "127.0.0.1:0", "--access-ttl", accessTtl],
      this.dir,
      this.env,
      /mock IdP listening on (http:\/\/\S+)/,
    );
    this.processes.push(proc);
    await proc.ready();
    return (this.idps[name] = new MockIdp(proc));
  }

  addCredential(name, idp) {
    this.credentials[name] = idp;
  }

  addSite(name, origin, accounts) {
    this.sites[name] = { origin, accounts };
  }

  addClient(name, { credentials = [], sites = [], checkpoints = [] } = {}) {
    const out = execFileSync(this.binary, ["keys", "new", name], { env: this.env, encoding: "utf8" });
    const key = out.match(/ak_[A-Za-z0-9_-]+/)?.[0];
    const sha = out.match(/\b[0-9a-f]{64}\b/)?.[0];
    if (!key || !sha) throw new Error("authkeeper keys new printed no key");
    this.clients[name] = { sha, credentials, sites, checkpoints };
    return (this.keys[name] = key);
  }

  config() {
    const lines = ["[server]", 'listen = "127.0.0.1:0"', ""];
    for (const [name, c] of Object.entries(this.clients)) {
      lines.push("[[clients]]", `name = ${q(name)}`, `key_sha256 = ${q(c.sha)}`);
      lines.push(`credentials = ${q(c.credentials)}`, `sites = ${q(c.sites)}`, `checkpoints = ${q(c.checkpoints)}`, "");
    }
    for (const [name, idpName] of Object.entries(this.credentials)) {
      const idp = this.idps[idpName];
      lines.push(`[credentials.${name}]`, `token_url = ${q(`${idp.url}/token`)}`);
      lines.push('client_id = "mock-client"', 'client_secret = "mock-secret"', `upstream = ${q(idp.url)}`, "");
    }
    for (const [name, site] of Object.entries(this.sites)) {
      const accounts = site.accounts.map((a) => `{ name = ${q(a)} }`).join(", ");
      lines.push(`[sites.${name}]`, `origin = ${q(site.origin)}`, `accounts = [${accounts}]`, "");
    }
    return lines.join("\n");
  }

  cli(args, input = "") {
    return execFileSync(this.binary, ["--config", this.configPath, ...args], {
      env: this.env,
      cwd: this.dir,
      input,
      encoding: "utf8",
      stdio: ["pipe", "pipe", "pipe"],
    });
  }

  /** Mints a grant at the credential's IdP and imports it (`authkeeper import`). */
  async importGrant(credential) {
    const grant = await this.idps[this.credentials[credential]].mint();
    this.cli(["import", credential], JSON.stringify(grant));
    return (this.grants[credential] = grant.grant_id);
  }

  /** Revokes the credential's current grant at its IdP: every token of it dies. */
  revoke(credential) {
    return this.idps[this.credentials[credential]].revoke(this.grants[credential]);
  }

  /** `authkeeper sessions import SITE ACCOUNT FILE`. */
  importSession(site, account, state) {
    const path = join(this.dir, `state-${site}-${account}.json`);
    writeFileSync(path, JSON.stringify(state));
    this.cli(["sessions", "import", site, account, path]);
  }

  async start() {
    writeFileSync(this.configPath, this.config());
    for (const credential of Object.keys(this.credentials)) await this.importGrant(credential);
    const broker = new Process(
      "broker",
      [this.binary, "--config", this.configPath, "serve"],
      this.dir,
      this.env,
      /authkeeper broker listening on (http:\/\/\S+)/,
    );
    this.processes.unshift(broker);
    this.url = await broker.ready();
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      try {
        await http("GET", `${this.url}/readyz`);
        return;
      } catch (error) {
        if (Date.now() > deadline) throw new Error(`broker not ready: ${error}\n${broker.tail()}`);
        await sleep(50);
      }
    }
  }

  /** Stops the broker, then the IdPs, and removes the temp dir. Never throws for a dead process. */
  async stop() {
    for (const proc of this.processes) await proc.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A Playwright storage state with an HttpOnly `sid` cookie for 127.0.0.1 and localStorage. */
export function sessionState(origin, sid) {
  return {
    cookies: [
      { name: "sid", value: sid, domain: "127.0.0.1", path: "/", expires: -1, httpOnly: true, secure: false, sameSite: "Lax" },
    ],
    origins: [{ origin, localStorage: [{ name: "tok", value: `ls-${sid}` }] }],
  };
}

/** One account per lease test, so outcomes that retire a session do not interfere. */
export const ACCOUNTS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "pw", "pw-storage", "example"];

/**
 * The stack every test file uses: IdPs "main", "storm" and "faulty" (2-second tokens), the
 * credentials on them, site "portal" (origin `pages.origin`) with one imported session per
 * account, key "w" (all but "secret") and key "other" (only "secret").
 */
export async function standardStack(pages, { idps = ["main", "storm", "faulty"] } = {}) {
  const stack = new Stack();
  try {
    for (const idp of idps) await stack.addIdp(idp);
    if (stack.idps.main) for (const credential of ["api", "reauth", "retry", "secret"]) stack.addCredential(credential, "main");
    if (stack.idps.storm) stack.addCredential("storm", "storm");
    if (stack.idps.faulty) stack.addCredential("flaky", "faulty");
    stack.addSite("portal", pages.origin, ACCOUNTS);
    const allowed = Object.keys(stack.credentials).filter((c) => c !== "secret");
    stack.addClient("w", { credentials: allowed, sites: ["portal"], checkpoints: ["shared-task"] });
    stack.addClient("other", { credentials: stack.idps.main ? ["secret"] : [] });
    await stack.start();
    for (const account of ACCOUNTS) stack.importSession("portal", account, sessionState(pages.origin, `sid-${account}`));
    return stack;
  } catch (error) {
    await stack.stop();
    throw error;
  }
}
