//! Credentials backed by a browser session (`grant = "session"`): the bearer token a
//! single-page app keeps in localStorage, sessionStorage, a cookie or an API answer, served to
//! HTTP workers like an OAuth token. [`SessionTokenSource`] is the Keeper's
//! [`TokenSource`] for such a credential: it leases the session (so no browser worker uses it
//! at the same moment), renews the token through the site's own refresh endpoint as its page
//! would (the session's cookies, `Origin`, `Sec-Fetch-*`, its user agent, through its proxy),
//! stores the rotated cookies and the new token back into the session, and logs the session in
//! again when the refresh cookie is refused. The Keeper runs it under the credential's refresh
//! lease: one renewal per expiry across every process.
//!
//! ```toml
//! [credentials.portal-api]
//! grant = "session"
//! site = "portal"
//! account = "alice"
//! token_from = { local_storage = "access_token" }
//! renew = { refresh_url = "/api/auth/refresh", pointer = "/access_token" }
//! upstream = "https://portal.example.com/api"
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use authkeeper_core::Timestamp;
use authkeeper_core::config::{CredentialConfig, SessionRenew, TokenFrom};
use authkeeper_core::error::{ErrorClass, RefreshError};
use authkeeper_core::source::TokenSource;
use authkeeper_core::token::{TokenResponse, TokenSet};
use reqwest::header::{ACCEPT_LANGUAGE, COOKIE, ORIGIN, SET_COOKIE, USER_AGENT};
use serde_json::Value;
use url::Url;
use zeroize::Zeroizing;

use crate::jar::{cookie_header, merge_set_cookie};
use crate::model::{Outcome, SessionLease};
use crate::pool::{LeaseError, LeaseRequest, SessionPool};
use crate::storage_state::{NameValue, OriginState, StorageState};

/// A token still this far from its expiry is handed out as found on first use (the Keeper
/// schedules its renewal by its lifetime like any other token's).
const FRESH_ENOUGH: Duration = Duration::from_secs(5);

/// The [`TokenSource`] of one `grant = "session"` credential.
pub struct SessionTokenSource {
    pool: Arc<SessionPool>,
    credential: String,
    site: String,
    account: String,
    token_from: TokenFrom,
    renew: Option<SessionRenew>,
    timeout: Duration,
}

impl std::fmt::Debug for SessionTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTokenSource")
            .field("credential", &self.credential)
            .field("site", &self.site)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// Why a renewal failed, before it becomes a [`RefreshError`].
enum Failure {
    /// The site refused the session's refresh cookie: log the session in again.
    Rejected(u16),
    /// Anything else.
    Error(RefreshError),
}

fn source_error(class: ErrorClass, cause: &str, message: String) -> RefreshError {
    RefreshError::Source {
        class,
        cause: cause.to_owned(),
        message,
        retry_after: None,
    }
}

impl SessionTokenSource {
    /// The source of credential `name` (its `site`, `account`, `token_from` and `renew`) over
    /// `pool`; an error names what is missing.
    pub fn new(
        pool: Arc<SessionPool>,
        name: &str,
        config: &CredentialConfig,
    ) -> Result<SessionTokenSource, String> {
        let (Some(site), Some(account), Some(token_from)) =
            (&config.site, &config.account, &config.token_from)
        else {
            return Err(format!(
                "credential `{name}`: grant = \"session\" needs site, account and token_from"
            ));
        };
        let Some(site_config) = pool.site_config(site) else {
            return Err(format!(
                "credential `{name}`: site `{site}` is not configured ([sites.{site}])"
            ));
        };
        if site_config.account(account).is_none() {
            return Err(format!(
                "credential `{name}`: site `{site}` has no account `{account}`"
            ));
        }
        Ok(SessionTokenSource {
            pool,
            credential: name.to_owned(),
            site: site.clone(),
            account: account.clone(),
            token_from: token_from.clone(),
            renew: config.renew.clone(),
            timeout: config.timeout,
        })
    }

    async fn lease(&self) -> Result<SessionLease, RefreshError> {
        let request = LeaseRequest {
            account: Some(self.account.clone()),
            lease_ttl: Some(self.timeout * 3),
            holder: format!("credential {}", self.credential),
        };
        self.pool
            .lease(&self.site, &request)
            .await
            .map_err(|error| lease_error(&self.site, error))
    }

