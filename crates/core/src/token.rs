//! Token sets, and the lenient parser for token-endpoint responses as real providers send them.
//!
//! Providers disagree on the details: `expires_in` arrives as a number, as a string (Azure AD v1)
//! or not at all (Salesforce); GitHub answers form-encoded unless asked for JSON; Slack wraps
//! errors in HTTP 200 with `"ok": false`. [`TokenResponse::parse`] accepts all of these and turns
//! anything unusable into a [`TokenResponseError`] that never quotes a secret.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::clock::Timestamp;
use crate::secret::{AccessToken, IdToken, RefreshToken};

/// The longest `expires_in` accepted from a provider (ten years). Longer values are treated as a
/// broken response rather than trusted.
pub const MAX_EXPIRES_IN: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The `extra` key under which a refreshed token set remembers when its login session began
/// (milliseconds since the epoch). Absent on a token set fresh from a login or an import, whose
/// session began at its `issued_at`.
pub const SESSION_STARTED_AT: &str = "authkeeper_session_started_at";

/// The current tokens of a credential. Secrets redact themselves in `Debug` and are zeroized
/// when dropped; they can only be read through [`ExposeSecret::expose_secret`].
#[derive(Clone)]
pub struct TokenSet {
    /// The bearer token sent to APIs.
    pub access_token: AccessToken,
    /// The token type, usually `Bearer`.
    pub token_type: String,
    /// The refresh token, when the grant has one.
    pub refresh_token: Option<RefreshToken>,
    /// The OpenID Connect ID token, when one was issued.
    pub id_token: Option<IdToken>,
    /// The granted scope, as the provider reported it.
    pub scope: Option<String>,
    /// When this access token was obtained (by our clock).
    pub issued_at: Timestamp,
    /// When the access token stops working (by our clock).
    pub expires_at: Timestamp,
    /// When the refresh token stops working, if the provider said so (`refresh_token_expires_in`).
    pub refresh_token_expires_at: Option<Timestamp>,
    /// Every other field of the token response, kept as sent. Treated as secret: sealed at rest,
    /// and only the field names appear in `Debug`.
    pub extra: Map<String, Value>,
}

impl TokenSet {
    /// The lifetime the provider granted this access token.
    pub fn lifetime(&self) -> Duration {
        self.expires_at.saturating_since(self.issued_at)
    }

    /// When the login session of this token set began: the time of the login or import that
    /// started it, carried across refreshes (see [`SESSION_STARTED_AT`]).
    pub fn session_started_at(&self) -> Timestamp {
        self.extra
            .get(SESSION_STARTED_AT)
            .and_then(Value::as_i64)
            .map_or(self.issued_at, Timestamp::from_millis)
    }

    /// Builds the token set that replaces `self` after a refresh answered with `response`
    /// at `now`: a refresh token the provider did not send is kept (RFC 6749 §6), and so is
    /// the session start.
    pub fn refreshed_with(
        &self,
        response: TokenResponse,
        now: Timestamp,
        defaults: &ExpiryDefaults,
    ) -> TokenSet {
        let mut next = response.into_token_set(now, defaults);
        next.extra.insert(
            SESSION_STARTED_AT.to_owned(),
            Value::from(self.session_started_at().as_millis()),
        );
        if next.refresh_token.is_none() {
            next.refresh_token = self.refresh_token.clone();
            if next.refresh_token_expires_at.is_none() {
                next.refresh_token_expires_at = self.refresh_token_expires_at;
            }
        }
        if next.id_token.is_none() {
            next.id_token = self.id_token.clone();
        }
        if next.scope.is_none() {
            next.scope = self.scope.clone();
        }
        next
    }

