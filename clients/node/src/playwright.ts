/**
 * Playwright `newContext` options for a leased session: its storage state, its proxy (split into
 * `server` / `username` / `password`) and its identity. No import of Playwright: structural types.
 * @module
 */

import type { StorageState } from "./lease.js";

/** Playwright proxy settings. */
export interface ProxySettings {
  server: string;
  username?: string;
  password?: string;
}

/** The part of a Playwright `BrowserContext` a lease uses. */
export interface BrowserContextLike {
  storageState(): Promise<unknown>;
  close(): Promise<void>;
}

/** The part of a Playwright `Browser` a lease uses (`playwright` or `playwright-core`). */
export interface BrowserLike<C extends BrowserContextLike = BrowserContextLike> {
  newContext(options?: Record<string, unknown>): Promise<C>;
}

/** Identity keys that are Playwright `newContext` options. */
const IDENTITY_KEYS = [
  "userAgent",
  "locale",
  "timezoneId",
  "viewport",
  "extraHTTPHeaders",
  "geolocation",
  "deviceScaleFactor",
  "isMobile",
  "hasTouch",
  "colorScheme",
] as const;

/**
 * Playwright proxy settings for a proxy URL such as `http://user:pass@10.0.0.5:3128`:
 * `{ server: "http://10.0.0.5:3128", username: "user", password: "pass" }` (percent-decoded).
 */
export function proxySettings(proxy: string | undefined | null): ProxySettings | undefined {
  if (!proxy) return undefined;
  const url = new URL(proxy.includes("://") ? proxy : `http://${proxy}`);
  const settings: ProxySettings = { server: `${url.protocol}//${url.host}` };
  if (url.username) settings.username = decodeURIComponent(url.username);
  if (url.password) settings.password = decodeURIComponent(url.password);
  return settings;
}

/** The identity's Playwright `newContext` options (unknown keys skipped). */
export function identityOptions(identity: Record<string, unknown> | undefined | null): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  for (const key of IDENTITY_KEYS) {
    const value = identity?.[key];
    if (value !== undefined && value !== null) options[key] = value;
  }
  return options;
}

/** `newContext` options for a session: identity, proxy and storage state. */
export function contextOptions(
  storageState: StorageState | undefined,
  proxy: string | undefined,
  identity: Record<string, unknown> | undefined,
): Record<string, unknown> {
  const options = identityOptions(identity);
  const settings = proxySettings(proxy);
  if (settings) options["proxy"] = settings;
  if (storageState) options["storageState"] = storageState;
  return options;
}
