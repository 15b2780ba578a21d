/**
 * The broker client: tokens, rejected reports, long polls for a re-login, checkpoints, sessions.
 * Connections are kept alive by Node's global `fetch` (one pool per process).
 * @module
 */

import { Checkpoint, taskFromEnv } from "./checkpoint.js";
import { AuthkeeperError, BrokerError, NeedsReauth, TransportError, errorFromResponse } from "./errors.js";
import { Token, type TokenJson } from "./token.js";

/** Seconds of `wait` the broker accepts at most. */
export const MAX_WAIT = 300;

/** How long one request to the broker may take by default (its own `request_timeout` is 30 s). */
export const DEFAULT_TIMEOUT_MS = 35_000;

/** Options of {@link Client}. */
export interface ClientOptions {
  /** The broker's base URL, e.g. `http://127.0.0.1:7878`; default `AUTHKEEPER_URL`. */
  url?: string;
  /** The client key (`ak_...`); default `AUTHKEEPER_API_KEY`. */
  apiKey?: string;
  /** Milliseconds one request may take (a long poll gets its `wait` on top). */
  timeoutMs?: number;
  /** The `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
}

/** Options of {@link Client.token}. */
export interface TokenOptions {
  /** Seconds the token must stay valid; must be shorter than its lifetime (else {@link InvalidRequest}). */
  minTtl?: number;
  /** When re-authentication is needed, block up to this many seconds (at most 300) for a new login. */
  wait?: number;
}

/** One request to the broker. */
export interface Call {
  method: string;
  path: string;
  query?: Record<string, string>;
  body?: unknown;
  /** Milliseconds added to the timeout (a long poll). */
  extraTimeoutMs?: number;
  /** Answer `undefined` for a 404 instead of throwing. */
  missingOk?: boolean;
}

/** Marks a 404 that a call allowed. */
export const MISSING: unique symbol = Symbol("missing");

/** Metadata of a session (`GET /v1/sessions`): never a cookie. */
export interface SessionSummary {
  id: string;
  site: string;
  account: string;
  state: "active" | "needs_login" | "retired";
  reason: string | null;
  has_proxy: boolean;
  usage_count: number;
  error_score: number;
  leased_by: string | null;
  lease_expires_at: string | null;
  [key: string]: unknown;
}

function segment(name: string): string {
  return encodeURIComponent(name);
}

function wholeSeconds(value: number, max: number): string {
  return String(Math.max(0, Math.min(max, Math.floor(value))));
}

/**
 * A client of an authkeeper broker (`authkeeper serve`, or the private broker of
 * `authkeeper exec`). Share one per process. The client key never appears in a message.
 */
export class Client {
  /** The broker's base URL (no trailing slash). */
  readonly url: string;
  /** Milliseconds one request may take. */
  readonly timeoutMs: number;
  readonly #headers: Record<string, string>;
  readonly #fetch: typeof fetch;

  constructor(options: ClientOptions = {}) {
    const url = options.url ?? process.env["AUTHKEEPER_URL"];
    if (!url) {
      throw new AuthkeeperError("no broker URL: pass { url } or set AUTHKEEPER_URL (authkeeper exec sets it)");
    }
    this.url = url.replace(/\/+$/, "");
    const key = options.apiKey ?? process.env["AUTHKEEPER_API_KEY"];
    this.#headers = key ? { authorization: `Bearer ${key}` } : {};
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#fetch = options.fetch ?? globalThis.fetch;
  }

  /** Sends one request and decodes the answer: JSON, `undefined` when empty, {@link MISSING}, or throws. */
  async call(call: Call): Promise<unknown> {
    const url = new URL(this.url + call.path);
    for (const [name, value] of Object.entries(call.query ?? {})) url.searchParams.set(name, value);
    const headers: Record<string, string> = { ...this.#headers, accept: "application/json" };
    let body: string | undefined;
    if (call.body !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(call.body);
    }
    let response: Response;
    let text: string;
    try {
      response = await this.#fetch(url, {
        method: call.method,
        headers,
        body,
        signal: AbortSignal.timeout(this.timeoutMs + (call.extraTimeoutMs ?? 0)),
      });
      text = await response.text();
    } catch (error) {
      const reason = error instanceof Error ? error.name : "error";
      throw new TransportError(`the broker at ${this.url} did not answer: ${reason}`, { cause: error });
    }
    if (call.missingOk && response.status === 404) return MISSING;
    if (response.status >= 400) throw errorFromResponse(response.status, response.headers, text);
    if (!text) return undefined;
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new BrokerError({ type: "about:blank", detail: "the broker answered something that is not JSON" }, response.status);
    }
  }

  /**
   * A valid access token of credential `name`.
   * @throws NeedsReauth, Unavailable, Forbidden, Unauthorized, InvalidRequest, TransportError
   */
  async token(name: string, options: TokenOptions = {}): Promise<Token> {
    const query: Record<string, string> = {};
    if (options.minTtl !== undefined) query["min_ttl"] = wholeSeconds(options.minTtl, Number.MAX_SAFE_INTEGER);
    let extraTimeoutMs = 0;
    if (options.wait !== undefined) {
      query["wait"] = wholeSeconds(options.wait, MAX_WAIT);
      extraTimeoutMs = Number(query["wait"]) * 1000;
    }
    const json = await this.call({ method: "GET", path: `/v1/credentials/${segment(name)}/token`, query, extraTimeoutMs });
    return new Token(json as TokenJson);
  }

  /**
   * Reports that an API refused the token of `generation` (401 `invalid_token`) and answers a
   * newer token. The broker refreshes only if that generation is still current.
   */
  async rejected(name: string, generation: number): Promise<Token> {
    const json = await this.call({
      method: "POST",
      path: `/v1/credentials/${segment(name)}/rejected`,
      body: { generation },
    });
    return new Token(json as TokenJson);
  }

  /**
   * Waits up to `timeoutS` seconds for credential `name` to be usable again (someone ran
   * `authkeeper login` or `import`), long-polling the broker, and answers its token.
   * @throws NeedsReauth when still not re-authenticated after `timeoutS`
   */
  async waitForReauth(name: string, timeoutS: number): Promise<Token> {
    const deadline = Date.now() + Math.max(0, timeoutS) * 1000;
    for (;;) {
      const started = Date.now();
      try {
        return await this.token(name, { wait: (deadline - started) / 1000 });
      } catch (error) {
        if (!(error instanceof NeedsReauth) || deadline - Date.now() < 1000) throw error;
        if (Date.now() - started < 1000) await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  }

  /** The credential's status (state, generation, expiry, failures; never a secret). */
  async status(name: string): Promise<Record<string, unknown>> {
    return (await this.call({ method: "GET", path: `/v1/credentials/${segment(name)}` })) as Record<string, unknown>;
  }

  /** The saved progress of `task` (default: the task of `AUTHKEEPER_CHECKPOINT_URL`). */
  checkpoint<T = unknown>(task?: string): Checkpoint<T> {
    return new Checkpoint<T>(this, task ?? taskFromEnv());
  }

  /** Metadata of the sessions this key may see (never a cookie). */
  async sessions(site?: string): Promise<SessionSummary[]> {
    const json = (await this.call({ method: "GET", path: "/v1/sessions", query: site ? { site } : {} })) as {
      sessions?: SessionSummary[];
    };
    return json.sessions ?? [];
  }
}
