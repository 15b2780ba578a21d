/**
 * Browser-session leases: `withLease(site, async (lease) => { ... })`.
 *
 * The session is leased (`POST /v1/sessions/{site}/lease`) for the callback; a heartbeat renews
 * the lease every third of its TTL; the lease is released (`POST /v1/leases/{id}/release`) when
 * the callback settles:
 *
 * | the callback | outcome | storage state sent back |
 * | --- | --- | --- |
 * | returns | `ok` (or `lease.setOutcome(...)`) | `lease.storageState` if assigned, else the state of the last context from `newContext` |
 * | throws {@link Blocked} | `blocked` | none |
 * | throws {@link LoggedOut} | `logged_out` | none |
 * | throws anything else | `error` | as for `ok` |
 *
 * Errors are rethrown after the release. A lease the broker reclaimed (heartbeats failed) makes
 * `withLease` throw {@link LeaseLost} when the callback itself succeeded. `acquireLease` and
 * `lease.release()` do the same in two steps, for leases that span hooks (Crawlee).
 * @module
 */

import { inspect } from "node:util";

import { Client } from "./client.js";
import { cookieHeader } from "./cookies.js";
import { AuthkeeperError, LeaseLost, LeaseOutcome, UnknownLease, type Outcome } from "./errors.js";
import { contextOptions, type BrowserContextLike, type BrowserLike, captureState, mergeSessionStorage, readPages, restoreSessionStorage, sessionStorageByOrigin } from "./playwright.js";

/** A cookie of a Playwright storage state. */
export interface StorageStateCookie {
  name: string;
  value: string;
  domain: string;
  path: string;
  /** Seconds since the epoch; -1 for a session cookie. */
  expires: number;
  httpOnly: boolean;
  secure: boolean;
  sameSite: "Strict" | "Lax" | "None";
}

/** One origin of a storage state: localStorage, authkeeper's sessionStorage, Playwright's indexedDB. */
export interface StorageStateOrigin {
  origin: string;
  localStorage: { name: string; value: string }[];
  sessionStorage?: { name: string; value: string }[];
  [key: string]: unknown;
}

/** A Playwright `storageState` (with authkeeper's `sessionStorage` per origin). */
export interface StorageState {
  cookies: StorageStateCookie[];
  origins: StorageStateOrigin[];
  [key: string]: unknown;
}

/** What the broker did with a released session. */
export interface ReleaseSummary {
  session_id: string;
  state: "active" | "needs_login" | "retired";
  reason: string | null;
  error_score: number;
  usage_count: number;
}

/** The broker's lease answer. */
interface LeaseJson {
  lease_id: string;
  session_id: string;
  site: string;
  account: string;
  proxy?: string;
  identity?: Record<string, unknown>;
  storage_state?: StorageState;
  lease_expires_at: string;
}

/** Options of {@link withLease}. */
export interface LeaseOptions {
  /** Only a session of this account. */
  account?: string;
  /** Lease TTL in seconds (default: the site's `lease_ttl`). */
  ttl?: number;
  /** The broker client (default: `new Client()`). */
  client?: Client;
}

const OUTCOMES: readonly Outcome[] = ["ok", "error", "blocked", "logged_out"];
const FALLBACK_INTERVAL_MS = 10_000;

function warn(message: string): void {
  process.emitWarning(`authkeeper: ${message}`, { code: "AUTHKEEPER" });
}

function errorName(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : "error";
}

/** One leased browser session, as the {@link withLease} callback sees it. */
export class Lease {
  readonly leaseId: string;
  readonly sessionId: string;
  readonly site: string;
  readonly account: string;
  /** The proxy URL the session must always use (may hold credentials), or undefined. */
  readonly proxy: string | undefined;
  /** Playwright `newContext` options fixed for the session, or undefined when the broker sends none. */
  readonly identity: Record<string, unknown> | undefined;
  /** The requested TTL in seconds (undefined: the site's default). */
  readonly ttl: number | undefined;
  /** When the lease ends unless renewed (moved by every heartbeat). */
  expiresAt: Date;
  /** How many heartbeats the broker accepted. */
  heartbeats = 0;
  /** True once the broker said the lease is no longer held. */
  lost = false;
  /** After release: what the broker did with the session. */
  summary: ReleaseSummary | undefined;
  readonly #client: Client;
  #storageState: StorageState;
  #stateSet = false;
  #outcome: Outcome | undefined;
  readonly #contexts: BrowserContextLike[] = [];
  #stopHeartbeat: (() => Promise<void>) | undefined;
  #released = false;

