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

use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;

use authkeeper_core::Timestamp;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;
use zeroize::Zeroize;

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

/// Why a storage state (or a cookies.txt file, or an import) was rejected.
///
/// Messages name cookies by index, name and domain, origins by index; they never quote a cookie
/// or localStorage value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The document is larger than [`MAX_DOCUMENT_BYTES`].
    #[error("storage state is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not JSON at all.
    #[error("storage state is not valid JSON: {reason} at line {line} column {column}")]
    MalformedJson {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong (a fixed phrase; never input text).
        reason: String,
    },
    /// JSON, but not a valid storage state.
    #[error("invalid storage state: {at}: {problem}")]
    Invalid {
        /// Where: `document`, `cookies[3] "sid"`, `origins[0].localStorage[2]`, ….
        at: String,
        /// What is wrong.
        problem: String,
    },
    /// More cookies, origins or localStorage entries than allowed.
    #[error("storage state has {count} {what}; the limit is {limit}")]
    TooMany {
        /// `cookies`, `origins` or `localStorage entries`.
        what: &'static str,
        /// How many there are.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A cookies.txt line could not be read.
    #[error("cookies.txt line {line}: {problem}")]
    CookiesTxt {
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the cookie's value).
        problem: String,
    },
    /// The state's cookies belong to none of the site's hosts.
    #[error(
        "none of the {count} cookies of the storage state belongs to {host}; cookies (name @ domain): {}",
        cookies.join(", ")
    )]
    WrongDomain {
        /// The site's host.
        host: String,
        /// How many cookies the state has.
        count: usize,
        /// Cookies as `name @ domain` (at most 20 listed).
        cookies: Vec<String>,
    },
}

fn invalid(at: impl Into<String>, problem: impl Into<String>) -> StateError {
    StateError::Invalid {
        at: at.into(),
        problem: problem.into(),
    }
}

/// Quotes a name (not a secret) for an error message: escaped, at most 64 characters.
pub(crate) fn quote_name(name: &str) -> String {
    let mut shown: String = name.chars().take(64).collect();
    if shown.len() < name.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}

// ---------------------------------------------------------------------------------------------
// An order-preserving JSON value with JavaScript's number model.

/// A JSON value as JavaScript sees it: one number type (f64), objects keep key order.
/// String contents are zeroized on drop.
#[derive(Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Drop for Json {
    fn drop(&mut self) {
        match self {
            Json::String(text) => text.zeroize(),
            Json::Object(fields) => {
                for (key, _) in fields.iter_mut() {
                    key.zeroize();
                }
            }
            _ => {}
        }
    }
}

impl Json {
    fn type_name(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }

    fn take(&mut self) -> Json {
        std::mem::replace(self, Json::Null)
    }

    /// Writes `JSON.stringify(self, undefined, 2)` at nesting `depth`.
    fn write_pretty(&self, out: &mut String, depth: usize) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(true) => out.push_str("true"),
            Json::Bool(false) => out.push_str("false"),
            Json::Number(number) => out.push_str(&js_number(*number)),
            Json::String(text) => write_js_string(out, text),
            Json::Array(items) => {
                if items.is_empty() {
                    out.push_str("[]");
                    return;
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    newline_indent(out, depth + 1);
                    item.write_pretty(out, depth + 1);
                }
                newline_indent(out, depth);
                out.push(']');
            }
            Json::Object(fields) => {
                if fields.is_empty() {
                    out.push_str("{}");
                    return;
                }
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    newline_indent(out, depth + 1);
                    write_js_string(out, key);
                    out.push_str(": ");
                    value.write_pretty(out, depth + 1);
                }
                newline_indent(out, depth);
                out.push('}');
            }
        }
    }
}

fn newline_indent(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// A string as `JSON.stringify` writes it.
fn write_js_string(out: &mut String, text: &str) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number as JavaScript's `Number.prototype.toString` writes it (ECMA-262 Number::toString):
/// `-1`, `1735689600.5`, `1e+21`, `1e-7`; non-finite numbers are `null`, as in JSON.
pub fn js_number(number: f64) -> String {
    if !number.is_finite() {
        return "null".to_owned();
    }
    if number == 0.0 {
        return "0".to_owned();
    }
    // Rust's `{:e}` gives the shortest digits that round-trip, like JavaScript.
    let scientific = format!("{:e}", number.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let mut digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if let Some(even) = even_tie(number.abs(), &digits) {
        digits = even;
    }
    let k = digits.len() as i64;
    let n = exponent + 1;
    let mut out = String::new();
    if number < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        let e = n - 1;
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if e >= 0 { '+' } else { '-' });
        out.push_str(&e.abs().to_string());
    }
    out
}

