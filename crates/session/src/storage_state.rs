//! Playwright `storageState` JSON: cookies (with domain, path, expires, httpOnly, secure,
//! sameSite) and, per origin, localStorage.
//!
//! Values are secrets: `Debug` never shows a cookie or localStorage value.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A browser's storage state, as Playwright's `context.storageState()` writes it.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageState {
    /// Every cookie of the context.
    #[serde(default)]
    pub cookies: Vec<StateCookie>,
    /// localStorage per origin.
    #[serde(default)]
    pub origins: Vec<OriginState>,
}

impl fmt::Debug for StorageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageState")
            .field("cookies", &self.cookies)
            .field("origins", &self.origins)
            .finish()
    }
}

/// `SameSite` of a cookie, spelled as Playwright spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SameSite {
    /// `Strict`.
    Strict,
    /// `Lax` (browsers' default).
    #[default]
    Lax,
    /// `None` (needs `secure`).
    None,
}

/// One cookie of a storage state.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateCookie {
    /// Cookie name.
    pub name: String,
    /// Cookie value (a secret).
    pub value: String,
    /// Domain; a leading `.` means the cookie also matches subdomains.
    pub domain: String,
    /// Path.
    pub path: String,
    /// Expiry in seconds since the Unix epoch; `-1` for a session cookie.
    pub expires: f64,
    /// `HttpOnly`.
    pub http_only: bool,
    /// `Secure`.
    pub secure: bool,
    /// `SameSite`.
    pub same_site: SameSite,
}

impl fmt::Debug for StateCookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateCookie")
            .field("name", &self.name)
            .field("value", &"[redacted]")
            .field("domain", &self.domain)
            .field("path", &self.path)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// localStorage of one origin.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OriginState {
    /// The origin, e.g. `https://app.example.com`.
    pub origin: String,
    /// Its localStorage entries, in order.
    #[serde(default)]
    pub local_storage: Vec<NameValue>,
}

impl fmt::Debug for OriginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginState")
            .field("origin", &self.origin)
            .field("local_storage_entries", &self.local_storage.len())
            .finish()
    }
}

/// A localStorage entry.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct NameValue {
    /// The key.
    pub name: String,
    /// The value (a secret).
    pub value: String,
}
