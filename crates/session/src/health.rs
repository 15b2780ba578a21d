//! Is a session still logged in? The heartbeat probe ([`probe`]) and the cookie-based silent
//! refresh ([`cookie_refresh`]), both sent with the session's cookies from the [`crate::jar`], both
//! folding the `Set-Cookie` answers back into the storage state.
//!
//! The caller passes a [`reqwest::Client`] built by [`http_client`]: redirects off (a redirect to
//! the login page is the signal), no cookie store of its own (the storage state is the jar), and
//! the session's proxy identity.

use std::time::Duration;

use authkeeper_core::Timestamp;
use authkeeper_core::error::parse_retry_after;
use reqwest::header::{COOKIE, HeaderValue, LOCATION, ORIGIN, RETRY_AFTER, SET_COOKIE};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::config::SiteConfig;
use crate::identity::Identity;
use crate::jar::{MergeSummary, cookie_header, merge_set_cookie};
use crate::storage_state::StorageState;

/// The most of a probe's body read when looking for the logged-out marker (1 MiB).
pub const MAX_PROBE_BODY_BYTES: usize = 1024 * 1024;

/// Why a refresh, or building a client, failed. Messages never hold a cookie value, a URL's
/// query or a proxy's credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    /// The site has no `[sites.X.refresh]` (or no `[sites.X.probe]`).
    #[error("the site has no {0} configured")]
    NotConfigured(&'static str),
    /// The site's refresh or probe settings cannot be used.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The proxy URL cannot be used (the URL itself is not shown: it may hold a password).
    #[error("invalid proxy URL (not shown)")]
    InvalidProxy,
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The request did not get an answer (connection, timeout, proxy, TLS).
    #[error("request failed: {0}")]
    Transport(String),
    /// The site answered 401 or 403 to the refresh: the refresh cookie is no longer accepted, a
    /// login must run.
    #[error(
        "the site no longer accepts the session's refresh cookie (HTTP {status}): log in again"
    )]
    RefreshRejected {
        /// 401 or 403.
        status: u16,
    },
    /// Any other non-2xx answer to the refresh.
    #[error("the refresh answered HTTP {status}")]
    Status {
        /// The status.
        status: u16,
        /// Its `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
}

/// Builds the client probes and refreshes use: no redirects followed, no cookie store of its own,
/// `timeout` per request, and `proxy` (`http://user:pass@host:port`, `socks5://…`) for every
/// request, or no proxy at all (the environment's proxy variables are ignored: a session's proxy
/// identity is part of the session).
pub fn http_client(proxy: Option<&str>, timeout: Duration) -> Result<reqwest::Client, HealthError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(false)
        .timeout(timeout)
        .connect_timeout(timeout);
    builder = match proxy {
        Some(proxy) => {
            builder.proxy(reqwest::Proxy::all(proxy).map_err(|_| HealthError::InvalidProxy)?)
        }
        None => builder.no_proxy(),
    };
    builder
        .build()
        .map_err(|err| HealthError::Client(describe_error(&err)))
}

/// What a probe concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Still logged in.
    LoggedIn,
    /// Logged out: a redirect to the login page, a logged-out status or the logged-out marker.
    LoggedOut {
        /// Which signal said so (no secrets).
        reason: String,
    },
    /// The site blocked the request (403 or 429).
    Blocked {
        /// The status.
        status: u16,
        /// Its `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The probe could not tell: a transport error or a 5xx.
    Error(String),
}

impl ProbeOutcome {
    /// `logged_in`, `logged_out`, `blocked` or `error`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProbeOutcome::LoggedIn => "logged_in",
            ProbeOutcome::LoggedOut { .. } => "logged_out",
            ProbeOutcome::Blocked { .. } => "blocked",
            ProbeOutcome::Error(_) => "error",
        }
    }
}

/// A probe's outcome and the storage state with its `Set-Cookie` answers applied.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    /// What the probe concluded.
    pub outcome: ProbeOutcome,
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// The state after the answer's `Set-Cookie` headers (the input state when none).
    pub state: StorageState,
    /// What the `Set-Cookie` headers changed.
    pub cookies: MergeSummary,
}

