/**
 * Errors of the authkeeper client, and the mapping from the broker's RFC 9457
 * `application/problem+json` answers to them.
 *
 * Every error is an {@link AuthkeeperError}. Broker answers become a {@link BrokerError} subclass
 * chosen by the problem `type` (`urn:authkeeper:problem:<slug>`); a broker that cannot be reached
 * is a {@link TransportError}. {@link Blocked} and {@link LoggedOut} are thrown by *your* code
 * inside {@link withLease} to release the session with that outcome.
 *
 * Messages carry the broker's `detail` (never a secret) and never a token, cookie or client key.
 * @module
 */

/** The prefix of every authkeeper problem type. */
export const PROBLEM_PREFIX = "urn:authkeeper:problem:";

/** An RFC 9457 problem document as the broker answers it. */
export interface Problem {
  type: string;
  title?: string;
  status?: number;
  detail?: string;
  credential?: string;
  login_hint?: string;
  next_attempt_at?: string;
  [key: string]: unknown;
}

/** Base class of every error of this package. */
export class AuthkeeperError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The broker could not be reached or did not answer in time (see `cause`). */
export class TransportError extends AuthkeeperError {}

/** The broker answered with an error. */
export class BrokerError extends AuthkeeperError {
  /** The problem type, e.g. `urn:authkeeper:problem:configuration` (`about:blank` if not problem+json). */
  readonly type: string;
  /** The HTTP status. */
  readonly status: number;
  /** The problem's fixed title. */
  readonly title: string;
  /** What went wrong this time (never a secret). */
  readonly detail: string;
  /** The credential concerned, when the broker named one. */
  readonly credential: string | undefined;
  /** The whole problem document. */
  readonly problem: Problem;

  constructor(problem: Problem, status: number) {
    const detail = problem.detail ?? `the broker answered HTTP ${status}`;
    super(problem.title ? `${problem.title} (${status}): ${detail}` : `HTTP ${status}: ${detail}`);
    this.type = problem.type;
    this.status = status;
    this.title = problem.title ?? "";
    this.detail = detail;
    this.credential = typeof problem.credential === "string" ? problem.credential : undefined;
    this.problem = problem;
  }

  /** The problem type without its `urn:authkeeper:problem:` prefix. */
  get slug(): string {
    return this.type.startsWith(PROBLEM_PREFIX) ? this.type.slice(PROBLEM_PREFIX.length) : this.type;
  }
}

/** The credential's grant is dead: a human must log in again; `loginHint` says what to run. */
export class NeedsReauth extends BrokerError {
  /** E.g. `authkeeper login crm`. */
  get loginHint(): string | undefined {
    return typeof this.problem.login_hint === "string" ? this.problem.login_hint : undefined;
  }
}

/** A problem that says when to retry (`Retry-After`). */
export class RetryableError extends BrokerError {
  /** Seconds to wait before trying again, from `Retry-After` (undefined when absent). */
  readonly retryAfter: number | undefined;
  constructor(problem: Problem, status: number, retryAfter: number | undefined) {
    super(problem, status);
    this.retryAfter = retryAfter;
  }
}

/**
 * Refreshing failed transiently (provider down or rate-limiting): retry after `retryAfter`
 * seconds. Also thrown while the store is unavailable, the broker is not ready, or a request
 * timed out at the broker.
 */
export class Unavailable extends RetryableError {
  /** When the broker tries the provider again (RFC 3339), when it said. */
  get nextAttemptAt(): string | undefined {
    return typeof this.problem.next_attempt_at === "string" ? this.problem.next_attempt_at : undefined;
  }
}

/** The client key may not use this credential, site or checkpoint (or it does not exist). */
export class Forbidden extends BrokerError {}

/** No client key, or one the broker does not know (`AUTHKEEPER_API_KEY`). */
export class Unauthorized extends BrokerError {}

/** A malformed request, e.g. a `minTtl` not shorter than the token's lifetime. */
export class InvalidRequest extends BrokerError {}

/** Every session of the site is leased; `retryAfter` is when the soonest lease ends. */
export class NoSessionAvailable extends RetryableError {}

/** The lease expired and was reclaimed (or was released already): its state was not stored. */
export class LeaseLost extends BrokerError {}

/** The broker knows no such lease. */
export class UnknownLease extends BrokerError {}

/** The outcomes a lease can be released with. */
export type Outcome = "ok" | "error" | "blocked" | "logged_out";

/** Throw a subclass inside {@link withLease} to release the session with its outcome. */
export class LeaseOutcome extends AuthkeeperError {
  /** The outcome of the release. */
  readonly outcome: Outcome = "error";
}

/**
 * Throw inside {@link withLease} when the site blocked this session (captcha, ban): released as
 * `blocked` (retired at the default pool policy). The error is rethrown after the release.
 */
export class Blocked extends LeaseOutcome {
  override readonly outcome: Outcome = "blocked";
}

/**
 * Throw inside {@link withLease} when the session is logged out: released as `logged_out` (retired
 * or logged in again). The error is rethrown after the release.
 */
export class LoggedOut extends LeaseOutcome {
  override readonly outcome: Outcome = "logged_out";
}

type RetryableClass = new (problem: Problem, status: number, retryAfter: number | undefined) => RetryableError;
type PlainClass = new (problem: Problem, status: number) => BrokerError;

const RETRYABLE: Record<string, RetryableClass> = {
  unavailable: Unavailable,
  "store-unavailable": Unavailable,
  "not-ready": Unavailable,
  timeout: Unavailable,
  "no-session-available": NoSessionAvailable,
};

const PLAIN: Record<string, PlainClass> = {
  "needs-reauth": NeedsReauth,
  forbidden: Forbidden,
  "unknown-credential": Forbidden,
  unauthorized: Unauthorized,
  "invalid-request": InvalidRequest,
  "lease-lost": LeaseLost,
  "unknown-lease": UnknownLease,
};

/** Seconds from a `Retry-After` value: delta-seconds or an HTTP date (never negative). */
export function parseRetryAfter(value: string | null | undefined, now: number = Date.now()): number | undefined {
  if (value == null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text);
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, (at - now) / 1000);
}

/** The error for a broker error answer (`body` as text). */
export function errorFromResponse(status: number, headers: Headers, body: string): BrokerError {
  let problem: Problem = { type: "about:blank" };
  try {
    const parsed: unknown = body ? JSON.parse(body) : undefined;
    if (parsed && typeof parsed === "object" && typeof (parsed as Problem).type === "string") {
      problem = parsed as Problem;
    }
  } catch {
    // not problem+json (e.g. a proxy's HTML page): summarised by its status only
  }
  const slug = problem.type.startsWith(PROBLEM_PREFIX) ? problem.type.slice(PROBLEM_PREFIX.length) : "";
  const retryable = RETRYABLE[slug];
  if (retryable) return new retryable(problem, status, parseRetryAfter(headers.get("retry-after")));
  const plain = PLAIN[slug] ?? BrokerError;
  return new plain(problem, status);
}