  /** @internal */
  constructor(client: Client, json: LeaseJson, ttl: number | undefined) {
    this.#client = client;
    this.leaseId = json.lease_id;
    this.sessionId = json.session_id;
    this.site = json.site;
    this.account = json.account;
    this.proxy = json.proxy || undefined;
    this.identity = json.identity ?? undefined;
    this.ttl = ttl;
    this.expiresAt = new Date(json.lease_expires_at);
    this.#storageState = json.storage_state ?? { cookies: [], origins: [] };
  }

  /** The session's Playwright storage state. Assign a new one to have it stored on release. */
  get storageState(): StorageState {
    return this.#storageState;
  }

  set storageState(state: StorageState) {
    this.#storageState = state;
    this.#stateSet = true;
  }

  /** The outcome to release with when the callback returns (default `ok`). */
  setOutcome(outcome: Outcome): void {
    if (!OUTCOMES.includes(outcome)) throw new TypeError(`outcome must be one of ${OUTCOMES.join(", ")}`);
    this.#outcome = outcome;
  }

  /** Throws {@link LeaseLost} once the broker reclaimed the lease. */
  check(): void {
    if (this.lost) {
      throw new LeaseLost(
        { type: "urn:authkeeper:problem:lease-lost", title: "Lease lost", detail: `lease of ${this.site}/${this.sessionId} is no longer held` },
        409,
      );
    }
  }

  /** The `Cookie` header for `url` from the session's cookies (HTTP-only workers; send `proxy` along). */
  cookieHeader(url: string | URL): string {
    return cookieHeader(this.#storageState, url);
  }

  /**
   * A Playwright browser context with this session's storage state, proxy and identity (`options`
   * override). Its storage state is captured when the callback settles and sent back on release,
   * then the context is closed: keep it open until then, and do not use the session afterwards.
   */
  async newContext<C extends BrowserContextLike>(browser: BrowserLike<C>, options: Record<string, unknown> = {}): Promise<C> {
    const context = await browser.newContext({
      ...contextOptions(this.#storageState, this.proxy, this.identity),
      ...options,
    });
    const byOrigin = sessionStorageByOrigin(this.#storageState);
    if (Object.keys(byOrigin).length > 0 && context.addInitScript) {
      await context.addInitScript(restoreSessionStorage, byOrigin);
    }
    this.#contexts.push(context);
    return context;
  }

  /** Everything but the storage state and the proxy. */
  toJSON(): Record<string, unknown> {
    return {
      leaseId: this.leaseId,
      sessionId: this.sessionId,
      site: this.site,
      account: this.account,
      hasProxy: this.proxy !== undefined,
      expiresAt: this.expiresAt.toISOString(),
      lost: this.lost,
    };
  }

  [inspect.custom](): string {
    return `Lease ${JSON.stringify(this.toJSON())}`;
  }

  /**
   * Stops the heartbeat and returns the session with `outcome` (default: what
   * {@link setOutcome} chose, else `ok`) and, for `ok` and `error`, its new storage state (see
   * {@link withLease}); closes the contexts from {@link newContext}. Once only.
   * @throws LeaseLost when the broker reclaimed the lease meanwhile
   */
  async release(outcome: Outcome = this.#outcome ?? "ok"): Promise<ReleaseSummary> {
    if (this.#released) throw new AuthkeeperError("this lease was released already");
    this.#released = true;
    await this.#stopHeartbeat?.();
    const state = this.stateToSend(outcome, await this.captureContexts());
    try {
      this.summary = (await this.#client.call({
        method: "POST",
        path: `/v1/leases/${encodeURIComponent(this.leaseId)}/release`,
        body: state === undefined ? { outcome } : { outcome, storage_state: state },
      })) as ReleaseSummary;
      return this.summary;
    } catch (error) {
      if (error instanceof LeaseLost || error instanceof UnknownLease) this.lost = true;
      throw error;
    }
  }

  /** @internal */
  startHeartbeat(start: (lease: Lease) => () => Promise<void>): void {
    this.#stopHeartbeat = start(this);
  }

  /** @internal The interval of the heartbeat, in milliseconds. */
  intervalMs(): number {
    const ttlMs = this.ttl !== undefined ? this.ttl * 1000 : this.expiresAt.getTime() - Date.now();
    return ttlMs <= 0 ? FALLBACK_INTERVAL_MS : Math.max(200, ttlMs / 3);
  }

  /** Renews the lease now; false once it is lost. */
  async beat(): Promise<boolean> {
    try {
      const json = (await this.#client.call({
        method: "POST",
        path: `/v1/leases/${encodeURIComponent(this.leaseId)}/heartbeat`,
        body: this.ttl !== undefined ? { lease_ttl: this.ttl } : {},
      })) as { lease_expires_at?: string };
      this.heartbeats++;
      if (json?.lease_expires_at) this.expiresAt = new Date(json.lease_expires_at);
      return true;
    } catch (error) {
      if (error instanceof LeaseLost || error instanceof UnknownLease) {
        this.lost = true;
        warn(`lease of ${this.site}/${this.sessionId} lost: ${error.detail}`);
        return false;
      }
      if (!(error instanceof AuthkeeperError)) throw error;
      warn(`heartbeat of ${this.site}/${this.sessionId} failed (will retry): ${errorName(error)}`);
      return true;
    }
  }