    /// Serializes the whole set, secrets included, for sealing by a store. The buffer is zeroized
    /// when dropped.
    pub fn to_secret_json(&self) -> Zeroizing<Vec<u8>> {
        let stored = StoredTokenSet {
            access_token: Zeroizing::new(self.access_token.expose_secret().to_owned()),
            token_type: self.token_type.clone(),
            refresh_token: self
                .refresh_token
                .as_ref()
                .map(|s| Zeroizing::new(s.expose_secret().to_owned())),
            id_token: self
                .id_token
                .as_ref()
                .map(|s| Zeroizing::new(s.expose_secret().to_owned())),
            scope: self.scope.clone(),
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            refresh_token_expires_at: self.refresh_token_expires_at,
            extra: self.extra.clone(),
        };
        // Serializing plain strings and maps into a Vec cannot fail.
        Zeroizing::new(serde_json::to_vec(&stored).unwrap_or_default())
    }

    /// Reads a set written by [`TokenSet::to_secret_json`].
    pub fn from_secret_json(bytes: &[u8]) -> Result<TokenSet, serde_json::Error> {
        let stored: StoredTokenSet = serde_json::from_slice(bytes)?;
        Ok(TokenSet {
            access_token: AccessToken::from(stored.access_token.as_str()),
            token_type: stored.token_type,
            refresh_token: stored
                .refresh_token
                .as_ref()
                .map(|s| RefreshToken::from(s.as_str())),
            id_token: stored.id_token.as_ref().map(|s| IdToken::from(s.as_str())),
            scope: stored.scope,
            issued_at: stored.issued_at,
            expires_at: stored.expires_at,
            refresh_token_expires_at: stored.refresh_token_expires_at,
            extra: stored.extra,
        })
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("id_token", &self.id_token.as_ref().map(|_| "[redacted]"))
            .field("scope", &self.scope)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("refresh_token_expires_at", &self.refresh_token_expires_at)
            .field("extra_fields", &self.extra.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The on-disk (before sealing) shape of a token set.
#[derive(Serialize, Deserialize)]
struct StoredTokenSet {
    access_token: Zeroizing<String>,
    token_type: String,
    #[serde(default)]
    refresh_token: Option<Zeroizing<String>>,
    #[serde(default)]
    id_token: Option<Zeroizing<String>>,
    #[serde(default)]
    scope: Option<String>,
    issued_at: Timestamp,
    expires_at: Timestamp,
    #[serde(default)]
    refresh_token_expires_at: Option<Timestamp>,
    #[serde(default)]
    extra: Map<String, Value>,
}

/// What to assume when a response says nothing about expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryDefaults {
    /// Lifetime assumed when neither `expires_in` nor a JWT `exp` claim is present.
    pub default_lifetime: Duration,
}

impl Default for ExpiryDefaults {
    fn default() -> Self {
        ExpiryDefaults {
            default_lifetime: Duration::from_secs(3600),
        }
    }
}

/// Where a token's expiry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpirySource {
    /// The response's `expires_in`.
    ExpiresIn(Duration),
    /// The claims of a JWT access token. With `iat`, the lifetime `exp - iat` is applied to our
    /// clock, so a provider whose clock is off does not shift the expiry; without it, `exp` is
    /// taken as an absolute time.
    Jwt(JwtTimes),
    /// Nothing said; the configured default applies.
    Default,
}

/// A successful token-endpoint response, validated.
pub struct TokenResponse {
    access_token: AccessToken,
    token_type: String,
    refresh_token: Option<RefreshToken>,
    id_token: Option<IdToken>,
    scope: Option<String>,
    expiry: ExpirySource,
    refresh_token_expires_in: Option<Duration>,
    extra: Map<String, Value>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token_type", &self.token_type)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

/// Why a token-endpoint body could not be used. Messages never contain token values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenResponseError {
    /// The body is empty.
    #[error("the token response body is empty")]
    Empty,
    /// The body is neither a JSON object nor a form-encoded parameter list (e.g. an HTML page).
    #[error("the token response is not JSON (content starts with {start:?})")]
    NotJson {
        /// The first few characters, for diagnosis; only shown for bodies that are not JSON and
        /// so carry no token field.
        start: String,
    },
    /// The body is JSON but not an object, or truncated.
    #[error("the token response is malformed JSON: {0}")]
    MalformedJson(String),
    /// No usable `access_token` field.
    #[error("the token response has no access_token")]
    MissingAccessToken,
    /// A field has the wrong type.
    #[error("the token response field `{field}` has an invalid value")]
    InvalidField {
        /// The field's name.
        field: &'static str,
    },
    /// `expires_in` is negative, zero or absurdly large.
    #[error("the token response has an unusable expires_in ({value}); expected 1..={max} seconds", max = MAX_EXPIRES_IN.as_secs())]
    UnusableExpiresIn {
        /// The value as sent.
        value: String,
    },
}

/// An error object in an HTTP 200 body (Slack `"ok": false`, GitHub's `error` field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedError {
    /// The `error` code.
    pub error: String,
    /// The `error_description`, when sent.
    pub description: Option<String>,
}

