/**
 * The access token the broker hands out. The token itself lives in a private field: it is not
 * printed by `console.log`, `util.inspect` or `JSON.stringify`.
 * @module
 */

/** The JSON the broker answers for a token. */
export interface TokenJson {
  access_token: string;
  token_type?: string;
  expires_at: string;
  generation: number;
}

/** An access token of a credential, with the generation to report when an API refuses it. */
export class Token {
  readonly #accessToken: string;
  /** As the provider said, usually `Bearer`. */
  readonly tokenType: string;
  /** When it expires. */
  readonly expiresAt: Date;
  /** Its token set's generation: pass it to `client.rejected()` when an API answers 401. */
  readonly generation: number;

  constructor(json: TokenJson) {
    this.#accessToken = String(json.access_token);
    this.tokenType = json.token_type ?? "Bearer";
    this.expiresAt = new Date(json.expires_at);
    this.generation = Number(json.generation);
  }

  /** The bearer token. Do not log it. */
  get accessToken(): string {
    return this.#accessToken;
  }

  /** The `Authorization` header value: `Bearer <token>`. */
  get authorization(): string {
    return `Bearer ${this.#accessToken}`;
  }

  /** Seconds until it expires (negative once expired). */
  get expiresIn(): number {
    return (this.expiresAt.getTime() - Date.now()) / 1000;
  }

  /** Everything but the token. */
  toJSON(): { tokenType: string; expiresAt: string; generation: number } {
    return { tokenType: this.tokenType, expiresAt: this.expiresAt.toISOString(), generation: this.generation };
  }
}