    async fn release(&self, lease: &SessionLease, outcome: Outcome, state: Option<StorageState>) {
        if let Err(error) = self.pool.release(&lease.lease_id, outcome, state).await {
            tracing::warn!(credential = %self.credential, %error, "releasing the session after a renewal failed");
        }
    }

    /// The site's origin.
    fn origin(&self) -> Result<Url, RefreshError> {
        self.pool
            .site_config(&self.site)
            .map(|site| site.origin.clone())
            .ok_or_else(|| {
                source_error(
                    ErrorClass::Configuration,
                    "unknown_site",
                    format!("site `{}` is not configured", self.site),
                )
            })
    }

    /// Renews the token (or, on first use, takes a fresh one from the session) under `lease`.
    async fn renew_under(
        &self,
        lease: &SessionLease,
        first: bool,
        now: Timestamp,
    ) -> Result<(Zeroizing<String>, Option<u64>, StorageState), Failure> {
        let mut state = lease.storage_state.clone();
        if first
            && let Some(token) = self
                .token_in(lease, &state, now)
                .await
                .map_err(Failure::Error)?
            && still_fresh(&token, now)
        {
            return Ok((token, None, state));
        }
        let Some(renew) = &self.renew else {
            // No refresh endpoint: a fresh login is the only way.
            return Err(Failure::Rejected(0));
        };
        let origin = self.origin().map_err(Failure::Error)?;
        let url = origin.join(&renew.refresh_url).map_err(|_| {
            Failure::Error(source_error(
                ErrorClass::Configuration,
                "invalid_refresh_url",
                "renew.refresh_url is not a valid URL".into(),
            ))
        })?;
        let method = reqwest::Method::from_bytes(renew.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                Failure::Error(source_error(
                    ErrorClass::Configuration,
                    "invalid_method",
                    "renew.method is not an HTTP method".into(),
                ))
            })?;
        let client = self.client(lease).map_err(Failure::Error)?;
        let mut request = client
            .request(method.clone(), url.clone())
            .header(ORIGIN, origin.origin().ascii_serialization())
            .header("sec-fetch-site", "same-origin")
            .header("sec-fetch-mode", "cors")
            .header("sec-fetch-dest", "empty");
        request = with_identity(request, lease);
        if let Some(cookies) = cookie_header(&state, &url, now) {
            let cookies = Zeroizing::new(cookies);
            request = request.header(COOKIE, cookies.as_str());
        }
        if !matches!(method, reqwest::Method::GET | reqwest::Method::HEAD) {
            request = request.body(Vec::<u8>::new());
        }
        let response = request.send().await.map_err(|error| {
            Failure::Error(source_error(
                ErrorClass::Transient,
                "refresh_unreachable",
                format!(
                    "the refresh endpoint of site `{}` is unreachable: {}",
                    self.site,
                    error.without_url()
                ),
            ))
        })?;
        let status = response.status();
        if status.as_u16() == 401 || status.as_u16() == 403 {
            return Err(Failure::Rejected(status.as_u16()));
        }
        let set_cookies: Vec<String> = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok().map(str::to_owned))
            .collect();
        merge_set_cookie(
            &mut state,
            &url,
            set_cookies.iter().map(String::as_str),
            now,
        );
        if !status.is_success() {
            return Err(Failure::Error(RefreshError::Source {
                class: if status.as_u16() == 429 || status.is_server_error() {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Configuration
                },
                cause: format!("refresh_http_{}", status.as_u16()),
                message: format!(
                    "the refresh endpoint of site `{}` answered HTTP {}",
                    self.site,
                    status.as_u16()
                ),
                retry_after: None,
            }));
        }
        let body = Zeroizing::new(
            response
                .bytes()
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default(),
        );
        let answer: Value = serde_json::from_slice(&body).map_err(|_| {
            Failure::Error(source_error(
                ErrorClass::Transient,
                "refresh_not_json",
                format!(
                    "the refresh endpoint of site `{}` did not answer JSON",
                    self.site
                ),
            ))
        })?;
        let token = answer
            .pointer(&renew.pointer)
            .and_then(Value::as_str)
            .map(|t| Zeroizing::new(t.to_owned()))
            .ok_or_else(|| {
                Failure::Error(source_error(
                    ErrorClass::Configuration,
                    "refresh_without_token",
                    format!("the refresh answer has no token at {}", renew.pointer),
                ))
            })?;
        let expires_in = renew
            .expires_in_pointer
            .as_deref()
            .and_then(|pointer| answer.pointer(pointer))
            .and_then(Value::as_u64);
        // The session keeps the new token where its page keeps it: browser workers see it too.
        self.store_token(&mut state, &origin, &token);
        Ok((token, expires_in, state))
    }

    /// The token as the session holds it now (`token_from`).
    async fn token_in(
        &self,
        lease: &SessionLease,
        state: &StorageState,
        now: Timestamp,
    ) -> Result<Option<Zeroizing<String>>, RefreshError> {
        let origin = self.origin()?;
        let serialized = origin.origin().ascii_serialization();
        let in_origin = |pick: fn(&OriginState) -> &Vec<NameValue>, key: &str| {
            state
                .origins
                .iter()
                .filter(|o| o.origin.trim_end_matches('/') == serialized)
                .flat_map(|o| pick(o).iter())
                .find(|entry| entry.name == key)
                .map(|entry| Zeroizing::new(entry.value.clone()))
        };
        Ok(match &self.token_from {
            TokenFrom::LocalStorage(key) => in_origin(|o| &o.local_storage, key),
            TokenFrom::SessionStorage(key) => in_origin(|o| &o.session_storage, key),
            TokenFrom::Cookie(name) => state
                .cookies
                .iter()
                .find(|cookie| &cookie.name == name)
                .map(|cookie| Zeroizing::new(cookie.value.clone())),
            TokenFrom::Response { url, pointer } => {
                let url = origin.join(url).map_err(|_| {
                    source_error(
                        ErrorClass::Configuration,
                        "invalid_token_url",
                        "token_from.response.url is not a valid URL".into(),
                    )
                })?;
                let client = self.client(lease)?;
                let mut request = with_identity(client.get(url.clone()), lease);
                if let Some(cookies) = cookie_header(state, &url, now) {
                    let cookies = Zeroizing::new(cookies);
                    request = request.header(COOKIE, cookies.as_str());
                }
                let response = request.send().await.map_err(|error| {
                    source_error(
                        ErrorClass::Transient,
                        "token_url_unreachable",
                        format!(
                            "the token URL of site `{}` is unreachable: {}",
                            self.site,
                            error.without_url()
                        ),
                    )
                })?;
                if !response.status().is_success() {
                    return Ok(None);
                }
                let body = Zeroizing::new(
                    response
                        .bytes()
                        .await
                        .map(|b| b.to_vec())
                        .unwrap_or_default(),
                );
                serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|answer| {
                        answer
                            .pointer(pointer)
                            .and_then(Value::as_str)
                            .map(|t| Zeroizing::new(t.to_owned()))
                    })
            }
        })
    }

    /// Writes a renewed token back where the page keeps it (localStorage / sessionStorage).
    fn store_token(&self, state: &mut StorageState, origin: &Url, token: &str) {
        let (key, session) = match &self.token_from {
            TokenFrom::LocalStorage(key) => (key, false),
            TokenFrom::SessionStorage(key) => (key, true),
            TokenFrom::Cookie(_) | TokenFrom::Response { .. } => return,
        };
        let serialized = origin.origin().ascii_serialization();
        let index = match state
            .origins
            .iter()
            .position(|o| o.origin.trim_end_matches('/') == serialized)
        {
            Some(index) => index,
            None => {
                state.origins.push(OriginState::new(serialized, Vec::new()));
                state.origins.len() - 1
            }
        };
        let entries = if session {
            &mut state.origins[index].session_storage
        } else {
            &mut state.origins[index].local_storage
        };
        match entries.iter_mut().find(|entry| &entry.name == key) {
            Some(entry) => entry.value = token.to_owned(),
            None => entries.push(NameValue::new(key.clone(), token)),
        }
    }

    /// The HTTP client of the session: its proxy, redirects off.
    fn client(&self, lease: &SessionLease) -> Result<reqwest::Client, RefreshError> {
        crate::health::http_client(lease.proxy.as_deref(), self.timeout).map_err(|error| {
            source_error(
                ErrorClass::Configuration,
                "invalid_proxy",
                error.to_string(),
            )
        })
    }

    /// After the site refused the refresh: log the session in again (the pool does, on the
    /// next lease) and take the token it holds then.
    async fn relogin(&self, now: Timestamp) -> Result<TokenResponse, RefreshError> {
        let lease = self.lease().await?;
        let token = match self.token_in(&lease, &lease.storage_state, now).await {
            Ok(Some(token)) => token,
            Ok(None) => {
                self.release(&lease, Outcome::Error, None).await;
                return Err(source_error(
                    ErrorClass::NeedsReauth,
                    "no_token_after_login",
                    format!(
                        "the session of `{}` at site `{}` holds no token after a fresh login",
                        self.account, self.site
                    ),
                ));
            }
            Err(error) => {
                self.release(&lease, Outcome::Error, None).await;
                return Err(error);
            }
        };
        self.release(&lease, Outcome::Ok, None).await;
        token_response(&token, None)
    }
}

