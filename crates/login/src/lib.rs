//! authkeeper-login: how a credential is (re)acquired when refreshing cannot help.
//!
//! - [`device`]: the device authorization grant (RFC 8628): show a code, poll the token endpoint.
//! - [`pkce`]: authorization code with PKCE (RFC 7636) and a loopback redirect (RFC 8252),
//!   checking `state` and the RFC 9207 `iss` parameter; [`loopback`] is the one-shot listener.
//! - [`command`]: an external program that prints a token response.
//! - [`revoke`]: RFC 7009 revocation, for `authkeeper logout`.
//! - [`reauth`]: [`reauth::LoginReauthenticator`], automatic re-authentication for the Keeper.
//! - [`process`]: children in their own process group, killed as a group (login commands here
//!   and in `authkeeper-session`, headless Chromium).
//!
//! This crate speaks the protocols only. Showing codes, QR codes, spinners and opening a
//! browser is the caller's job: it gets what to show through callbacks. Time goes through the
//! injected [`Clock`](authkeeper_core::clock::Clock), so tests drive the device-flow polling with a
//! [`ManualClock`](authkeeper_core::clock::ManualClock). Device codes, authorization codes, PKCE verifiers
//! and tokens never appear in an error message or in `Debug` output.

pub mod command;
pub mod device;
pub mod loopback;
pub mod pkce;
pub mod process;
pub mod reauth;
pub mod revoke;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use url::Url;
use zeroize::Zeroizing;

use authkeeper_core::clock::SharedClock;
use authkeeper_core::config::{ConfigError, CredentialConfig, LoginMethod};
use authkeeper_core::error::{ErrorClass, RefreshError};
use authkeeper_core::grant::OAuthClient;
use authkeeper_core::token::{TokenResponse, TokenResponseError};

pub use command::{LoginCommand, run_login_command};
pub use device::{DeviceAuthorization, DeviceEvent, PollOptions};
pub use loopback::{CallbackParams, LoopbackListener};
pub use pkce::{AuthorizationRequest, Pkce, PkceOptions};
pub use revoke::TokenTypeHint;

/// Largest response body read from a login-related endpoint (1 MiB).
const MAX_BODY: usize = 1 << 20;

/// Default time allowed for an interactive login (device or browser).
pub const DEFAULT_INTERACTIVE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default time allowed for an external login command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a login or a revocation failed. Messages never contain a code, verifier or token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The credential's configuration does not allow this login.
    #[error("{0}")]
    Config(String),
    /// An endpoint (token, device authorization, revocation, discovery) failed.
    #[error("{what}: {source}")]
    Endpoint {
        /// Which request failed.
        what: &'static str,
        /// The classified failure.
        #[source]
        source: RefreshError,
    },
    /// The user (or the provider) refused the authorization (`access_denied`).
    #[error("the authorization was denied{}", describe(.description))]
    AccessDenied {
        /// The provider's `error_description`, when sent.
        description: Option<String>,
    },
    /// The device code expired before the user approved it (`expired_token`, or its `expires_in`
    /// passed).
    #[error("the device code expired before the login was approved; run the login again")]
    DeviceCodeExpired,
    /// The login did not complete in time.
    #[error("the login did not complete within {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
    /// The authorization server redirected back with an error other than `access_denied`.
    #[error("the authorization server answered `{error}`{}", describe(.description))]
    Authorization {
        /// The `error` code.
        error: String,
        /// The `error_description`, when sent.
        description: Option<String>,
    },
    /// The redirect carried a `state` other than the one sent (a forged or stale redirect).
    #[error("the redirect's state does not match the request (possible CSRF); nothing was stored")]
    StateMismatch,
    /// The redirect's `iss` (RFC 9207) is not the expected issuer (a mix-up attack).
    #[error("the redirect comes from issuer {got:?}, expected {expected:?}; nothing was stored")]
    IssuerMismatch {
        /// The configured or discovered issuer.
        expected: String,
        /// The `iss` parameter received.
        got: String,
    },
    /// The redirect has neither a `code` nor an `error`.
    #[error("the redirect carries no authorization code")]
    MissingCode,
    /// A response of the authorization server could not be used.
    #[error("{what}: {message}")]
    InvalidResponse {
        /// Which response.
        what: &'static str,
        /// What is wrong (never a secret).
        message: String,
    },
    /// The loopback redirect listener failed.
    #[error("loopback redirect listener: {message}")]
    Loopback {
        /// What failed.
        message: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The external login command could not be started.
    #[error("cannot start the login command: {0}")]
    CommandSpawn(#[source] std::io::Error),
    /// The external login command ran past its timeout and was killed.
    #[error("the login command did not finish within {} and was killed", humantime::format_duration(*.0))]
    CommandTimedOut(Duration),
    /// The external login command failed.
    #[error("the login command failed ({status}); nothing was stored")]
    CommandFailed {
        /// How it ended (`exit status: 3`, `signal: 9`...).
        status: String,
    },
    /// The command's standard output is larger than the limit.
    #[error(
        "the login command printed more than {} bytes; nothing was stored",
        MAX_BODY
    )]
    CommandOutputTooLarge,
    /// The command's standard output is not a token response.
    #[error("the login command's output is not a token response: {0}; nothing was stored")]
    CommandOutput(#[source] TokenResponseError),
    /// The command's standard output is not JSON at all.
    #[error(
        "the login command's output is not a token response: {bytes} bytes that are not JSON; nothing was stored"
    )]
    CommandOutputNotJson {
        /// Size of the output.
        bytes: usize,
    },
}

