//! RFC 9457 problem details (`application/problem+json`): every error the broker answers with.
//!
//! Each cause has a stable [`ProblemType`] whose URN (`urn:authkeeper:problem:<slug>`) clients
//! may match on; the `title` is fixed per type, the `detail` explains this occurrence. A problem
//! never carries a secret: build details from names and classes, never from tokens or keys.

use std::time::Duration;

use authkeeper_core::{ErrorClass, KeeperError, Timestamp};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use serde::Serialize;

/// The media type of a problem body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The `WWW-Authenticate` challenge sent with every 401.
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"authkeeper\"";

/// The stable causes of a problem; each maps to one URN and one default HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemType {
    /// The credential's grant is dead: a human or a login method must act (409).
    NeedsReauth,
    /// The credential is not configured (404; the API answers `forbidden` instead, see `auth`).
    UnknownCredential,
    /// The client key may not use this credential, or it does not exist (403).
    Forbidden,
    /// No client key, or an unknown one (401).
    Unauthorized,
    /// Refreshing is paused after transient failures; retry later (503 + `Retry-After`).
    Unavailable,
    /// The credential is misconfigured (client id/secret, grant, URL, `min_ttl`) (502).
    Configuration,
    /// The grant lacks a permission or scope (502).
    Permission,
    /// The request is malformed: bad path, query, JSON or content type (400).
    InvalidRequest,
    /// The request body is larger than the configured limit (413).
    PayloadTooLarge,
    /// No such route or resource (404).
    NotFound,
    /// The route exists but not for this method (405).
    MethodNotAllowed,
    /// The proxied upstream could not be reached or answered garbage (502).
    UpstreamUnavailable,
    /// The proxied upstream did not answer in time (504).
    UpstreamTimeout,
    /// The credential store failed (503).
    StoreUnavailable,
    /// The broker is not ready yet (503).
    NotReady,
    /// The request body is not `application/json` (415).
    UnsupportedMediaType,
    /// The request took longer than the broker's `request_timeout` (503 + `Retry-After`).
    Timeout,
    /// The feature is not available in this build (501).
    NotImplemented,
    /// An unexpected internal failure (500).
    Internal,
    /// Every session of the site is leased (503 + `Retry-After`).
    NoSessionAvailable,
    /// The session lease expired and was reclaimed, or was released: lease again (409).
    LeaseLost,
    /// The lease id is malformed or names no session (404).
    UnknownLease,
    /// A browser login for the site failed (502; 503 + `Retry-After` when transient).
    LoginFailed,
    /// A credential of that name exists already, or is declared in the configuration (409).
    AlreadyExists,
}

impl ProblemType {
    /// Every problem type, for documentation and tests.
    pub const ALL: [ProblemType; 24] = [
        ProblemType::NeedsReauth,
        ProblemType::UnknownCredential,
        ProblemType::Forbidden,
        ProblemType::Unauthorized,
        ProblemType::Unavailable,
        ProblemType::Configuration,
        ProblemType::Permission,
        ProblemType::InvalidRequest,
        ProblemType::PayloadTooLarge,
        ProblemType::NotFound,
        ProblemType::MethodNotAllowed,
        ProblemType::UpstreamUnavailable,
        ProblemType::UpstreamTimeout,
        ProblemType::StoreUnavailable,
        ProblemType::NotReady,
        ProblemType::UnsupportedMediaType,
        ProblemType::Timeout,
        ProblemType::NotImplemented,
        ProblemType::Internal,
        ProblemType::NoSessionAvailable,
        ProblemType::LeaseLost,
        ProblemType::UnknownLease,
        ProblemType::LoginFailed,
        ProblemType::AlreadyExists,
    ];