/// Probes whether `state` is still logged in to `site`, per its `[probe]`: a GET of the probe
/// URL with the state's cookies, redirects not followed (build `client` with [`http_client`]).
///
/// In order: a status in `logged_out_status` is logged out; a redirect whose `Location` path
/// starts with `logged_out_redirect` is logged out (other redirects: logged in); 403 and 429 are
/// blocked; 5xx is an error; a body containing `logged_out_marker` is logged out; anything else
/// is logged in. Every answer's `Set-Cookie` headers are merged into the returned state.
pub async fn probe(
    client: &reqwest::Client,
    site: &SiteConfig,
    state: &StorageState,
    identity: Option<&Identity>,
    now: Timestamp,
) -> ProbeResult {
    let mut result = ProbeResult {
        outcome: ProbeOutcome::LoggedIn,
        status: None,
        state: state.clone(),
        cookies: MergeSummary::default(),
    };
    let Some(config) = &site.probe else {
        result.outcome = ProbeOutcome::Error("the site has no probe configured".to_owned());
        return result;
    };
    let url = match site.resolve(&config.url) {
        Ok(url) => url,
        Err(_) => {
            result.outcome = ProbeOutcome::Error("the probe URL is not a valid URL".to_owned());
            return result;
        }
    };
    let request = match with_cookies(
        with_identity(client.get(url.clone()), identity),
        state,
        &url,
        now,
    ) {
        Ok(request) => request.timeout(config.timeout),
        Err(err) => {
            result.outcome = ProbeOutcome::Error(err.to_string());
            return result;
        }
    };
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(err) => {
            result.outcome = ProbeOutcome::Error(describe_error(&err));
            return result;
        }
    };
    let status = response.status();
    result.status = Some(status.as_u16());
    result.cookies = merge_response_cookies(&mut result.state, &url, &response, now);

    if config.logged_out_status.contains(&status.as_u16()) {
        result.outcome = ProbeOutcome::LoggedOut {
            reason: format!("the probe answered HTTP {}", status.as_u16()),
        };
        return result;
    }
    if status.is_redirection() {
        let target = response
            .headers()
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|location| url.join(location).ok());
        let login = match (&config.logged_out_redirect, target) {
            (Some(prefix), Some(target)) if redirect_matches(prefix, &target) => Some(target),
            _ => None,
        };
        if let Some(target) = login {
            result.outcome = ProbeOutcome::LoggedOut {
                reason: format!("the probe redirected to {}", target.path()),
            };
        }
        return result;
    }
    if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS {
        result.outcome = ProbeOutcome::Blocked {
            status: status.as_u16(),
            retry_after: retry_after(&response, now),
        };
        return result;
    }
    if status.is_server_error() {
        result.outcome =
            ProbeOutcome::Error(format!("the probe answered HTTP {}", status.as_u16()));
        return result;
    }
    if let Some(marker) = config
        .logged_out_marker
        .as_deref()
        .filter(|m| !m.is_empty())
    {
        let mut body: Vec<u8> = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_PROBE_BODY_BYTES.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if body.len() >= MAX_PROBE_BODY_BYTES {
                        break;
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    result.outcome = ProbeOutcome::Error(describe_error(&err));
                    return result;
                }
            }
        }
        let marker = marker.as_bytes();
        if body.windows(marker.len()).any(|window| window == marker) {
            result.outcome = ProbeOutcome::LoggedOut {
                reason: "the probe's answer shows the logged-out marker".to_owned(),
            };
        }
    }
    result
}