#[async_trait]
impl TokenSource for SessionTokenSource {
    async fn fetch(
        &self,
        current: Option<&TokenSet>,
        now: Timestamp,
    ) -> Result<TokenResponse, RefreshError> {
        let lease = self.lease().await?;
        match self.renew_under(&lease, current.is_none(), now).await {
            Ok((token, expires_in, state)) => {
                self.release(&lease, Outcome::Ok, Some(state)).await;
                token_response(&token, expires_in)
            }
            Err(Failure::Rejected(status)) => {
                if status != 0 {
                    tracing::warn!(credential = %self.credential, site = %self.site, status, "the site refused the session's refresh: logging the session in again");
                }
                // Logged out: the pool logs it in again (or retires it) on the next lease.
                self.release(&lease, Outcome::LoggedOut, None).await;
                self.relogin(now).await
            }
            Err(Failure::Error(error)) => {
                self.release(&lease, Outcome::Error, None).await;
                Err(error)
            }
        }
    }
}

/// A token response for `token` (its lifetime from `expires_in`, else its JWT `exp`, else the
/// credential's `default_ttl`).
fn token_response(token: &str, expires_in: Option<u64>) -> Result<TokenResponse, RefreshError> {
    let mut body = serde_json::json!({ "access_token": token, "token_type": "Bearer" });
    if let Some(expires_in) = expires_in {
        body["expires_in"] = Value::from(expires_in);
    }
    let body = Zeroizing::new(body.to_string());
    TokenResponse::parse_tokens(body.as_bytes()).map_err(|source| RefreshError::InvalidResponse {
        status: 200,
        source,
    })
}