  /** @internal The outcome for how the callback ended. */
  outcomeFor(failed: boolean, error: unknown): Outcome {
    if (!failed) return this.#outcome ?? "ok";
    return error instanceof LeaseOutcome ? error.outcome : "error";
  }

  /** @internal Captures the state of the contexts from {@link newContext} and closes them. */
  async captureContexts(): Promise<StorageState | undefined> {
    let captured: StorageState | undefined;
    for (const context of this.#contexts) {
      try {
        const state = (await captureState(context)) as StorageState;
        captured = mergeSessionStorage(state, await readPages(context), this.#storageState);
      } catch (error) {
        warn(`could not capture a context's storage state: ${errorName(error)}`);
      }
      await context.close().catch(() => undefined); // already closed, or the browser is gone
    }
    return captured;
  }

  /** @internal The state to send with `outcome`. */
  stateToSend(outcome: Outcome, captured: StorageState | undefined): StorageState | undefined {
    if (outcome !== "ok" && outcome !== "error") return undefined;
    return this.#stateSet ? this.#storageState : captured;
  }
}

/** Renews a lease until stopped or lost; answers the function that stops it. */
function startHeartbeat(lease: Lease): () => Promise<void> {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  const loop = (async () => {
    while (!stopped) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, lease.intervalMs());
        timer.unref();
      });
      if (stopped || !(await lease.beat())) return;
    }
  })();
  return async () => {
    stopped = true;
    clearTimeout(timer);
    wake?.();
    await loop;
  };
}

/**
 * Leases a logged-in browser session of `site` and starts its heartbeat; call
 * {@link Lease.release} when done (prefer {@link withLease}, which always does). For leases that
 * span hooks, e.g. Crawlee's pre- and post-navigation hooks.
 * @throws NoSessionAvailable (with `retryAfter`) when every session is leased; Forbidden for a
 *   site the key may not use
 */
export async function acquireLease(site: string, options: LeaseOptions = {}): Promise<Lease> {
  const client = options.client ?? new Client();
  const ttl = options.ttl === undefined ? undefined : Math.max(1, Math.floor(options.ttl));
  const body: Record<string, unknown> = {};
  if (options.account !== undefined) body["account"] = options.account;
  if (ttl !== undefined) body["lease_ttl"] = ttl;
  const json = (await client.call({
    method: "POST",
    path: `/v1/sessions/${encodeURIComponent(site)}/lease`,
    body,
  })) as LeaseJson;
  const lease = new Lease(client, json, ttl);
  lease.startHeartbeat(startHeartbeat);
  return lease;
}

/**
 * Leases a logged-in browser session of `site`, runs `work` with it, and releases it: `ok` when
 * `work` returns, `blocked` / `logged_out` when it throws {@link Blocked} / {@link LoggedOut},
 * `error` when it throws anything else (rethrown after the release). Heartbeats keep the lease
 * alive meanwhile.
 * @returns what `work` returned
 * @throws NoSessionAvailable (with `retryAfter`) when every session is leased; Forbidden for a site
 *   the key may not use; LeaseLost when the lease was reclaimed while `work` succeeded
 */
export async function withLease<T>(
  site: string,
  work: (lease: Lease) => Promise<T> | T,
  options: LeaseOptions = {},
): Promise<T> {
  const lease = await acquireLease(site, options);
  let failed = false;
  let failure: unknown;
  let result: T | undefined;
  try {
    result = await work(lease);
  } catch (error) {
    failed = true;
    failure = error;
  }
  try {
    await lease.release(lease.outcomeFor(failed, failure));
  } catch (error) {
    if (!failed) throw error;
    warn(`release of ${lease.site}/${lease.sessionId} failed after the callback threw: ${errorName(error)}`);
  }
  if (failed) throw failure;
  return result as T;
}