/// The result of reading a token-endpoint body with a success status.
#[derive(Debug)]
pub enum ParsedTokenBody {
    /// Tokens.
    Tokens(TokenResponse),
    /// An error disguised as success.
    Error(EmbeddedError),
}

impl TokenResponse {
    /// Parses a token-endpoint body (JSON, or form-encoded as GitHub sends without `Accept`).
    pub fn parse(body: &[u8]) -> Result<ParsedTokenBody, TokenResponseError> {
        let map = parse_body_object(body)?;
        if let Some(error) = embedded_error(&map) {
            return Ok(ParsedTokenBody::Error(error));
        }
        Self::from_object(map).map(ParsedTokenBody::Tokens)
    }

    /// Parses a body that must contain tokens (e.g. `authkeeper import`); an embedded error is
    /// reported as [`TokenResponseError::MissingAccessToken`].
    pub fn parse_tokens(body: &[u8]) -> Result<TokenResponse, TokenResponseError> {
        match Self::parse(body)? {
            ParsedTokenBody::Tokens(tokens) => Ok(tokens),
            ParsedTokenBody::Error(_) => Err(TokenResponseError::MissingAccessToken),
        }
    }

    fn from_object(mut map: Map<String, Value>) -> Result<TokenResponse, TokenResponseError> {
        let access_token = match map.remove("access_token") {
            Some(Value::String(s)) if !s.trim().is_empty() => AccessToken::from(s),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(TokenResponseError::MissingAccessToken);
            }
            Some(_) => {
                return Err(TokenResponseError::InvalidField {
                    field: "access_token",
                });
            }
        };
        let token_type = match map.remove("token_type") {
            Some(Value::String(s)) if !s.is_empty() => normalize_token_type(&s),
            None | Some(Value::Null) => "Bearer".to_owned(),
            Some(_) => {
                return Err(TokenResponseError::InvalidField {
                    field: "token_type",
                });
            }
        };
        let refresh_token = optional_secret(&mut map, "refresh_token")?;
        let id_token = optional_secret(&mut map, "id_token")?;
        let scope = match map.remove("scope") {
            Some(Value::String(s)) => Some(s),
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            None | Some(Value::Null) => None,
            Some(_) => return Err(TokenResponseError::InvalidField { field: "scope" }),
        };
        let expiry = match map.remove("expires_in") {
            None | Some(Value::Null) => match jwt_times(access_token.expose_secret()) {
                Some(times) => ExpirySource::Jwt(times),
                None => ExpirySource::Default,
            },
            Some(value) => ExpirySource::ExpiresIn(lifetime_field(&value)?),
        };
        // Some providers send `expires_on` (absolute) beside `expires_in`; the relative one wins.
        let refresh_token_expires_in = match map.remove("refresh_token_expires_in") {
            None | Some(Value::Null) => None,
            Some(value) => Some(lifetime_field(&value)?),
        };
        Ok(TokenResponse {
            access_token,
            token_type,
            refresh_token,
            id_token,
            scope,
            expiry,
            refresh_token_expires_in,
            extra: map,
        })
    }

    /// Where the expiry came from.
    pub fn expiry_source(&self) -> ExpirySource {
        self.expiry
    }

    /// Whether the response carried a refresh token.
    pub fn has_refresh_token(&self) -> bool {
        self.refresh_token.is_some()
    }

    /// Turns the response into a token set obtained at `now`.
    pub fn into_token_set(self, now: Timestamp, defaults: &ExpiryDefaults) -> TokenSet {
        let expires_at = match self.expiry {
            ExpirySource::ExpiresIn(lifetime) => now + lifetime,
            ExpirySource::Jwt(JwtTimes {
                exp,
                iat: Some(iat),
            }) if exp > iat => {
                now + Duration::from_secs(exp.saturating_sub(iat).unsigned_abs())
                    .min(MAX_EXPIRES_IN)
            }
            ExpirySource::Jwt(JwtTimes { exp, .. }) => {
                Timestamp::from_secs(exp).max(now).min(now + MAX_EXPIRES_IN)
            }
            ExpirySource::Default => now + defaults.default_lifetime,
        };
        TokenSet {
            access_token: self.access_token,
            token_type: self.token_type,
            refresh_token: self.refresh_token,
            id_token: self.id_token,
            scope: self.scope,
            issued_at: now,
            expires_at,
            refresh_token_expires_at: self.refresh_token_expires_in.map(|d| now + d),
            extra: self.extra,
        }
    }
}