/// Whether a token found in the session may be handed out as is: a JWT more than
/// [`FRESH_ENOUGH`] from its `exp`, or an opaque token (nothing says it expired).
fn still_fresh(token: &str, now: Timestamp) -> bool {
    match jwt_exp(token) {
        Some(exp) => exp * 1000 > (now + FRESH_ENOUGH).as_millis(),
        None => true,
    }
}

/// The `exp` claim of a JWT, in seconds.
fn jwt_exp(token: &str) -> Option<i64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Value>(&bytes).ok()?["exp"].as_i64()
}

/// The session's `User-Agent` and `Accept-Language` (from the lease's identity).
fn with_identity(
    request: reqwest::RequestBuilder,
    lease: &SessionLease,
) -> reqwest::RequestBuilder {
    let Some(identity) = &lease.identity else {
        return request;
    };
    let mut request = request;
    if let Some(user_agent) = identity["userAgent"].as_str() {
        request = request.header(USER_AGENT, user_agent);
    }
    if let Some(language) = identity["extraHTTPHeaders"]["Accept-Language"].as_str() {
        request = request.header(ACCEPT_LANGUAGE, language);
    }
    request
}

/// A lease failure as a refresh failure: busy is transient, a failed login follows its class.
fn lease_error(site: &str, error: LeaseError) -> RefreshError {
    let (class, cause) = match &error {
        LeaseError::Exhausted { .. } | LeaseError::Contention(_) | LeaseError::Store(_) => {
            (ErrorClass::Transient, "session_busy")
        }
        LeaseError::LoginFailed { source, .. } if source.is_transient() => {
            (ErrorClass::Transient, "login_failed")
        }
        LeaseError::LoginFailed { .. } => (ErrorClass::NeedsReauth, "login_failed"),
        _ => (ErrorClass::Configuration, "session_unusable"),
    };
    let retry_after = match &error {
        LeaseError::Exhausted { retry_after, .. } => *retry_after,
        _ => None,
    };
    RefreshError::Source {
        class,
        cause: cause.to_owned(),
        message: format!("the session of site `{site}`: {error}"),
        retry_after,
    }
}