/// ECMA-262 picks, among two shortest digit strings equally close to the number, the even one;
/// Rust's shortest formatting may pick the odd one (`2550897251.2695313` for the exact
/// `…2695312 5`). Returns the even digits when that is the case and they read back as `number`.
fn even_tie(number: f64, digits: &str) -> Option<String> {
    let k = digits.len();
    if digits.bytes().last().is_none_or(|d| d % 2 == 0) {
        return None;
    }
    // Cheap filter first: k + 3 significant digits must read `<k digits>500`.
    let near = format!("{number:.prec$e}", prec = k + 2);
    let near_digits: String = near
        .split('e')
        .next()?
        .chars()
        .filter(|c| *c != '.')
        .collect();
    if !near_digits.ends_with("500") {
        return None;
    }
    // The exact decimal value of the double (at most 767 significant digits).
    let exact = format!("{number:.800e}");
    let (mantissa, exponent) = exact.split_once('e')?;
    let exact_digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exact_digits = exact_digits.trim_end_matches('0');
    if exact_digits.len() != k + 1 || !exact_digits.ends_with('5') {
        return None;
    }
    // The two candidates around the tie: `low` and `low + 1` in the last place.
    let low = &exact_digits[..k];
    let candidate = if low.bytes().last().is_some_and(|d| d % 2 == 0) {
        low.to_owned()
    } else {
        let mut bytes = low.as_bytes().to_vec();
        let mut i = bytes.len();
        loop {
            if i == 0 {
                // A carry out of the first digit (99…9 + 1): not a k-digit candidate.
                return None;
            }
            i -= 1;
            if bytes[i] == b'9' {
                bytes[i] = b'0';
            } else {
                bytes[i] += 1;
                break;
            }
        }
        String::from_utf8(bytes).ok()?
    };
    if candidate == digits {
        return None;
    }
    let text = format!("{}.{}e{exponent}", &candidate[..1], &candidate[1..]);
    (text.parse::<f64>().ok()? == number).then_some(candidate)
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Number(n) => {
                if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
                    serializer.serialize_i64(*n as i64)
                } else {
                    serializer.serialize_f64(*n)
                }
            }
            Json::String(s) => serializer.serialize_str(s),
            Json::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (key, value) in fields {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        if v.is_finite() {
            Ok(Json::Number(v))
        } else {
            Err(E::custom("a number is not finite"))
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        Json::deserialize(deserializer)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element::<Json>()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut fields: Vec<(String, Json)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Json>()?;
            // JSON.parse: a repeated key keeps its first position and takes the last value.
            match index.get(&key) {
                Some(&at) => fields[at].1 = value,
                None => {
                    index.insert(key.clone(), fields.len());
                    fields.push((key, value));
                }
            }
        }
        for (mut key, _) in index.drain() {
            key.zeroize();
        }
        Ok(Json::Object(fields))
    }
}

// ---------------------------------------------------------------------------------------------
// Unknown fields.

/// Fields of a JSON object that this crate does not model (e.g. `partitionKey`,
/// `_crHasCrossSiteAncestor`, `indexedDB`), and the order in which the object listed all its keys,
/// so that a document is written back as it was read.
///
/// `Debug` shows only the unknown fields' names; their contents are zeroized on drop.
#[derive(Clone, Default)]
pub struct Extra {
    fields: Vec<(String, Json)>,
    order: Vec<String>,
}

impl PartialEq for Extra {
    fn eq(&self, other: &Self) -> bool {
        self.fields == other.fields
    }
}

impl fmt::Debug for Extra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.fields.iter().map(|(key, _)| key))
            .finish()
    }
}

