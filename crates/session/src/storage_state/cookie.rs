//! [`StateCookie`]: one cookie of a storage state, and its `SameSite`.

use std::fmt;

use authkeeper_core::Timestamp;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use super::*;

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

impl SameSite {
    /// Playwright's spelling: `Strict`, `Lax` or `None`.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// One cookie of a storage state.
///
/// Build one with [`StateCookie::new`] and set the other fields, or with a struct literal that
/// lists every field (`extra: Extra::default()`): it implements `Drop` (its value is zeroized),
/// so `..Default::default()` is not available.
#[derive(Clone, PartialEq)]
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
    /// Fields this crate does not model (`partitionKey`, …), kept for the round trip.
    pub extra: Extra,
}

impl Default for StateCookie {
    fn default() -> Self {
        StateCookie {
            name: String::new(),
            value: String::new(),
            domain: String::new(),
            path: "/".to_owned(),
            expires: -1.0,
            http_only: false,
            secure: false,
            same_site: SameSite::Lax,
            extra: Extra::default(),
        }
    }
}

impl Drop for StateCookie {
    fn drop(&mut self) {
        self.value.zeroize();
    }
}

impl fmt::Debug for StateCookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateCookie")
            .field("name", &self.name)
            .field("value", &"[redacted]")
            .field("domain", &self.domain)
            .field("path", &self.path)
            .field("expires", &self.expires)
            .field("http_only", &self.http_only)
            .field("secure", &self.secure)
            .field("same_site", &self.same_site)
            .finish_non_exhaustive()
    }
}

impl StateCookie {
    /// A session cookie (`expires` -1), not HttpOnly, not Secure, `SameSite=Lax`.
    pub fn new(
        name: impl Into<String>,
        value: impl Into<String>,
        domain: impl Into<String>,
        path: impl Into<String>,
    ) -> Self {
        StateCookie {
            name: name.into(),
            value: value.into(),
            domain: domain.into(),
            path: path.into(),
            expires: -1.0,
            http_only: false,
            secure: false,
            same_site: SameSite::Lax,
            extra: Extra::default(),
        }
    }

    /// True for a session cookie (negative `expires`, Playwright writes `-1`).
    pub fn is_session(&self) -> bool {
        self.expires < 0.0
    }

    /// The expiry of a persistent cookie.
    pub fn expires_at(&self) -> Option<Timestamp> {
        if self.is_session() || !self.expires.is_finite() {
            return None;
        }
        // Saturating float-to-int conversion; MAX_EXPIRES keeps valid cookies far from the ends.
        Some(Timestamp::from_millis(
            (self.expires * 1000.0).floor() as i64
        ))
    }

