/**
 * authkeeper — the TypeScript client of the authkeeper broker.
 *
 * ```ts
 * import { authkeeperFetch, withLease, Client } from "authkeeper";
 *
 * const api = authkeeperFetch("crm");                 // AUTHKEEPER_URL, AUTHKEEPER_API_KEY
 * const me = await (await api("https://api.example.com/me")).json();
 *
 * await withLease("portal", async (lease) => {        // a logged-in browser session
 *   const context = await lease.newContext(browser);  // Playwright, with its state, proxy, identity
 * });
 * ```
 * @module
 */

export { parseChallenges, shouldRefresh, type Challenge } from "./challenge.js";
export { Checkpoint, taskFromEnv, type CheckpointSaved } from "./checkpoint.js";
export {
  Client,
  DEFAULT_TIMEOUT_MS,
  MAX_WAIT,
  MISSING,
  type Call,
  type ClientOptions,
  type SessionSummary,
  type TokenOptions,
} from "./client.js";
export { cookieHeader } from "./cookies.js";
export {
  AuthkeeperError,
  Blocked,
  BrokerError,
  Forbidden,
  InvalidRequest,
  LeaseLost,
  LeaseOutcome,
  LoggedOut,
  NeedsReauth,
  NoSessionAvailable,
  PROBLEM_PREFIX,
  RetryableError,
  TransportError,
  Unauthorized,
  Unavailable,
  UnknownLease,
  errorFromResponse,
  parseRetryAfter,
  type Outcome,
  type Problem,
} from "./errors.js";
export { authkeeperFetch, type AuthkeeperFetch, type AuthkeeperFetchOptions } from "./fetch.js";
export {
  Lease,
  acquireLease,
  withLease,
  type LeaseOptions,
  type ReleaseSummary,
  type StorageState,
  type StorageStateCookie,
} from "./lease.js";
export {
  contextOptions,
  identityOptions,
  proxySettings,
  type BrowserContextLike,
  type BrowserLike,
  type ProxySettings,
} from "./playwright.js";
export { Token, type TokenJson } from "./token.js";
export { DEFAULT_MIN_TTL, TokenSource } from "./tokens.js";
