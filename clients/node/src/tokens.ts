/**
 * `TokenSource`: the tokens of one credential for request-signing integrations
 * ({@link authkeeperFetch}), with the default `minTtl` and its fallback.
 * @module
 */

import type { Client } from "./client.js";
import { InvalidRequest } from "./errors.js";
import type { Token } from "./token.js";

/**
 * Seconds a token must still be valid when it is attached to a request, so that it does not
 * expire in flight: long enough for a slow request, short next to common lifetimes (5 min to 1 h,
 * 0.3-3 %). For shorter lifetimes the broker refuses it (400) and tokens are asked for without
 * `min_ttl` from then on; the 401 retry covers the rest.
 */
export const DEFAULT_MIN_TTL = 10;

/** Tokens of `credential`, at least `minTtl` seconds from expiry. */
export class TokenSource {
  #minTtlRefused = false;
  #retried = 0;

  constructor(
    readonly credential: string,
    readonly client: Client,
    readonly minTtl: number | null = DEFAULT_MIN_TTL,
  ) {}

  /** How many refused tokens were reported (each followed by one retry). */
  get retried(): number {
    return this.#retried;
  }

  /** A token for the next request (`minTtl` dropped once the broker refuses it). */
  async token(): Promise<Token> {
    if (this.minTtl !== null && !this.#minTtlRefused) {
      try {
        return await this.client.token(this.credential, { minTtl: this.minTtl });
      } catch (error) {
        if (!(error instanceof InvalidRequest)) throw error;
        // min_ttl not shorter than the token lifetime: these tokens live too briefly for it.
        this.#minTtlRefused = true;
      }
    }
    return this.client.token(this.credential);
  }

  /** Reports that an API refused the token of `generation`; answers the token to retry with. */
  async rejected(generation: number): Promise<Token> {
    const fresh = await this.client.rejected(this.credential, generation);
    this.#retried++;
    return fresh;
  }
}
