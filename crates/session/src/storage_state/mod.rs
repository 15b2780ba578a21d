//! Playwright `storageState` JSON: cookies (with domain, path, expires, httpOnly, secure,
//! sameSite) and, per origin, localStorage.
//!
//! [`StorageState::from_json`] validates a document and [`StorageState::to_json`] writes it back
//! exactly as Playwright does (`JSON.stringify(state, undefined, 2)`): a file Playwright wrote comes
//! back byte for byte, fields this crate does not know (`partitionKey`, `indexedDB`, …) included,
//! in their original place.
//!
//! Values are secrets: `Debug` never shows a cookie or localStorage value, no [`StateError`]
//! quotes one, and cookie and localStorage values are zeroized when dropped.
//!
//! Files: [`js_json`](self) (the JavaScript-exact JSON codec), [`extra`](self) (unknown fields),
//! [`cookie`](self), [`origin`](self), [`error`](self), and the serde glue.

mod cookie;
mod error;
mod extra;
mod js_json;
mod origin;
mod serde_impls;
#[cfg(test)]
mod tests;

use std::fmt;

use authkeeper_core::Timestamp;
use url::Url;

use self::cookie::take_string;
pub use self::cookie::{SameSite, StateCookie};
pub use self::error::StateError;
use self::error::invalid;
pub(crate) use self::error::quote_name;
pub use self::extra::Extra;
use self::js_json::Json;
pub use self::js_json::js_number;
pub use self::origin::{NameValue, OriginState};

/// Largest storage-state document accepted (16 MiB).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;
/// Most cookies a storage state may hold (Chromium keeps at most 3300 per profile).
pub const MAX_COOKIES: usize = 10_000;
/// Most origins a storage state may hold.
pub const MAX_ORIGINS: usize = 10_000;
/// Most localStorage entries one origin may hold.
pub const MAX_LOCAL_STORAGE_ENTRIES: usize = 100_000;
/// Largest cookie (name and value together, in bytes), as browsers enforce.
pub const MAX_COOKIE_BYTES: usize = 4096;
/// Longest cookie domain or path attribute (bytes).
pub const MAX_ATTRIBUTE_BYTES: usize = 1024;
/// Latest cookie expiry Playwright accepts: 9999-12-31T23:59:59Z, in seconds since the epoch.
pub const MAX_EXPIRES: f64 = 253_402_300_799.0;

/// A browser's storage state, as Playwright's `context.storageState()` writes it.
#[derive(Clone, Default, PartialEq)]
pub struct StorageState {
    /// Every cookie of the context.
    pub cookies: Vec<StateCookie>,
    /// localStorage per origin.
    pub origins: Vec<OriginState>,
    /// Top-level fields this crate does not model, kept for the round trip.
    pub extra: Extra,
}

impl fmt::Debug for StorageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageState")
            .field("cookies", &self.cookies)
            .field("origins", &self.origins)
            .finish()
    }
}