fn normalize_token_type(raw: &str) -> String {
    if raw.eq_ignore_ascii_case("bearer") {
        "Bearer".to_owned()
    } else {
        raw.to_owned()
    }
}

fn optional_secret<S: From<String>>(
    map: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<S>, TokenResponseError> {
    match map.remove(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(S::from(s))),
        Some(Value::String(_)) | None | Some(Value::Null) => Ok(None),
        Some(_) => Err(TokenResponseError::InvalidField { field }),
    }
}

/// Reads a lifetime in seconds sent as a number or a numeric string.
fn lifetime_field(value: &Value) -> Result<Duration, TokenResponseError> {
    let unusable = || TokenResponseError::UnusableExpiresIn {
        value: truncate_for_message(&value.to_string()),
    };
    let seconds = match value {
        Value::Number(n) => n.as_f64().ok_or_else(unusable)?,
        Value::String(s) => s.trim().parse::<f64>().map_err(|_| unusable())?,
        _ => return Err(unusable()),
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > MAX_EXPIRES_IN.as_secs_f64() {
        return Err(unusable());
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn truncate_for_message(text: &str) -> String {
    text.chars().take(24).collect()
}

/// The `exp` and `iat` claims of a JWT access token (seconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwtTimes {
    /// Expiry.
    pub exp: i64,
    /// Issue time, when present.
    pub iat: Option<i64>,
}

/// Reads the `exp` (and `iat`) claims of a JWT without verifying its signature: only to learn
/// the expiry when a response has no `expires_in`.
pub fn jwt_times(token: &str) -> Option<JwtTimes> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?,
    );
    let claims: Value = serde_json::from_slice(&decoded).ok()?;
    let seconds = |claim: &str| match claims.get(claim)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        _ => None,
    };
    Some(JwtTimes {
        exp: seconds("exp")?,
        iat: seconds("iat"),
    })
}

/// Parses a body as a JSON object, or as form parameters when it is not JSON.
fn parse_body_object(body: &[u8]) -> Result<Map<String, Value>, TokenResponseError> {
    let text = std::str::from_utf8(body).map_err(|_| TokenResponseError::NotJson {
        start: String::from("<binary>"),
    })?;
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    if trimmed.is_empty() {
        return Err(TokenResponseError::Empty);
    }
    if trimmed.starts_with('{') || trimmed.starts_with('[') || trimmed.starts_with('"') {
        return match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(TokenResponseError::MalformedJson(
                "expected an object".into(),
            )),
            Err(e) => Err(TokenResponseError::MalformedJson(format!(
                "{} at line {} column {}",
                json_error_kind(&e),
                e.line(),
                e.column()
            ))),
        };
    }
    if looks_form_encoded(trimmed) {
        let mut map = Map::new();
        for (key, value) in url::form_urlencoded::parse(trimmed.as_bytes()) {
            map.insert(key.into_owned(), Value::String(value.into_owned()));
        }
        return Ok(map);
    }
    // A body that names a token field (a form body with a stray `&` or space) is not quoted.
    let start = if trimmed.to_ascii_lowercase().contains("token") {
        String::from("<withheld: mentions a token>")
    } else {
        truncate_for_message(trimmed)
    };
    Err(TokenResponseError::NotJson { start })
}

