/**
 * `authkeeperFetch`: a `fetch` that signs every request with a broker token and does the
 * 401 → report → retry-once dance.
 * @module
 */

import { shouldRefresh } from "./challenge.js";
import { Client } from "./client.js";
import type { Token } from "./token.js";
import { DEFAULT_MIN_TTL, TokenSource } from "./tokens.js";

/** Options of {@link authkeeperFetch}. */
export interface AuthkeeperFetchOptions {
  /** The broker client (default: `new Client()` from `AUTHKEEPER_URL` and `AUTHKEEPER_API_KEY`). */
  client?: Client;
  /** Seconds the token must stay valid (default {@link DEFAULT_MIN_TTL}; `null`: no minimum). */
  minTtl?: number | null;
  /** The `fetch` that sends the requests (default: the global one). */
  fetch?: typeof fetch;
}

/** A `fetch`-compatible function, plus how many requests it retried after a 401. */
export interface AuthkeeperFetch {
  (input: string | URL | Request, init?: RequestInit): Promise<Response>;
  /** How many requests were sent again with a newer token. */
  readonly retried: number;
  /** The token source (credential, client, minTtl). */
  readonly tokens: TokenSource;
}

/**
 * A `fetch` for credential `credential`: sets `Authorization: Bearer <token>`; when the API answers
 * 401 and its `WWW-Authenticate` says `invalid_token` (or the 401 has no challenge), reports the
 * token's generation to the broker and sends the request once more with the newer token. A 403 or
 * a 401 `insufficient_scope` is never retried. The request body is buffered so that it can be
 * replayed. Redirects follow `fetch`'s rules (the `Authorization` header is dropped across origins).
 */
export function authkeeperFetch(credential: string, options: AuthkeeperFetchOptions = {}): AuthkeeperFetch {
  const tokens = new TokenSource(
    credential,
    options.client ?? new Client(),
    options.minTtl === undefined ? DEFAULT_MIN_TTL : options.minTtl,
  );
  const send = options.fetch ?? globalThis.fetch;

  const signed = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const request = new Request(input, init);
    const body = request.body ? await request.arrayBuffer() : undefined;
    const attempt = (token: Token): Promise<Response> => {
      const headers = new Headers(request.headers);
      headers.set("authorization", token.authorization);
      return send(request.url, {
        method: request.method,
        headers,
        body,
        redirect: request.redirect,
        signal: request.signal,
      });
    };
    const token = await tokens.token();
    const response = await attempt(token);
    const challenge = response.headers.get("www-authenticate");
    if (!shouldRefresh(response.status, challenge === null ? [] : [challenge])) return response;
    await response.arrayBuffer().catch(() => undefined); // drain: the connection can be reused
    return attempt(await tokens.rejected(token.generation));
  };

  return Object.defineProperties(signed, {
    retried: { get: () => tokens.retried, enumerable: true },
    tokens: { value: tokens, enumerable: false },
  }) as AuthkeeperFetch;
}
