/**
 * RFC 6750 `WWW-Authenticate` parsing, and the one decision that follows from it: may a refused
 * request be retried with a newer token?
 *
 * The rule is the broker's own (`authkeeper_core::www_authenticate`): a 401 means the token is
 * expired or revoked (report it, retry once) unless its Bearer challenge says
 * `error="insufficient_scope"` or `error="invalid_request"`; a 401 with `invalid_token`, without
 * an error code or without the header at all is retried. A 403 never is.
 * @module
 */

/** One challenge: its scheme, parameters (names lower-cased) and token68 value. */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
  token68?: string;
}

const SEPARATORS = new Set([" ", "\t", ",", "=", '"']);
const NO_RETRY_ERRORS = new Set(["insufficient_scope", "invalid_request"]);

class Scanner {
  pos = 0;
  constructor(readonly text: string) {}

  skip(chars = " \t"): void {
    while (this.pos < this.text.length && chars.includes(this.text[this.pos]!)) this.pos++;
  }

  peek(): string {
    return this.text[this.pos] ?? "";
  }

  token(): string {
    const start = this.pos;
    while (this.pos < this.text.length && !SEPARATORS.has(this.text[this.pos]!)) this.pos++;
    return this.text.slice(start, this.pos);
  }

  quoted(): string {
    this.pos++; // opening quote
    let out = "";
    while (this.pos < this.text.length) {
      const char = this.text[this.pos++]!;
      if (char === "\\" && this.pos < this.text.length) out += this.text[this.pos++];
      else if (char === '"') break;
      else out += char;
    }
    return out;
  }

  value(): string {
    this.skip();
    return this.peek() === '"' ? this.quoted() : this.token();
  }

  /** Whether `name =` follows (a parameter, not a new scheme or a token68). */
  isParamNext(): boolean {
    const saved = this.pos;
    this.skip();
    const name = this.token();
    this.skip();
    const answer = name !== "" && this.peek() === "=" && this.text.slice(this.pos, this.pos + 2) !== "==";
    this.pos = saved;
    return answer;
  }
}

/** Parses one `WWW-Authenticate` value into its challenges; malformed parts are skipped. */
export function parseChallenges(header: string): Challenge[] {
  const scanner = new Scanner(header);
  const challenges: Challenge[] = [];
  let current: Challenge | undefined;
  while (scanner.pos < header.length) {
    scanner.skip(" \t,");
    if (scanner.pos >= header.length) break;
    if (current && scanner.isParamNext()) {
      scanner.skip();
      const name = scanner.token().toLowerCase();
      scanner.skip();
      scanner.pos++; // "="
      current.params[name] = scanner.value();
      continue;
    }
    const scheme = scanner.token();
    if (!scheme) {
      scanner.pos++; // a stray separator
      continue;
    }
    current = { scheme, params: {} };
    challenges.push(current);
    scanner.skip();
    if (!["", ","].includes(scanner.peek()) && !scanner.isParamNext()) {
      const start = scanner.pos;
      scanner.token();
      scanner.skip("=");
      current.token68 = header.slice(start, scanner.pos);
    }
  }
  return challenges;
}

/**
 * Whether an API answer of `status` with these `WWW-Authenticate` values means the token was
 * expired or revoked, so that reporting it and retrying once with a newer token can help.
 */
export function shouldRefresh(status: number, wwwAuthenticate: Iterable<string>): boolean {
  if (status !== 401) return false;
  for (const value of wwwAuthenticate) {
    for (const challenge of parseChallenges(value)) {
      const scheme = challenge.scheme.toLowerCase();
      if (scheme === "bearer" || scheme === "dpop") {
        const error = challenge.params["error"];
        return error === undefined || !NO_RETRY_ERRORS.has(error);
      }
    }
  }
  return true;
}
