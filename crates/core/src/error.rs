//! Error classification: every failure says what to do about it.
//!
//! Token-endpoint failures (RFC 6749 §5.2 error codes, HTTP status when the body is not an OAuth
//! error, transport failures) become a [`RefreshError`] whose [`ErrorClass`] tells the engine
//! whether to retry later, re-authenticate, stop for a configuration fix, or report a permission
//! problem. API responses are judged by [`crate::www_authenticate::classify_api_response`].

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::token::{OAuthErrorBody, TokenResponseError};

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Try again later (with backoff, honouring `Retry-After`).
    Transient,
    /// Refresh cannot help: the grant is dead; log in again.
    NeedsReauth,
    /// The client is misconfigured (wrong secret, grant not allowed, wrong URL): stop retrying.
    Configuration,
    /// The grant lacks a permission or scope: refreshing will not fix it.
    Permission,
}

impl ErrorClass {
    /// The snake_case name used in metrics, logs and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::NeedsReauth => "needs_reauth",
            ErrorClass::Configuration => "configuration",
            ErrorClass::Permission => "permission",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of body came with an error status that is not an OAuth error object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    Empty,
    /// An HTML page (proxy or server error page).
    Html,
    /// Something else.
    Other,
}

impl BodyKind {
    /// Guesses the kind of a body.
    pub fn of(body: &[u8]) -> BodyKind {
        let text = String::from_utf8_lossy(&body[..body.len().min(256)]);
        let trimmed = text.trim_start();
        if trimmed.is_empty() {
            BodyKind::Empty
        } else if trimmed.starts_with('<') {
            BodyKind::Html
        } else {
            BodyKind::Other
        }
    }
}

/// How a transport-level failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// The request timed out.
    Timeout,
    /// No connection could be made.
    Connect,
    /// Anything else on the wire (reset, TLS, body read).
    Other,
}

/// A failed call to a token endpoint. The message never contains a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// The server answered an OAuth error object (RFC 6749 §5.2), possibly inside an HTTP 200.
    #[error("token endpoint answered {status} `{}`{}", sanitize(.code), describe(.description))]
    OAuth {
        /// HTTP status.
        status: u16,
        /// The `error` code.
        code: String,
        /// The `error_description`, when sent.
        description: Option<String>,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// An error status without an OAuth error body (HTML error page, empty body...).
    #[error("token endpoint answered HTTP {status} with {} body", body_name(*.body))]
    Status {
        /// HTTP status.
        status: u16,
        /// What the body looked like.
        body: BodyKind,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// A success status with a body that carries no usable tokens.
    #[error("token endpoint answered HTTP {status} with an unusable body: {source}")]
    InvalidResponse {
        /// HTTP status.
        status: u16,
        /// What was wrong.
        #[source]
        source: TokenResponseError,
    },
    /// The request never got an answer.
    #[error("token endpoint unreachable ({kind:?}): {message}")]
    Transport {
        /// How it failed.
        kind: TransportKind,
        /// The transport error's text (URLs and errors, never request bodies).
        message: String,
    },
    /// There is no refresh token to redeem.
    #[error("no refresh token is stored; the credential must be logged in again")]
    NoRefreshToken,
    /// OIDC discovery failed.
    #[error("OIDC discovery failed: {0}")]
    Discovery(String),
    /// A [`crate::source::TokenSource`] (a browser session's renewal) failed.
    #[error("{message}")]
    Source {
        /// What to do about it.
        class: ErrorClass,
        /// A short machine-readable cause (`refresh_rejected`, `login_failed`, `session_busy`...).
        cause: String,
        /// What happened (never a secret).
        message: String,
        /// When to try again, if the source knows.
        retry_after: Option<Duration>,
    },
}

fn describe(description: &Option<String>) -> String {
    match description {
        Some(text) if !text.is_empty() => format!(": {}", sanitize(text)),
        _ => String::new(),
    }
}

fn body_name(kind: BodyKind) -> &'static str {
    match kind {
        BodyKind::Empty => "an empty",
        BodyKind::Html => "an HTML",
        BodyKind::Other => "a non-OAuth",
    }
}

/// Keeps provider-sent text short and printable.
fn sanitize(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

impl RefreshError {
    /// Builds the error for a non-success token-endpoint answer.
    pub fn from_error_response(
        status: u16,
        body: &[u8],
        retry_after: Option<Duration>,
    ) -> RefreshError {
        match OAuthErrorBody::parse(body) {
            Some(oauth) => RefreshError::OAuth {
                status,
                code: oauth.error,
                description: oauth.description,
                retry_after,
            },
            None => RefreshError::Status {
                status,
                body: BodyKind::of(body),
                retry_after,
            },
        }
    }

    /// What to do about this failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            RefreshError::OAuth { status, code, .. } => {
                classify_oauth_code(code).unwrap_or_else(|| classify_status(*status))
            }
            RefreshError::Status { status, .. } => classify_status(*status),
            RefreshError::InvalidResponse { .. } | RefreshError::Transport { .. } => {
                ErrorClass::Transient
            }
            RefreshError::NoRefreshToken => ErrorClass::NeedsReauth,
            RefreshError::Discovery(_) => ErrorClass::Transient,
            RefreshError::Source { class, .. } => *class,
        }
    }

    /// The delay the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RefreshError::OAuth { retry_after, .. }
            | RefreshError::Status { retry_after, .. }
            | RefreshError::Source { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short machine-readable cause, for metrics labels and status reasons.
    pub fn cause(&self) -> String {
        match self {
            RefreshError::OAuth { code, .. } => sanitize(code),
            RefreshError::Status { status, .. } => format!("http_{status}"),
            RefreshError::InvalidResponse { .. } => "invalid_response".into(),
            RefreshError::Transport { kind, .. } => match kind {
                TransportKind::Timeout => "timeout".into(),
                TransportKind::Connect => "connect".into(),
                TransportKind::Other => "transport".into(),
            },
            RefreshError::NoRefreshToken => "no_refresh_token".into(),
            RefreshError::Discovery(_) => "discovery".into(),
            RefreshError::Source { cause, .. } => sanitize(cause),
        }
    }
}