impl Extra {
    /// True when the object had no unknown field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Names of the unknown fields, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(key, _)| key.as_str())
    }

    /// The unknown field `name` when it is a string.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.fields.iter().find_map(|(key, value)| match value {
            Json::String(text) if key == name => Some(text.as_str()),
            _ => None,
        })
    }

    /// Drops the unknown field `name`; true when there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.fields.len();
        self.fields.retain(|(key, _)| key != name);
        before != self.fields.len()
    }

    /// Builds an object: keys in the recorded order, then known keys not recorded (in their
    /// canonical order), then unknown fields not recorded.
    fn object(&self, known: Vec<(&'static str, Json)>) -> Json {
        let mut known: Vec<Option<(&'static str, Json)>> = known.into_iter().map(Some).collect();
        let mut unknown_done = vec![false; self.fields.len()];
        let mut out: Vec<(String, Json)> = Vec::with_capacity(known.len() + self.fields.len());
        for key in &self.order {
            if let Some(slot) = known
                .iter_mut()
                .find(|slot| slot.as_ref().is_some_and(|(name, _)| name == key))
            {
                if let Some((name, value)) = slot.take() {
                    out.push((name.to_owned(), value));
                }
            } else if let Some(i) = self
                .fields
                .iter()
                .enumerate()
                .position(|(i, (name, _))| !unknown_done[i] && name == key)
            {
                unknown_done[i] = true;
                out.push((self.fields[i].0.clone(), self.fields[i].1.clone()));
            }
        }
        out.extend(known.into_iter().flatten().map(|(k, v)| (k.to_owned(), v)));
        for (i, (key, value)) in self.fields.iter().enumerate() {
            if !unknown_done[i] {
                out.push((key.clone(), value.clone()));
            }
        }
        Json::Object(out)
    }
}

// ---------------------------------------------------------------------------------------------
// The model.

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

    fn validate_at(&self, at: &str) -> Result<(), StateError> {
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

    fn to_value(&self) -> Json {
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

    fn from_value(mut json: Json, at: &str) -> Result<StateCookie, StateError> {
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

fn take_string(value: &mut Json, at: &str) -> Result<String, StateError> {
    match value {
        Json::String(text) => Ok(std::mem::take(text)),
        other => Err(invalid(
            at,
            format!("expected a string, found {}", other.type_name()),
        )),
    }
}

fn take_bool(value: &Json, at: &str) -> Result<bool, StateError> {
    match value {
        Json::Bool(b) => Ok(*b),
        other => Err(invalid(
            at,
            format!("expected true or false, found {}", other.type_name()),
        )),
    }
}

/// localStorage of one origin.
#[derive(Clone, PartialEq, Default)]
pub struct OriginState {
    /// The origin, e.g. `https://app.example.com`.
    pub origin: String,
    /// Its localStorage entries, in order.
    pub local_storage: Vec<NameValue>,
    /// Fields this crate does not model (e.g. `indexedDB`), kept for the round trip.
    pub extra: Extra,
}

impl fmt::Debug for OriginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginState")
            .field("origin", &self.origin)
            .field("local_storage_entries", &self.local_storage.len())
            .field("extra", &self.extra)
            .finish()
    }
}

impl OriginState {
    /// An origin with these localStorage entries.
    pub fn new(origin: impl Into<String>, local_storage: Vec<NameValue>) -> Self {
        OriginState {
            origin: origin.into(),
            local_storage,
            extra: Extra::default(),
        }
    }

    /// Checks what [`StorageState::from_json`] checks for one origin.
    pub fn validate(&self) -> Result<(), StateError> {
        self.validate_at("origin")
    }

    fn validate_at(&self, at: &str) -> Result<(), StateError> {
        let ok = Url::parse(&self.origin).is_ok_and(|url| {
            url.origin().is_tuple()
                && url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none()
                && url.username().is_empty()
                && url.password().is_none()
        });
        if !ok {
            return Err(invalid(
                at,
                "origin is not a URL origin like https://app.example.com",
            ));
        }
        if self.local_storage.len() > MAX_LOCAL_STORAGE_ENTRIES {
            return Err(StateError::TooMany {
                what: "localStorage entries in one origin",
                count: self.local_storage.len(),
                limit: MAX_LOCAL_STORAGE_ENTRIES,
            });
        }
        Ok(())
    }

    fn to_value(&self) -> Json {
        self.extra.object(vec![
            ("origin", Json::String(self.origin.clone())),
            (
                "localStorage",
                Json::Array(self.local_storage.iter().map(NameValue::to_value).collect()),
            ),
        ])
    }

    fn from_value(mut json: Json, at: &str) -> Result<OriginState, StateError> {
        let Json::Object(fields) = &mut json else {
            return Err(invalid(
                at,
                format!("expected an object, found {}", json.type_name()),
            ));
        };
        let mut origin = OriginState::default();
        let mut has_origin = false;
        for (key, value) in fields.iter_mut() {
            origin.extra.order.push(key.clone());
            match key.as_str() {
                "origin" => {
                    origin.origin = take_string(value, &format!("{at}.origin"))?;
                    has_origin = true;
                }
                "localStorage" => {
                    let Json::Array(items) = value else {
                        return Err(invalid(
                            format!("{at}.localStorage"),
                            format!("expected an array, found {}", value.type_name()),
                        ));
                    };
                    if items.len() > MAX_LOCAL_STORAGE_ENTRIES {
                        return Err(StateError::TooMany {
                            what: "localStorage entries in one origin",
                            count: items.len(),
                            limit: MAX_LOCAL_STORAGE_ENTRIES,
                        });
                    }
                    origin.local_storage = items
                        .iter_mut()
                        .enumerate()
                        .map(|(i, item)| {
                            NameValue::from_value(item.take(), &format!("{at}.localStorage[{i}]"))
                        })
                        .collect::<Result<_, _>>()?;
                }
                _ => origin.extra.fields.push((key.clone(), value.take())),
            }
        }
        if !has_origin {
            return Err(invalid(at, "missing \"origin\""));
        }
        origin.validate_at(at)?;
        Ok(origin)
    }
}

/// A localStorage entry. Its name and value are zeroized on drop.
#[derive(Clone, PartialEq, Default)]
pub struct NameValue {
    /// The key.
    pub name: String,
    /// The value (a secret).
    pub value: String,
    /// Fields this crate does not model, kept for the round trip.
    pub extra: Extra,
}

impl Drop for NameValue {
    fn drop(&mut self) {
        self.name.zeroize();
        self.value.zeroize();
    }
}

impl fmt::Debug for NameValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NameValue")
            .field("name", &self.name)
            .field("value", &"[redacted]")
            .finish()
    }
}