    /// The short kebab-case slug, the last segment of the URN.
    pub fn slug(self) -> &'static str {
        match self {
            ProblemType::NeedsReauth => "needs-reauth",
            ProblemType::UnknownCredential => "unknown-credential",
            ProblemType::Forbidden => "forbidden",
            ProblemType::Unauthorized => "unauthorized",
            ProblemType::Unavailable => "unavailable",
            ProblemType::Configuration => "configuration",
            ProblemType::Permission => "permission",
            ProblemType::InvalidRequest => "invalid-request",
            ProblemType::PayloadTooLarge => "payload-too-large",
            ProblemType::NotFound => "not-found",
            ProblemType::MethodNotAllowed => "method-not-allowed",
            ProblemType::UpstreamUnavailable => "upstream-unavailable",
            ProblemType::UpstreamTimeout => "upstream-timeout",
            ProblemType::StoreUnavailable => "store-unavailable",
            ProblemType::NotReady => "not-ready",
            ProblemType::UnsupportedMediaType => "unsupported-media-type",
            ProblemType::Timeout => "timeout",
            ProblemType::NotImplemented => "not-implemented",
            ProblemType::Internal => "internal",
            ProblemType::NoSessionAvailable => "no-session-available",
            ProblemType::LeaseLost => "lease-lost",
            ProblemType::UnknownLease => "unknown-lease",
            ProblemType::LoginFailed => "login-failed",
            ProblemType::AlreadyExists => "already-exists",
        }
    }

    /// The `type` member: `urn:authkeeper:problem:<slug>`.
    pub fn uri(self) -> String {
        format!("urn:authkeeper:problem:{}", self.slug())
    }

    /// The fixed human-readable summary.
    pub fn title(self) -> &'static str {
        match self {
            ProblemType::NeedsReauth => "Credential needs re-authentication",
            ProblemType::UnknownCredential => "Unknown credential",
            ProblemType::Forbidden => "Forbidden",
            ProblemType::Unauthorized => "Unauthorized",
            ProblemType::Unavailable => "Credential temporarily unavailable",
            ProblemType::Configuration => "Credential misconfigured",
            ProblemType::Permission => "Credential lacks permission",
            ProblemType::InvalidRequest => "Invalid request",
            ProblemType::PayloadTooLarge => "Payload too large",
            ProblemType::NotFound => "Not found",
            ProblemType::MethodNotAllowed => "Method not allowed",
            ProblemType::UpstreamUnavailable => "Upstream unavailable",
            ProblemType::UpstreamTimeout => "Upstream timeout",
            ProblemType::StoreUnavailable => "Store unavailable",
            ProblemType::NotReady => "Not ready",
            ProblemType::UnsupportedMediaType => "Unsupported media type",
            ProblemType::Timeout => "Request timed out",
            ProblemType::NotImplemented => "Not implemented",
            ProblemType::Internal => "Internal error",
            ProblemType::NoSessionAvailable => "No session available",
            ProblemType::LeaseLost => "Lease lost",
            ProblemType::UnknownLease => "Unknown lease",
            ProblemType::LoginFailed => "Login failed",
            ProblemType::AlreadyExists => "Already exists",
        }
    }

    /// The HTTP status this cause is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ProblemType::NeedsReauth => StatusCode::CONFLICT,
            ProblemType::UnknownCredential | ProblemType::NotFound => StatusCode::NOT_FOUND,
            ProblemType::Forbidden => StatusCode::FORBIDDEN,
            ProblemType::Unauthorized => StatusCode::UNAUTHORIZED,
            ProblemType::Unavailable
            | ProblemType::StoreUnavailable
            | ProblemType::NotReady
            | ProblemType::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ProblemType::Configuration
            | ProblemType::Permission
            | ProblemType::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            ProblemType::InvalidRequest => StatusCode::BAD_REQUEST,
            ProblemType::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemType::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemType::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProblemType::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemType::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ProblemType::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ProblemType::NoSessionAvailable => StatusCode::SERVICE_UNAVAILABLE,
            ProblemType::LeaseLost => StatusCode::CONFLICT,
            ProblemType::UnknownLease => StatusCode::NOT_FOUND,
            ProblemType::LoginFailed => StatusCode::BAD_GATEWAY,
            ProblemType::AlreadyExists => StatusCode::CONFLICT,
        }
    }
}

