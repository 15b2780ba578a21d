//! An RFC 6265 cookie jar over a [`StorageState`]: the `Cookie` header a request carries, and the
//! `Set-Cookie` answers applied back to the state, in Playwright's form.
//!
//! Matching and the parsing of `Set-Cookie` use the `cookie_store` and `cookie` crates (domain
//! match with host-only versus domain cookies, path match, default path); time comes from the
//! caller's `now`, never from the system clock, and the browser rules `cookie_store` does not have
//! are added here: `Secure` cookies are sent to and accepted from `https` and loopback hosts only
//! (`localhost`, `127.0.0.0/8`, `::1`, as Chromium treats them as secure), the `__Secure-` and
//! `__Host-` prefixes, `SameSite=None` requires `Secure`, a plain-HTTP answer cannot overwrite a
//! `Secure` cookie, expiries are capped at 400 days (RFC 6265bis), and a `Domain` that is a single
//! label (`com`) or an IP address other than the host is refused.

use std::net::IpAddr;
use std::time::Duration;

use authkeeper_core::Timestamp;
use cookie_store::{CookieDomain, CookiePath, RawCookie};
use url::{Host, Url};

use crate::storage_state::{MAX_COOKIES, SameSite, StateCookie, StorageState};

/// Longest `Set-Cookie` value considered (bytes); longer ones are ignored.
pub const MAX_SET_COOKIE_BYTES: usize = 8192;
/// Longest cookie lifetime a `Set-Cookie` can give (RFC 6265bis: 400 days).
pub const MAX_COOKIE_LIFETIME: Duration = Duration::from_secs(400 * 24 * 3600);

/// True when `url`'s scheme carries cookies (`http`, `https`, `ws`, `wss`).
fn is_http_like(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https" | "ws" | "wss")
}

/// True when `url` is a secure context for cookies: `https`/`wss`, or a loopback host.
pub fn is_secure_url(url: &Url) -> bool {
    if matches!(url.scheme(), "https" | "wss") {
        return true;
    }
    match url.host() {
        Some(Host::Domain(domain)) => {
            let domain = domain.trim_end_matches('.');
            domain.eq_ignore_ascii_case("localhost")
                || domain.to_ascii_lowercase().ends_with(".localhost")
        }
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn cookie_domain(cookie: &StateCookie) -> CookieDomain {
    if cookie.is_domain_cookie() {
        CookieDomain::Suffix(cookie.host())
    } else {
        CookieDomain::HostOnly(cookie.host())
    }
}

/// True when `cookie` is sent with a request to `url` at `now` (RFC 6265 §5.4: domain and path
/// match, `Secure` only to a secure URL, not expired).
pub fn cookie_matches(cookie: &StateCookie, url: &Url, now: Timestamp) -> bool {
    is_http_like(url)
        && !cookie.is_expired(now)
        && (!cookie.secure || is_secure_url(url))
        && cookie_domain(cookie).matches(url)
        && CookiePath::parse(&cookie.path).is_some_and(|path| path.matches(url))
}

/// The cookies sent with a request to `url` at `now`, in `Cookie` header order: longer paths
/// first, then the state's order (which stands for creation order).
pub fn matching_cookies<'a>(
    state: &'a StorageState,
    url: &Url,
    now: Timestamp,
) -> Vec<&'a StateCookie> {
    let mut cookies: Vec<&StateCookie> = state
        .cookies
        .iter()
        .filter(|cookie| cookie_matches(cookie, url, now))
        .collect();
    cookies.sort_by_key(|cookie| std::cmp::Reverse(cookie.path.len()));
    cookies
}

/// The `Cookie` header for a request to `url` at `now` (`name=value; name2=value2`), or `None`
/// when no cookie matches. The header holds secrets: never log it.
pub fn cookie_header(state: &StorageState, url: &Url, now: Timestamp) -> Option<String> {
    let cookies = matching_cookies(state, url, now);
    if cookies.is_empty() {
        return None;
    }
    let mut header = String::new();
    for (i, cookie) in cookies.iter().enumerate() {
        if i > 0 {
            header.push_str("; ");
        }
        header.push_str(&cookie.name);
        header.push('=');
        header.push_str(&cookie.value);
    }
    Some(header)
}

/// What [`merge_set_cookie`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeSummary {
    /// New cookies appended.
    pub added: usize,
    /// Cookies replaced in place (same name, domain and path).
    pub replaced: usize,
    /// Cookies deleted (`Max-Age=0` or a past `Expires`).
    pub removed: usize,
    /// `Set-Cookie` values ignored (unparsable, wrong domain, insecure, …).
    pub rejected: usize,
}

impl MergeSummary {
    /// True when the state changed.
    pub fn changed(&self) -> bool {
        self.added + self.replaced + self.removed > 0
    }
}

enum Change {
    Set(StateCookie),
    Delete {
        name: String,
        domain: String,
        path: String,
    },
}

