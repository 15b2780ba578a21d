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

/** The part of a Playwright `Page` a lease uses. */
export interface PageLike {
  evaluate<R>(fn: () => R | Promise<R>): Promise<R>;
}

/** The part of a Playwright `BrowserContext` a lease uses. */
export interface BrowserContextLike {
  storageState(options?: { indexedDB?: boolean }): Promise<unknown>;
  close(): Promise<void>;
  addInitScript?(script: (arg: Record<string, [string, string][]>) => void, arg: Record<string, [string, string][]>): Promise<void>;
  pages?(): PageLike[];
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

/** sessionStorage entries of a storage state, by origin (authkeeper's `sessionStorage` key). */
export function sessionStorageByOrigin(state: StorageState | undefined): Record<string, [string, string][]> {
  const byOrigin: Record<string, [string, string][]> = {};
  for (const origin of state?.origins ?? []) {
    const entries = origin.sessionStorage ?? [];
    if (entries.length > 0) byOrigin[origin.origin] = entries.map((e) => [e.name, e.value]);
  }
  return byOrigin;
}

/**
 * An init script (runs in the page, so it is self-contained): writes the sessionStorage of the
 * page's origin once per tab, marked by `__authkeeper_restored` (never sent back). Playwright's
 * storageState has no sessionStorage, so a context restores it this way.
 */
export function restoreSessionStorage(byOrigin: Record<string, [string, string][]>): void {
  const storage = (globalThis as unknown as { sessionStorage: { getItem(k: string): string | null; setItem(k: string, v: string): void } }).sessionStorage;
  const origin = (globalThis as unknown as { location: { origin: string } }).location.origin;
  const entries = byOrigin[origin];
  if (!entries || storage.getItem("__authkeeper_restored")) return;
  for (const [k, v] of entries) storage.setItem(k, v);
  storage.setItem("__authkeeper_restored", "1");
}

/** The context's storage state with IndexedDB (Playwright >= 1.51; older versions ignore the option). */
export async function captureState(context: BrowserContextLike): Promise<unknown> {
  return context.storageState({ indexedDB: true });
}

/** sessionStorage of the context's open pages, by origin (pages that cannot answer are skipped). */
export async function readPages(context: BrowserContextLike): Promise<Record<string, [string, string][]>> {
  const seen: Record<string, [string, string][]> = {};
  for (const page of context.pages?.() ?? []) {
    try {
      const [origin, entries] = await page.evaluate(() => {
        const g = globalThis as unknown as { location: { origin: string }; sessionStorage: Record<string, string> };
        return [g.location.origin, Object.entries(g.sessionStorage).filter(([k]) => k !== "__authkeeper_restored")] as [
          string,
          [string, string][],
        ];
      });
      if (origin.startsWith("http")) seen[origin] = entries;
    } catch {
      // closed or navigating page: keep what the lease started with
    }
  }
  return seen;
}

/** `captured` (a Playwright storageState) with sessionStorage: what open pages showed, else the lease's. */
export function mergeSessionStorage(
  captured: StorageState,
  seen: Record<string, [string, string][]>,
  original: StorageState | undefined,
): StorageState {
  const byOrigin = { ...sessionStorageByOrigin(original), ...seen };
  const origins = (captured.origins ?? []).map((o) => ({ ...o }));
  const present = new Set(origins.map((o) => o.origin));
  for (const origin of origins) {
    const entries = byOrigin[origin.origin];
    if (entries && entries.length > 0) origin.sessionStorage = entries.map(([name, value]) => ({ name, value }));
  }
  for (const [origin, entries] of Object.entries(byOrigin)) {
    if (!present.has(origin) && entries.length > 0) {
      origins.push({ origin, localStorage: [], sessionStorage: entries.map(([name, value]) => ({ name, value })) });
    }
  }
  return { ...captured, origins };
}