/// An RFC 9457 problem, ready to be turned into a response.
///
/// ```
/// use authkeeper_server::problem::Problem;
/// let problem = Problem::not_found("no route for GET /nope");
/// assert_eq!(problem.status().as_u16(), 404);
/// ```
#[derive(Debug, Clone)]
pub struct Problem {
    kind: ProblemType,
    status: StatusCode,
    detail: String,
    credential: Option<String>,
    next_attempt_at: Option<Timestamp>,
    retry_after: Option<Duration>,
    login_hint: Option<String>,
    max_min_ttl: Option<u32>,
}

/// The JSON body of a problem.
#[derive(Debug, Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    login_hint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_min_ttl: Option<u32>,
}

impl Problem {
    /// A problem of `kind` with its default status and a detail for this occurrence.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            status: kind.status(),
            detail: detail.into(),
            credential: None,
            next_attempt_at: None,
            retry_after: None,
            login_hint: None,
            max_min_ttl: None,
        }
    }

    /// 400 `invalid-request`.
    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Problem::new(ProblemType::InvalidRequest, detail)
    }

    /// 401 `unauthorized` (the response carries `WWW-Authenticate: Bearer realm="authkeeper"`).
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(ProblemType::Unauthorized, detail)
    }

    /// 403 `forbidden`: the same answer for a credential the key may not use and for one that
    /// does not exist.
    pub fn forbidden() -> Self {
        Problem::new(
            ProblemType::Forbidden,
            "this client key may not use the requested credential",
        )
    }

    /// 404 `not-found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(ProblemType::NotFound, detail)
    }

    /// 413 `payload-too-large` for a body over `limit` bytes.
    pub fn payload_too_large(limit: usize) -> Self {
        Problem::new(
            ProblemType::PayloadTooLarge,
            format!("the request body exceeds the limit of {limit} bytes"),
        )
    }

    /// 502 `upstream-unavailable`.
    pub fn upstream_unavailable(detail: impl Into<String>) -> Self {
        Problem::new(ProblemType::UpstreamUnavailable, detail)
    }

    /// 504 `upstream-timeout`.
    pub fn upstream_timeout(detail: impl Into<String>) -> Self {
        Problem::new(ProblemType::UpstreamTimeout, detail)
    }

    /// 500 `internal`.
    pub fn internal(detail: impl Into<String>) -> Self {
        Problem::new(ProblemType::Internal, detail)
    }

    /// Maps a Keeper failure to its problem. `now` computes `Retry-After` from the next attempt.
    pub fn from_keeper(error: &KeeperError, now: Timestamp) -> Self {
        let (kind, credential, next_attempt_at) = match error {
            KeeperError::UnknownCredential(name) => {
                (ProblemType::UnknownCredential, Some(name.as_str()), None)
            }
            KeeperError::NotStored(name) => (ProblemType::NeedsReauth, Some(name.as_str()), None),
            KeeperError::AlreadyExists(name) => {
                (ProblemType::AlreadyExists, Some(name.as_str()), None)
            }
            KeeperError::NeedsReauth { name, .. } => {
                (ProblemType::NeedsReauth, Some(name.as_str()), None)
            }
            KeeperError::Unavailable {
                name,
                class,
                next_attempt_at,
                ..
            } => (
                class_type(*class),
                Some(name.as_str()),
                Some(*next_attempt_at),
            ),
            KeeperError::Refresh {
                name,
                class,
                next_attempt_at,
                ..
            } => (class_type(*class), Some(name.as_str()), *next_attempt_at),
            KeeperError::MinTtlTooLong { name, .. }
            | KeeperError::UnknownGeneration { name, .. } => {
                (ProblemType::InvalidRequest, Some(name.as_str()), None)
            }
            KeeperError::LeaseWaitTimeout { name, .. } | KeeperError::Superseded { name } => {
                (ProblemType::Unavailable, Some(name.as_str()), None)
            }
            KeeperError::Store { name, .. } => {
                (ProblemType::StoreUnavailable, Some(name.as_str()), None)
            }
            // `KeeperError` is non-exhaustive: future variants follow their class.
            #[allow(unreachable_patterns)]
            other => (class_type(other.class()), None, None),
        };
        let mut problem = Problem::new(kind, error.to_string());
        if let KeeperError::MinTtlTooLong { lifetime, .. } = error {
            // The largest `min_ttl` (whole seconds) this credential's tokens can satisfy.
            let whole = lifetime.as_secs();
            let max = if lifetime.subsec_nanos() > 0 {
                whole
            } else {
                whole.saturating_sub(1)
            };
            problem.max_min_ttl = Some(u32::try_from(max).unwrap_or(u32::MAX));
        }
        if let Some(name) = credential {
            problem = problem.with_credential(name);
            if kind == ProblemType::NeedsReauth {
                problem = problem.with_login_hint(authkeeper_core::reauth::login_hint(name));
            }
        }
        if let Some(at) = next_attempt_at {
            problem = problem.with_next_attempt_at(at, now);
        } else if matches!(
            kind,
            ProblemType::Unavailable | ProblemType::StoreUnavailable
        ) {
            problem = problem.with_retry_after(Duration::from_secs(1));
        }
        problem
    }

    /// Says what a human should run (`authkeeper login NAME`) for a `needs-reauth` problem.
    pub fn with_login_hint(mut self, hint: impl Into<String>) -> Self {
        self.login_hint = Some(hint.into());
        self
    }

    /// Names the credential concerned.
    pub fn with_credential(mut self, name: impl Into<String>) -> Self {
        self.credential = Some(name.into());
        self
    }

    /// Says when the next refresh attempt happens; also sets `Retry-After` (at least 1 s).
    pub fn with_next_attempt_at(mut self, at: Timestamp, now: Timestamp) -> Self {
        self.next_attempt_at = Some(at);
        let millis = at.millis_since(now).max(0) as u64;
        self.retry_after = Some(Duration::from_millis(millis.div_ceil(1000).max(1) * 1000));
        self
    }

    /// Sets `Retry-After` (rounded up to whole seconds).
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Overrides the HTTP status (keep the default unless a route needs another).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The cause.
    pub fn kind(&self) -> ProblemType {
        self.kind
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The occurrence-specific explanation.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(self.body_struct()).unwrap_or(serde_json::Value::Null)
    }

    fn body_struct(&self) -> ProblemBody<'_> {
        ProblemBody {
            kind: self.kind.uri(),
            title: self.kind.title(),
            status: self.status.as_u16(),
            detail: &self.detail,
            credential: self.credential.as_deref(),
            next_attempt_at: self.next_attempt_at.map(Timestamp::to_rfc3339),
            login_hint: self.login_hint.as_deref(),
            max_min_ttl: self.max_min_ttl,
        }
    }
}