/// Applies `Set-Cookie` header values answered by `url` at `now` to `state`: new cookies are
/// appended, a cookie with the same name, domain and path is replaced in place (keeping its
/// position, as browsers keep its creation time), `Max-Age<=0` or a past `Expires` deletes it.
/// localStorage and the other cookies are untouched. Values that a browser would refuse are
/// ignored (and counted in [`MergeSummary::rejected`]).
pub fn merge_set_cookie<'a, I>(
    state: &mut StorageState,
    url: &Url,
    set_cookie_values: I,
    now: Timestamp,
) -> MergeSummary
where
    I: IntoIterator<Item = &'a str>,
{
    let mut summary = MergeSummary::default();
    for header in set_cookie_values {
        let change = match parse_set_cookie(state, header, url, now) {
            Ok(change) => change,
            Err(reason) => {
                tracing::debug!(reason, "Set-Cookie ignored");
                summary.rejected += 1;
                continue;
            }
        };
        match change {
            Change::Set(cookie) => {
                let existing = state.cookies.iter().position(|old| {
                    old.name == cookie.name
                        && old.domain.eq_ignore_ascii_case(&cookie.domain)
                        && old.path == cookie.path
                });
                match existing {
                    Some(at) => {
                        state.cookies[at] = cookie;
                        summary.replaced += 1;
                    }
                    None if state.cookies.len() >= MAX_COOKIES => {
                        tracing::debug!("Set-Cookie ignored: the state holds too many cookies");
                        summary.rejected += 1;
                    }
                    None => {
                        state.cookies.push(cookie);
                        summary.added += 1;
                    }
                }
            }
            Change::Delete { name, domain, path } => {
                let before = state.cookies.len();
                state.cookies.retain(|old| {
                    !(old.name == name
                        && old.domain.eq_ignore_ascii_case(&domain)
                        && old.path == path)
                });
                summary.removed += before - state.cookies.len();
            }
        }
    }
    summary
}

fn parse_set_cookie(
    state: &StorageState,
    header: &str,
    url: &Url,
    now: Timestamp,
) -> Result<Change, &'static str> {
    if !is_http_like(url) {
        return Err("the URL is not http(s)");
    }
    if header.len() > MAX_SET_COOKIE_BYTES {
        return Err("too long");
    }
    let raw = RawCookie::parse(header).map_err(|_| "unparsable")?;
    if raw.name().is_empty() {
        return Err("empty name");
    }
    let parsed =
        cookie_store::Cookie::try_from_raw_cookie(&raw, url).map_err(|_| "domain mismatch")?;
    let host = url.host_str().ok_or("no host")?.to_ascii_lowercase();
    let host_is_ip = host.starts_with('[') || host.parse::<IpAddr>().is_ok();
    let domain = match &parsed.domain {
        CookieDomain::HostOnly(h) => h.to_ascii_lowercase(),
        CookieDomain::Suffix(suffix) => {
            let suffix = suffix.to_ascii_lowercase();
            if host_is_ip || (suffix == host && !suffix.contains('.')) {
                // IP addresses and single-label hosts (localhost) get host-only cookies.
                if suffix != host {
                    return Err("domain attribute on an IP address host");
                }
                host.clone()
            } else if !suffix.contains('.') {
                return Err("domain attribute is a top-level domain");
            } else {
                format!(".{suffix}")
            }
        }
        CookieDomain::NotPresent | CookieDomain::Empty => host.clone(),
    };
    let path = String::from(&parsed.path);
    let secure = raw.secure().unwrap_or(false);
    let secure_url = is_secure_url(url);
    if secure && !secure_url {
        return Err("Secure cookie from an insecure URL");
    }
    let name = raw.name();
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("__secure-") && !secure {
        return Err("__Secure- cookie without Secure");
    }
    if lower.starts_with("__host-") && (!secure || domain.starts_with('.') || path != "/") {
        return Err("__Host- cookie with Domain, without Secure or with a path other than /");
    }
    let same_site = match raw.same_site() {
        Some(cookie::SameSite::Strict) => SameSite::Strict,
        Some(cookie::SameSite::None) => SameSite::None,
        Some(cookie::SameSite::Lax) | None => SameSite::Lax,
    };
    if same_site == SameSite::None && !secure {
        return Err("SameSite=None without Secure");
    }
    if !secure_url {
        // RFC 6265bis §5.7 step 16: plain HTTP cannot shadow a Secure cookie.
        let new_host = domain.trim_start_matches('.');
        let shadows = state.cookies.iter().any(|old| {
            old.secure
                && old.name == name
                && (old.host() == new_host
                    || old.host().ends_with(&format!(".{new_host}"))
                    || new_host.ends_with(&format!(".{}", old.host())))
                && old.path.starts_with(&path)
        });
        if shadows {
            return Err("would overwrite a Secure cookie over plain HTTP");
        }
    }

    let now_ms = now.as_millis();
    let cap_ms = now_ms.saturating_add(MAX_COOKIE_LIFETIME.as_millis() as i64);
    let expires_ms = if let Some(max_age) = raw.max_age() {
        let seconds = max_age.whole_seconds();
        if seconds <= 0 {
            None
        } else {
            Some(
                now_ms
                    .saturating_add(seconds.saturating_mul(1000))
                    .min(cap_ms),
            )
        }
    } else if let Some(at) = raw.expires_datetime() {
        let at_ms = at.unix_timestamp().saturating_mul(1000);
        if at_ms <= now_ms {
            None
        } else {
            Some(at_ms.min(cap_ms))
        }
    } else {
        Some(-1)
    };
    let Some(expires_ms) = expires_ms else {
        return Ok(Change::Delete {
            name: name.to_owned(),
            domain,
            path,
        });
    };
    let mut cookie = StateCookie::new(name, raw.value(), domain, path);
    cookie.expires = if expires_ms < 0 {
        -1.0
    } else {
        expires_ms as f64 / 1000.0
    };
    cookie.http_only = raw.http_only().unwrap_or(false);
    cookie.secure = secure;
    cookie.same_site = same_site;
    cookie.validate().map_err(|_| "not a valid cookie")?;
    Ok(Change::Set(cookie))
}