    /// True when a persistent cookie has expired at `now` (session cookies never do here).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at().is_some_and(|at| at <= now)
    }

    /// True when the cookie also matches subdomains (its domain starts with `.`).
    pub fn is_domain_cookie(&self) -> bool {
        self.domain.starts_with('.')
    }

    /// The domain without its leading `.`, lower-cased.
    pub fn host(&self) -> String {
        self.domain
            .strip_prefix('.')
            .unwrap_or(&self.domain)
            .to_ascii_lowercase()
    }

    /// `partitionKey` (CHIPS partitioned cookies), kept among the unknown fields.
    pub fn partition_key(&self) -> Option<&str> {
        self.extra.get_str("partitionKey")
    }

    /// `name @ domain`, for messages (never the value).
    pub fn label(&self) -> String {
        format!("{} @ {}", quote_name(&self.name), quote_name(&self.domain))
    }

    /// Checks what [`StorageState::from_json`] checks for one cookie.
    pub fn validate(&self) -> Result<(), StateError> {
        self.validate_at(&format!("cookie {}", quote_name(&self.name)))
    }

    pub(super) fn validate_at(&self, at: &str) -> Result<(), StateError> {
        if self.name.is_empty() {
            return Err(invalid(at, "the cookie name is empty"));
        }
        if self
            .name
            .chars()
            .any(|c| c == '=' || c == ';' || c.is_control())
        {
            return Err(invalid(
                at,
                "the cookie name contains '=', ';' or a control character",
            ));
        }
        if self
            .value
            .chars()
            .any(|c| c == ';' || (c.is_control() && c != '\t'))
        {
            return Err(invalid(
                at,
                "the cookie value contains ';' or a control character",
            ));
        }
        if self.name.len() + self.value.len() > MAX_COOKIE_BYTES {
            return Err(invalid(
                at,
                format!("name and value together exceed {MAX_COOKIE_BYTES} bytes"),
            ));
        }
        let host = self.domain.strip_prefix('.').unwrap_or(&self.domain);
        if host.is_empty() {
            return Err(invalid(at, "the domain is empty"));
        }
        if self.domain.len() > MAX_ATTRIBUTE_BYTES
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
        {
            return Err(invalid(
                at,
                "the domain is not a host name (ASCII letters, digits, '-', '.', '_' or an IP address)",
            ));
        }
        if !self.path.starts_with('/') {
            return Err(invalid(at, "the path does not start with '/'"));
        }
        if self.path.len() > MAX_ATTRIBUTE_BYTES
            || self.path.chars().any(|c| c == ';' || c.is_control())
        {
            return Err(invalid(
                at,
                format!(
                    "the path is longer than {MAX_ATTRIBUTE_BYTES} bytes or contains ';' or a control character"
                ),
            ));
        }
        if !self.expires.is_finite()
            || !(self.expires == -1.0 || (0.0..=MAX_EXPIRES).contains(&self.expires))
        {
            return Err(invalid(
                at,
                "expires must be -1 (a session cookie) or seconds since the Unix epoch up to the year 9999",
            ));
        }
        Ok(())
    }

    pub(super) fn to_value(&self) -> Json {
        self.extra.object(vec![
            ("name", Json::String(self.name.clone())),
            ("value", Json::String(self.value.clone())),
            ("domain", Json::String(self.domain.clone())),
            ("path", Json::String(self.path.clone())),
            ("expires", Json::Number(self.expires)),
            ("httpOnly", Json::Bool(self.http_only)),
            ("secure", Json::Bool(self.secure)),
            ("sameSite", Json::String(self.same_site.as_str().to_owned())),
        ])
    }

    pub(super) fn from_value(mut json: Json, at: &str) -> Result<StateCookie, StateError> {
        let Json::Object(fields) = &mut json else {
            return Err(invalid(
                at,
                format!("expected an object, found {}", json.type_name()),
            ));
        };
        let mut cookie = StateCookie::default();
        let mut seen = [false; 8];
        // The name first, so that later errors can say which cookie.
        let named = match fields.iter().find(|(key, _)| key == "name") {
            Some((_, Json::String(name))) => format!("{at} {}", quote_name(name)),
            _ => at.to_owned(),
        };
        let at = named.as_str();
        for (key, value) in fields.iter_mut() {
            cookie.extra.order.push(key.clone());
            let slot = match key.as_str() {
                "name" => 0,
                "value" => 1,
                "domain" => 2,
                "path" => 3,
                "expires" => 4,
                "httpOnly" => 5,
                "secure" => 6,
                "sameSite" => 7,
                _ => {
                    cookie.extra.fields.push((key.clone(), value.take()));
                    continue;
                }
            };
            seen[slot] = true;
            let field_at = || format!("{at}.{key}");
            match slot {
                0 => cookie.name = take_string(value, &field_at())?,
                1 => cookie.value = take_string(value, &field_at())?,
                2 => cookie.domain = take_string(value, &field_at())?,
                3 => cookie.path = take_string(value, &field_at())?,
                4 => match value {
                    Json::Number(n) => cookie.expires = *n,
                    other => {
                        return Err(invalid(
                            field_at(),
                            format!("expected a number, found {}", other.type_name()),
                        ));
                    }
                },
                5 => cookie.http_only = take_bool(value, &field_at())?,
                6 => cookie.secure = take_bool(value, &field_at())?,
                _ => {
                    cookie.same_site = match value {
                        Json::String(text) => match text.as_str() {
                            "Strict" => SameSite::Strict,
                            "Lax" => SameSite::Lax,
                            "None" => SameSite::None,
                            other => {
                                return Err(invalid(
                                    field_at(),
                                    format!(
                                        "sameSite must be \"Strict\", \"Lax\" or \"None\", not {}",
                                        quote_name(other)
                                    ),
                                ));
                            }
                        },
                        other => {
                            return Err(invalid(
                                field_at(),
                                format!(
                                    "sameSite must be \"Strict\", \"Lax\" or \"None\", not {}",
                                    other.type_name()
                                ),
                            ));
                        }
                    }
                }
            }
        }
        for (slot, name) in ["name", "value", "domain", "path"].iter().enumerate() {
            if !seen[slot] {
                return Err(invalid(at, format!("missing \"{name}\"")));
            }
        }
        cookie.validate_at(at)?;
        Ok(cookie)
    }
}

pub(super) fn take_string(value: &mut Json, at: &str) -> Result<String, StateError> {
    match value {
        Json::String(text) => Ok(std::mem::take(text)),
        other => Err(invalid(
            at,
            format!("expected a string, found {}", other.type_name()),
        )),
    }
}

pub(super) fn take_bool(value: &Json, at: &str) -> Result<bool, StateError> {
    match value {
        Json::Bool(b) => Ok(*b),
        other => Err(invalid(
            at,
            format!("expected true or false, found {}", other.type_name()),
        )),
    }
}