impl LoginError {
    /// What to do about this failure: retry later, log in again (interactively), fix the
    /// configuration, or ask for another permission.
    pub fn class(&self) -> ErrorClass {
        match self {
            LoginError::Config(_)
            | LoginError::IssuerMismatch { .. }
            | LoginError::Loopback { .. }
            | LoginError::CommandSpawn(_) => ErrorClass::Configuration,
            LoginError::Endpoint { source, .. } => source.class(),
            LoginError::AccessDenied { .. } => ErrorClass::Permission,
            LoginError::DeviceCodeExpired
            | LoginError::TimedOut(_)
            | LoginError::StateMismatch
            | LoginError::MissingCode
            | LoginError::Authorization { .. } => ErrorClass::NeedsReauth,
            LoginError::InvalidResponse { .. }
            | LoginError::CommandTimedOut(_)
            | LoginError::CommandFailed { .. }
            | LoginError::CommandOutputTooLarge
            | LoginError::CommandOutput(_)
            | LoginError::CommandOutputNotJson { .. } => ErrorClass::Transient,
        }
    }
}

fn describe(description: &Option<String>) -> String {
    match description {
        Some(text) if !text.trim().is_empty() => format!(": {}", sanitize(text)),
        _ => String::new(),
    }
}

/// Keeps provider-sent text short and printable.
pub(crate) fn sanitize(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// A credential's login settings, validated from its `login` table and endpoint keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSettings {
    /// The configured method; `None` lets [`LoginClient::choose_method`] pick one.
    pub method: Option<LoginMethod>,
    /// The external command, for [`LoginMethod::Command`].
    pub command: Option<String>,
    /// How long a login may take.
    pub timeout: Option<Duration>,
    /// Loopback port for the redirect listener (0: any free port).
    pub redirect_port: u16,
    /// Whether to open the system browser.
    pub open_browser: bool,
    /// Extra authorization request parameters.
    pub authorization_params: BTreeMap<String, String>,
    /// Endpoints configured explicitly (else from discovery).
    pub endpoints: LoginEndpoints,
}

impl LoginSettings {
    /// Reads the login settings of credential `name`.
    pub fn from_config(
        name: &str,
        config: &CredentialConfig,
    ) -> Result<LoginSettings, ConfigError> {
        let login = config.login.clone().unwrap_or_default();
        if login.method == Some(LoginMethod::Command)
            && login.command.as_deref().is_none_or(|c| c.trim().is_empty())
        {
            return Err(ConfigError::Invalid {
                name: name.to_owned(),
                message: "login.method = \"command\" needs login.command".into(),
            });
        }
        if login.timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::Invalid {
                name: name.to_owned(),
                message: "login.timeout must be positive".into(),
            });
        }
        Ok(LoginSettings {
            method: login
                .method
                .or(login.command.as_ref().map(|_| LoginMethod::Command)),
            command: login.command,
            timeout: login.timeout,
            redirect_port: login.redirect_port,
            open_browser: login.open_browser.unwrap_or(true),
            authorization_params: login.authorization_params,
            endpoints: LoginEndpoints {
                device_authorization: config.device_authorization_url.clone(),
                authorization: config.authorization_url.clone(),
                revocation: config.revocation_url.clone(),
            },
        })
    }

    /// The timeout for `method`: the configured one or the method's default.
    pub fn timeout_for(&self, method: LoginMethod) -> Duration {
        self.timeout.unwrap_or(match method {
            LoginMethod::Command => DEFAULT_COMMAND_TIMEOUT,
            LoginMethod::Device | LoginMethod::Pkce => DEFAULT_INTERACTIVE_TIMEOUT,
        })
    }
}