/// Classifies an RFC 6749 §5.2 error code (and the non-standard codes big providers use).
/// `None` for codes this table does not know: the HTTP status decides then.
pub fn classify_oauth_code(code: &str) -> Option<ErrorClass> {
    Some(match code {
        // RFC 6749: the refresh token is invalid, expired, revoked or was issued to another client.
        "invalid_grant"
        // Slack, GitHub and others.
        | "invalid_refresh_token" | "token_revoked" | "token_expired" | "bad_refresh_token"
        | "invalid_token" | "refresh_token_expired" | "interaction_required" | "login_required"
        | "consent_required" => ErrorClass::NeedsReauth,
        "invalid_client" | "unauthorized_client" | "unsupported_grant_type" | "invalid_request"
        | "invalid_client_id" | "bad_client_secret" | "incorrect_client_credentials" => {
            ErrorClass::Configuration
        }
        "invalid_scope" | "access_denied" | "insufficient_scope" => ErrorClass::Permission,
        "temporarily_unavailable" | "server_error" | "slow_down" | "ratelimited" | "rate_limited" => {
            ErrorClass::Transient
        }
        _ => return None,
    })
}

/// Classifies an HTTP status from a token endpoint whose body said nothing useful.
pub fn classify_status(status: u16) -> ErrorClass {
    match status {
        408 | 425 | 429 | 500..=599 => ErrorClass::Transient,
        403 => ErrorClass::Permission,
        // 400 and 401 at a token endpoint without an OAuth body: the request or the client's
        // authentication is wrong; 404/405: the URL is wrong. Retrying won't help.
        _ if (400..500).contains(&status) => ErrorClass::Configuration,
        // 1xx/3xx answers (a redirect to a login page, say) are not a token endpoint's.
        _ => ErrorClass::Configuration,
    }
}

/// Parses a `Retry-After` header value: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
/// Dates in the past give zero; unparsable values give `None`.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds.min(24 * 3600)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(
        Timestamp::from_system_time(date)
            .saturating_since(now)
            .min(Duration::from_secs(24 * 3600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_codes_map_to_actions() {
        let table = [
            ("invalid_grant", 400, ErrorClass::NeedsReauth),
            ("invalid_client", 401, ErrorClass::Configuration),
            ("unauthorized_client", 400, ErrorClass::Configuration),
            ("unsupported_grant_type", 400, ErrorClass::Configuration),
            ("invalid_scope", 400, ErrorClass::Permission),
            ("temporarily_unavailable", 503, ErrorClass::Transient),
            ("server_error", 500, ErrorClass::Transient),
            ("invalid_refresh_token", 200, ErrorClass::NeedsReauth),
            ("something_new", 503, ErrorClass::Transient),
            ("something_new", 400, ErrorClass::Configuration),
        ];
        for (code, status, class) in table {
            let error = RefreshError::OAuth {
                status,
                code: code.into(),
                description: None,
                retry_after: None,
            };
            assert_eq!(error.class(), class, "{code} {status}");
        }
    }

    #[test]
    fn statuses_without_oauth_body_map_to_actions() {
        let table = [
            (429, ErrorClass::Transient),
            (500, ErrorClass::Transient),
            (502, ErrorClass::Transient),
            (503, ErrorClass::Transient),
            (504, ErrorClass::Transient),
            (408, ErrorClass::Transient),
            (400, ErrorClass::Configuration),
            (401, ErrorClass::Configuration),
            (404, ErrorClass::Configuration),
            (403, ErrorClass::Permission),
            (302, ErrorClass::Configuration),
        ];
        for (status, class) in table {
            let html = RefreshError::from_error_response(
                status,
                b"<html><body>Bad Gateway</body></html>",
                None,
            );
            assert_eq!(html.class(), class, "{status}");
            assert!(matches!(
                html,
                RefreshError::Status {
                    body: BodyKind::Html,
                    ..
                }
            ));
            let empty = RefreshError::from_error_response(status, b"", None);
            assert!(matches!(
                empty,
                RefreshError::Status {
                    body: BodyKind::Empty,
                    ..
                }
            ));
            assert_eq!(empty.class(), class);
        }
    }

    #[test]
    fn error_body_with_json_is_read_even_with_5xx() {
        let error = RefreshError::from_error_response(
            503,
            br#"{"error":"temporarily_unavailable","error_description":"maintenance"}"#,
            Some(Duration::from_secs(7)),
        );
        assert_eq!(error.class(), ErrorClass::Transient);
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(
            error.to_string(),
            "token endpoint answered 503 `temporarily_unavailable`: maintenance"
        );
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let now = Timestamp::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date((now + Duration::from_secs(90)).to_system_time());
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let earlier = httpdate::fmt_http_date((now - Duration::from_secs(90)).to_system_time());
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(
            parse_retry_after("99999999999", now),
            Some(Duration::from_secs(24 * 3600))
        );
    }
}