fn json_error_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Eof => "truncated",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Io => "read error",
    }
}

fn looks_form_encoded(text: &str) -> bool {
    !text.contains(char::is_whitespace)
        && !text.starts_with('<')
        && text.split('&').all(|pair| pair.contains('='))
        && text
            .split('&')
            .any(|pair| pair.starts_with("access_token=") || pair.starts_with("error="))
}

fn embedded_error(map: &Map<String, Value>) -> Option<EmbeddedError> {
    let slack_failure = matches!(map.get("ok"), Some(Value::Bool(false)));
    let error = map.get("error").and_then(Value::as_str);
    match (error, slack_failure, map.contains_key("access_token")) {
        (Some(code), _, false) | (Some(code), true, _) => Some(EmbeddedError {
            error: code.to_owned(),
            description: map
                .get("error_description")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }),
        (None, true, _) => Some(EmbeddedError {
            error: "unknown_error".to_owned(),
            description: None,
        }),
        _ => None,
    }
}

/// An OAuth error response body (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OAuthErrorBody {
    /// The `error` code.
    pub error: String,
    /// The `error_description`, when sent.
    pub description: Option<String>,
}

impl OAuthErrorBody {
    /// Reads an error body; `None` when the body is not an OAuth error object (HTML, empty...).
    pub fn parse(body: &[u8]) -> Option<OAuthErrorBody> {
        let map = parse_body_object(body).ok()?;
        let error = map.get("error")?.as_str()?.to_owned();
        let description = map
            .get("error_description")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Some(OAuthErrorBody { error, description })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_700_000_000_000);

    // Found by `cargo fuzz run token_response`: a form body that is not quite form-encoded
    // (here a trailing `&`) was quoted in the error, access token included.
    #[test]
    fn not_json_error_never_quotes_a_form_access_token() {
        let err = TokenResponse::parse(b"access_token=gh_17B4a&").unwrap_err();
        assert!(matches!(err, TokenResponseError::NotJson { .. }));
        assert!(!err.to_string().contains("gh_17B4a"), "{err}");
        let err = TokenResponse::parse(b"access_token=gho_16C7e42F292c6912 x").unwrap_err();
        assert!(!err.to_string().contains("gho_16C7"), "{err}");
        // Other bodies are still quoted for diagnosis.
        let err = TokenResponse::parse(b"<html>Bad Gateway</html>").unwrap_err();
        assert!(err.to_string().contains("<html>Bad Gateway"), "{err}");
    }

    fn jwt_response(claims: &str) -> TokenResponse {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
        let body = format!(r#"{{"access_token":"eyJhbGciOiJub25lIn0.{payload}.sig"}}"#);
        TokenResponse::parse_tokens(body.as_bytes()).unwrap()
    }

    // Found while writing the token_response fuzz target: `exp - iat` overflowed (a panic with
    // overflow checks on).
    #[test]
    fn jwt_lifetime_does_not_overflow() {
        let set = jwt_response(r#"{"exp":9223372036854775807,"iat":-1}"#)
            .into_token_set(NOW, &ExpiryDefaults::default());
        assert_eq!(set.expires_at, NOW + MAX_EXPIRES_IN);
    }

    // Found while writing the token_response fuzz target: a JWT `exp` without `iat` far in the
    // future was taken as is, beyond MAX_EXPIRES_IN, and `to_rfc3339` (CLI, server API) panicked.
    #[test]
    fn jwt_exp_without_iat_is_capped() {
        let set = jwt_response(r#"{"exp":1e300}"#).into_token_set(NOW, &ExpiryDefaults::default());
        assert_eq!(set.expires_at, NOW + MAX_EXPIRES_IN);
        let _ = set.expires_at.to_rfc3339();
        let set =
            jwt_response(r#"{"exp":1700003600}"#).into_token_set(NOW, &ExpiryDefaults::default());
        assert_eq!(set.expires_at, Timestamp::from_secs(1_700_003_600));
    }
}