/// The problem type for an error class.
pub fn class_type(class: ErrorClass) -> ProblemType {
    match class {
        ErrorClass::Transient => ProblemType::Unavailable,
        ErrorClass::NeedsReauth => ProblemType::NeedsReauth,
        ErrorClass::Configuration => ProblemType::Configuration,
        ErrorClass::Permission => ProblemType::Permission,
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.kind.title(),
            self.status,
            self.detail
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body_struct()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(BEARER_CHALLENGE));
        }
        if let Some(after) = self.retry_after {
            let secs = after.as_millis().div_ceil(1000).max(1);
            headers.insert(RETRY_AFTER, HeaderValue::from(secs as u64));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_unique() {
        let mut slugs: Vec<_> = ProblemType::ALL.iter().map(|t| t.slug()).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), ProblemType::ALL.len());
    }

    #[test]
    fn retry_after_rounds_up() {
        let now = Timestamp::from_millis(10_000);
        let problem = Problem::new(ProblemType::Unavailable, "x")
            .with_next_attempt_at(Timestamp::from_millis(12_500), now);
        let response = problem.into_response();
        assert_eq!(response.headers()[RETRY_AFTER], "3");
        assert_eq!(response.headers()[CONTENT_TYPE], PROBLEM_JSON);
    }
}