impl StorageState {
    /// Parses and validates a Playwright `storageState` document.
    ///
    /// Fields it does not know are kept (see [`Extra`]); a missing `expires`, `httpOnly`,
    /// `secure` or `sameSite` takes Playwright's default (-1, false, false, `Lax`).
    pub fn from_json(bytes: &[u8]) -> Result<StorageState, StateError> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(StateError::TooLarge {
                size: bytes.len(),
                limit: MAX_DOCUMENT_BYTES,
            });
        }
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let json: Json =
            serde_json::from_slice(bytes).map_err(|err| StateError::MalformedJson {
                line: err.line(),
                column: err.column(),
                reason: json_error_reason(&err),
            })?;
        StorageState::from_value(json)
    }

    /// Writes the state exactly as Playwright does (`JSON.stringify(state, undefined, 2)`, no
    /// trailing newline).
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.to_value().write_pretty(&mut out, 0);
        out
    }

    /// Checks what [`StorageState::from_json`] checks (for a state built in code).
    pub fn validate(&self) -> Result<(), StateError> {
        check_counts(self.cookies.len(), self.origins.len())?;
        for (i, cookie) in self.cookies.iter().enumerate() {
            cookie.validate_at(&format!("cookies[{i}] {}", quote_name(&cookie.name)))?;
        }
        for (i, origin) in self.origins.iter().enumerate() {
            origin.validate_at(&format!("origins[{i}]"))?;
        }
        Ok(())
    }

    /// The earliest expiry among persistent cookies (`None` when there are none).
    pub fn earliest_expiry(&self) -> Option<Timestamp> {
        self.cookies
            .iter()
            .filter_map(StateCookie::expires_at)
            .min()
    }

    /// A copy without the cookies that have expired at `now` (session cookies are kept).
    pub fn without_expired(&self, now: Timestamp) -> StorageState {
        StorageState {
            cookies: self
                .cookies
                .iter()
                .filter(|cookie| !cookie.is_expired(now))
                .cloned()
                .collect(),
            origins: self.origins.clone(),
            extra: self.extra.clone(),
        }
    }

    /// Cookies that belong to none of the hosts of the site at `origin`, as `name @ domain`.
    ///
    /// A cookie belongs when its domain is the site's host, a parent domain of it, a subdomain of
    /// it, or a sibling under the same parent domain (`sso.example.com` for `app.example.com`).
    pub fn cookies_for_domain_mismatch(&self, origin: &Url) -> Vec<String> {
        let host = origin.host_str().unwrap_or_default().to_ascii_lowercase();
        self.cookies
            .iter()
            .filter(|cookie| !cookie_belongs_to_host(&cookie.host(), &host))
            .map(StateCookie::label)
            .collect()
    }

    /// An error when the state has cookies and none of them belongs to the site at `origin`
    /// (importing a state into the wrong site). Lists at most 20 cookies, names and domains only.
    pub fn ensure_cookies_for(&self, origin: &Url) -> Result<(), StateError> {
        let foreign = self.cookies_for_domain_mismatch(origin);
        if self.cookies.is_empty() || foreign.len() < self.cookies.len() {
            return Ok(());
        }
        Err(StateError::WrongDomain {
            host: origin.host_str().unwrap_or_default().to_owned(),
            count: self.cookies.len(),
            cookies: foreign.into_iter().take(20).collect(),
        })
    }

    pub(crate) fn to_value(&self) -> Json {
        self.extra.object(vec![
            (
                "cookies",
                Json::Array(self.cookies.iter().map(StateCookie::to_value).collect()),
            ),
            (
                "origins",
                Json::Array(self.origins.iter().map(OriginState::to_value).collect()),
            ),
        ])
    }

    pub(crate) fn from_value(mut json: Json) -> Result<StorageState, StateError> {
        let Json::Object(fields) = &mut json else {
            return Err(invalid(
                "document",
                format!(
                    "expected an object with \"cookies\" and \"origins\", found {}",
                    json.type_name()
                ),
            ));
        };
        let mut state = StorageState::default();
        let (mut has_cookies, mut has_origins) = (false, false);
        for (key, value) in fields.iter_mut() {
            state.extra.order.push(key.clone());
            match key.as_str() {
                "cookies" => {
                    has_cookies = true;
                    let Json::Array(items) = value else {
                        return Err(invalid(
                            "cookies",
                            format!("expected an array, found {}", value.type_name()),
                        ));
                    };
                    check_counts(items.len(), 0)?;
                    state.cookies = items
                        .iter_mut()
                        .enumerate()
                        .map(|(i, item)| {
                            StateCookie::from_value(item.take(), &format!("cookies[{i}]"))
                        })
                        .collect::<Result<_, _>>()?;
                }
                "origins" => {
                    has_origins = true;
                    let Json::Array(items) = value else {
                        return Err(invalid(
                            "origins",
                            format!("expected an array, found {}", value.type_name()),
                        ));
                    };
                    check_counts(0, items.len())?;
                    state.origins = items
                        .iter_mut()
                        .enumerate()
                        .map(|(i, item)| {
                            OriginState::from_value(item.take(), &format!("origins[{i}]"))
                        })
                        .collect::<Result<_, _>>()?;
                }
                _ => state.extra.fields.push((key.clone(), value.take())),
            }
        }
        if !has_cookies && !has_origins {
            return Err(invalid(
                "document",
                "neither \"cookies\" nor \"origins\": not a storage state",
            ));
        }
        Ok(state)
    }
}

fn check_counts(cookies: usize, origins: usize) -> Result<(), StateError> {
    if cookies > MAX_COOKIES {
        return Err(StateError::TooMany {
            what: "cookies",
            count: cookies,
            limit: MAX_COOKIES,
        });
    }
    if origins > MAX_ORIGINS {
        return Err(StateError::TooMany {
            what: "origins",
            count: origins,
            limit: MAX_ORIGINS,
        });
    }
    Ok(())
}

/// The fixed phrase of a serde_json error, without its position (never input text).
fn json_error_reason(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof => {
            let text = err.to_string();
            match text.rfind(" at line ") {
                Some(cut) => text[..cut].to_owned(),
                None => text,
            }
        }
        Category::Data => "unexpected data".to_owned(),
        Category::Io => "read error".to_owned(),
    }
}

/// True when a cookie for `cookie_host` (without leading dot, lower case) belongs to a site at
/// `site_host`: the same host, a parent or a subdomain, or a sibling under the same parent domain.
pub(crate) fn cookie_belongs_to_host(cookie_host: &str, site_host: &str) -> bool {
    let site_host = site_host.trim_start_matches('.');
    if cookie_host.is_empty() || site_host.is_empty() {
        return false;
    }
    let is_ip = |host: &str| host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[');
    if is_ip(site_host) || is_ip(cookie_host) {
        return cookie_host == site_host;
    }
    if cookie_host == site_host
        || is_subdomain_of(site_host, cookie_host)
        || is_subdomain_of(cookie_host, site_host)
    {
        return true;
    }
    // Siblings: the site's parent domain, when the site's host has at least three labels.
    if site_host.matches('.').count() < 2 {
        return false;
    }
    match site_host.split_once('.') {
        Some((_, parent)) => cookie_host == parent || is_subdomain_of(cookie_host, parent),
        None => false,
    }
}

fn is_subdomain_of(host: &str, domain: &str) -> bool {
    host.len() > domain.len()
        && host.ends_with(domain)
        && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
}