impl NameValue {
    /// An entry.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        NameValue {
            name: name.into(),
            value: value.into(),
            extra: Extra::default(),
        }
    }

    fn to_value(&self) -> Json {
        self.extra.object(vec![
            ("name", Json::String(self.name.clone())),
            ("value", Json::String(self.value.clone())),
        ])
    }

    fn from_value(mut json: Json, at: &str) -> Result<NameValue, StateError> {
        let Json::Object(fields) = &mut json else {
            return Err(invalid(
                at,
                format!("expected an object, found {}", json.type_name()),
            ));
        };
        let mut entry = NameValue::default();
        let (mut has_name, mut has_value) = (false, false);
        for (key, value) in fields.iter_mut() {
            entry.extra.order.push(key.clone());
            match key.as_str() {
                "name" => {
                    entry.name = take_string(value, &format!("{at}.name"))?;
                    has_name = true;
                }
                "value" => {
                    entry.value = take_string(value, &format!("{at}.value"))?;
                    has_value = true;
                }
                _ => entry.extra.fields.push((key.clone(), value.take())),
            }
        }
        if !has_name {
            return Err(invalid(at, "missing \"name\""));
        }
        if !has_value {
            return Err(invalid(at, "missing \"value\""));
        }
        Ok(entry)
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

// ---------------------------------------------------------------------------------------------
// serde: the same document, for embedding a state in other records.

impl Serialize for StorageState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StorageState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = Json::deserialize(deserializer)?;
        StorageState::from_value(json).map_err(de::Error::custom)
    }
}

impl Serialize for StateCookie {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StateCookie {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = Json::deserialize(deserializer)?;
        StateCookie::from_value(json, "cookie").map_err(de::Error::custom)
    }
}

impl Serialize for OriginState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for OriginState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = Json::deserialize(deserializer)?;
        OriginState::from_value(json, "origin").map_err(de::Error::custom)
    }
}

impl Serialize for NameValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for NameValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = Json::deserialize(deserializer)?;
        NameValue::from_value(json, "localStorage entry").map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_like_javascript() {
        let cases: &[(f64, &str)] = &[
            (-1.0, "-1"),
            (0.0, "0"),
            (-0.0, "0"),
            (1735689600.5, "1735689600.5"),
            (1830000661.128193, "1830000661.128193"),
            (1830000000.0, "1830000000"),
            (0.1, "0.1"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (123e-20, "1.23e-18"),
            (-2.5e300, "-2.5e+300"),
            (f64::NAN, "null"),
            // Ties go to the even digit, as in V8 (the exact value is ...26953125).
            (2550897251.2695312, "2550897251.2695312"),
            (-887318481354381.2, "-887318481354381.2"),
            (2116000000000000.2, "2116000000000000.2"),
        ];
        for (number, text) in cases {
            assert_eq!(js_number(*number), *text, "{number}");
        }
    }

    #[test]
    fn strings_are_escaped_like_json_stringify() {
        let mut out = String::new();
        write_js_string(&mut out, "a\"b\\c\n\t\u{1}\u{7f}\u{2028}é");
        assert_eq!(out, "\"a\\\"b\\\\c\\n\\t\\u0001\u{7f}\u{2028}é\"");
    }

    #[test]
    fn belongs_to_host() {
        assert!(cookie_belongs_to_host("example.com", "app.example.com"));
        assert!(cookie_belongs_to_host("sso.example.com", "app.example.com"));
        assert!(cookie_belongs_to_host(
            "x.app.example.com",
            "app.example.com"
        ));
        assert!(!cookie_belongs_to_host("other.org", "app.example.com"));
        assert!(!cookie_belongs_to_host("xexample.com", "example.com"));
        assert!(cookie_belongs_to_host("127.0.0.1", "127.0.0.1"));
        assert!(!cookie_belongs_to_host("0.0.1", "127.0.0.1"));
    }
}