/// Runs the site's cookie-based silent refresh (`[refresh]`): the configured method on its URL
/// with the state's cookies and an `Origin` header (default: the site's origin). A 2xx answer's
/// `Set-Cookie` headers are merged into the returned state; 401 and 403 mean the refresh cookie is
/// no longer accepted ([`HealthError::RefreshRejected`]).
pub async fn cookie_refresh(
    client: &reqwest::Client,
    site: &SiteConfig,
    state: &StorageState,
    identity: Option<&Identity>,
    now: Timestamp,
) -> Result<StorageState, HealthError> {
    let config = site
        .refresh
        .as_ref()
        .ok_or(HealthError::NotConfigured("cookie refresh"))?;
    let url = site
        .resolve(&config.url)
        .map_err(|_| HealthError::InvalidConfig("the refresh URL is not a valid URL".to_owned()))?;
    let method =
        Method::from_bytes(config.method.to_ascii_uppercase().as_bytes()).map_err(|_| {
            HealthError::InvalidConfig("the refresh method is not an HTTP method".to_owned())
        })?;
    let origin = match &config.origin {
        Some(origin) => origin.clone(),
        None => site.origin.origin().ascii_serialization(),
    };
    let origin = HeaderValue::from_str(&origin).map_err(|_| {
        HealthError::InvalidConfig("the refresh origin is not a valid header value".to_owned())
    })?;
    let has_body = !matches!(method, Method::GET | Method::HEAD);
    // As the site's own page would send it: fetch() from the origin, same-origin.
    let request = with_identity(client.request(method, url.clone()), identity)
        .header(ORIGIN, origin)
        .header("sec-fetch-site", "same-origin")
        .header("sec-fetch-mode", "cors")
        .header("sec-fetch-dest", "empty");
    let mut request = with_cookies(request, state, &url, now)?;
    if has_body {
        // An explicit empty body, so that a `Content-Length: 0` is sent.
        request = request.body(Vec::<u8>::new());
    }
    let response = request
        .send()
        .await
        .map_err(|err| HealthError::Transport(describe_error(&err)))?;
    let status = response.status();
    if status.is_success() {
        let mut updated = state.clone();
        merge_response_cookies(&mut updated, &url, &response, now);
        return Ok(updated);
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(HealthError::RefreshRejected {
            status: status.as_u16(),
        });
    }
    Err(HealthError::Status {
        status: status.as_u16(),
        retry_after: retry_after(&response, now),
    })
}

/// Adds the session identity's `User-Agent` and `Accept-Language`.
pub(crate) fn with_identity(
    request: reqwest::RequestBuilder,
    identity: Option<&Identity>,
) -> reqwest::RequestBuilder {
    let Some(identity) = identity else {
        return request;
    };
    let request = request.header(reqwest::header::ACCEPT_LANGUAGE, identity.accept_language());
    match &identity.user_agent {
        Some(user_agent) => request.header(reqwest::header::USER_AGENT, user_agent),
        None => request,
    }
}

/// Adds the `Cookie` header for `url`.
fn with_cookies(
    request: reqwest::RequestBuilder,
    state: &StorageState,
    url: &Url,
    now: Timestamp,
) -> Result<reqwest::RequestBuilder, HealthError> {
    match cookie_header(state, url, now) {
        None => Ok(request),
        Some(header) => {
            let mut value = HeaderValue::from_bytes(header.as_bytes()).map_err(|_| {
                HealthError::InvalidConfig(
                    "the state's cookies cannot be sent in a Cookie header".to_owned(),
                )
            })?;
            value.set_sensitive(true);
            let mut header = header;
            zeroize::Zeroize::zeroize(&mut header);
            Ok(request.header(COOKIE, value))
        }
    }
}

fn merge_response_cookies(
    state: &mut StorageState,
    url: &Url,
    response: &reqwest::Response,
    now: Timestamp,
) -> MergeSummary {
    let values = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok());
    merge_set_cookie(state, url, values, now)
}

fn retry_after(response: &reqwest::Response, now: Timestamp) -> Option<Duration> {
    response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, now))
}

/// True when the redirect `target` goes to the logged-out page `prefix`: an absolute URL prefix,
/// or a path prefix (`/login` matches `/login`, `/login?next=…`, `/login/sso`).
fn redirect_matches(prefix: &str, target: &Url) -> bool {
    if prefix.contains("://") {
        return target.as_str().starts_with(prefix);
    }
    target.path().starts_with(prefix)
}

/// A transport error in words, without its URL or anything a proxy URL could contribute.
fn describe_error(err: &reqwest::Error) -> String {
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_body() || err.is_decode() {
        "reading the answer failed"
    } else if err.is_builder() {
        "the request could not be built"
    } else {
        "the request failed"
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return format!("{what} ({})", io.kind());
        }
        source = cause.source();
    }
    what.to_owned()
}