/// Endpoints configured explicitly; each falls back to the issuer's discovery document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginEndpoints {
    /// RFC 8628 device authorization endpoint.
    pub device_authorization: Option<Url>,
    /// Authorization endpoint.
    pub authorization: Option<Url>,
    /// RFC 7009 revocation endpoint.
    pub revocation: Option<Url>,
}

/// Runs logins and revocations for one credential. Cheap to share by reference.
#[derive(Debug)]
pub struct LoginClient {
    oauth: OAuthClient,
    clock: SharedClock,
    endpoints: LoginEndpoints,
}

impl LoginClient {
    /// A login client for the credential behind `oauth` (whose HTTP client should not follow
    /// redirects), with explicit `endpoints`, telling time by `clock`.
    pub fn new(oauth: OAuthClient, clock: SharedClock, endpoints: LoginEndpoints) -> LoginClient {
        LoginClient {
            oauth,
            clock,
            endpoints,
        }
    }

    /// The underlying token-endpoint client.
    pub fn oauth(&self) -> &OAuthClient {
        &self.oauth
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Picks a method when none is configured: the device flow when the provider has a device
    /// authorization endpoint, else the authorization code flow when it has an authorization
    /// endpoint.
    pub async fn choose_method(&self) -> Result<LoginMethod, LoginError> {
        if self.device_authorization_endpoint().await?.is_some() {
            return Ok(LoginMethod::Device);
        }
        if self.authorization_endpoint().await?.is_some() {
            return Ok(LoginMethod::Pkce);
        }
        Err(LoginError::Config(
            "no login method: set login.method (or login.command), or configure \
             device_authorization_url / authorization_url (or an issuer whose discovery names them)"
                .into(),
        ))
    }

    /// The device authorization endpoint: configured, else discovered.
    pub async fn device_authorization_endpoint(&self) -> Result<Option<Url>, LoginError> {
        if let Some(url) = &self.endpoints.device_authorization {
            return Ok(Some(url.clone()));
        }
        Ok(self
            .discovery()
            .await?
            .and_then(|d| d.device_authorization_endpoint.clone()))
    }

    /// The authorization endpoint: configured, else discovered.
    pub async fn authorization_endpoint(&self) -> Result<Option<Url>, LoginError> {
        if let Some(url) = &self.endpoints.authorization {
            return Ok(Some(url.clone()));
        }
        Ok(self
            .discovery()
            .await?
            .and_then(|d| d.authorization_endpoint.clone()))
    }

    /// The revocation endpoint: configured, else discovered.
    pub async fn revocation_endpoint(&self) -> Result<Option<Url>, LoginError> {
        if let Some(url) = &self.endpoints.revocation {
            return Ok(Some(url.clone()));
        }
        Ok(self
            .discovery()
            .await?
            .and_then(|d| d.revocation_endpoint.clone()))
    }

    /// The issuer expected in an RFC 9207 `iss` parameter: the discovered one, if any.
    pub async fn expected_issuer(&self) -> Result<Option<String>, LoginError> {
        Ok(self.discovery().await?.map(|d| d.issuer.clone()))
    }

    async fn discovery(&self) -> Result<Option<&authkeeper_core::grant::Discovery>, LoginError> {
        self.oauth
            .discovery()
            .await
            .map_err(|source| LoginError::Endpoint {
                what: "OIDC discovery",
                source,
            })
    }

    /// POSTs `form` plus the client authentication to `url` and returns the status, the
    /// `Retry-After` delay and the body (at most 1 MiB).
    async fn post_form(
        &self,
        url: Url,
        form: url::form_urlencoded::Serializer<'_, String>,
    ) -> Result<(u16, Option<Duration>, Zeroizing<Vec<u8>>), RefreshError> {
        let (body, authorization) = self.oauth.finish_form(form)?;
        let answer = self
            .oauth
            .post_encoded(url, body, authorization, self.clock.now())
            .await?;
        Ok((answer.status, answer.retry_after, answer.body))
    }

    /// Sends a token request with `form` (grant parameters; scope and client authentication
    /// are added here) and reads the answer like a refresh.
    async fn token_request(
        &self,
        mut form: url::form_urlencoded::Serializer<'_, String>,
        with_scope: bool,
    ) -> Result<TokenResponse, RefreshError> {
        self.oauth.add_request_params(&mut form, with_scope);
        let url = self.oauth.token_url().await?;
        let (body, authorization) = self.oauth.finish_form(form)?;
        self.oauth
            .post_encoded(url, body, authorization, self.clock.now())
            .await?
            .into_token_response()
    }
}

/// `len` random bytes as unpadded base64url.
fn random_urlsafe(len: usize) -> String {
    use rand::RngCore as _;
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_slice())
}
