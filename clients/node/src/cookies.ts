/**
 * The `Cookie` header a browser would send for a URL, from a Playwright storage state (RFC 6265
 * matching: host-only and domain cookies, path, `Secure`, expiry), for HTTP-only workers.
 * @module
 */

import type { StorageState, StorageStateCookie } from "./lease.js";

function domainMatches(host: string, cookie: StorageStateCookie): boolean {
  const domain = cookie.domain.toLowerCase();
  if (!domain.startsWith(".")) return host === domain;
  const bare = domain.slice(1);
  return host === bare || host.endsWith(domain);
}

function pathMatches(path: string, cookiePath: string): boolean {
  if (path === cookiePath) return true;
  if (!path.startsWith(cookiePath)) return false;
  return cookiePath.endsWith("/") || path[cookiePath.length] === "/";
}

/** The `Cookie` header value for `url` ("" when no cookie applies). */
export function cookieHeader(storageState: StorageState, url: string | URL, now: number = Date.now()): string {
  const target = new URL(url);
  const host = target.hostname.toLowerCase().replace(/^\[|\]$/g, "");
  const secure = target.protocol === "https:";
  return storageState.cookies
    .filter(
      (cookie) =>
        domainMatches(host, cookie) &&
        pathMatches(target.pathname || "/", cookie.path || "/") &&
        (!cookie.secure || secure) &&
        (cookie.expires === undefined || cookie.expires < 0 || cookie.expires * 1000 > now),
    )
    .sort((a, b) => (b.path || "/").length - (a.path || "/").length)
    .map((cookie) => `${cookie.name}=${cookie.value}`)
    .join("; ");
}
