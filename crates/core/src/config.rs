//! Per-credential configuration, as written in the `[credentials.NAME]` tables of
//! `authkeeper.toml`, and its validation into [`CredentialSettings`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::grant::{ClientAuth, Endpoint, GrantKind, OAuthClientConfig};
use crate::policy::RefreshPolicy;
use crate::secret::ClientSecret;
use crate::secret_ref::{SecretRef, SecretRefError};
use crate::token::ExpiryDefaults;

/// Where a session credential's bearer token lives (`token_from = { ... }`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenFrom {
    /// A localStorage key of the site's origin.
    LocalStorage(String),
    /// A sessionStorage key of the site's origin.
    SessionStorage(String),
    /// A cookie of the session.
    Cookie(String),
    /// A JSON answer: `url` (relative to the site's origin) fetched with the session's cookies,
    /// and the JSON pointer of the token in it.
    Response {
        /// The URL.
        url: String,
        /// The JSON pointer, e.g. `/access_token`.
        pointer: String,
    },
}

/// How a session credential's token is renewed (`renew = { ... }`): the site's own refresh
/// endpoint, called as its page would (the session's cookies, `Origin`, `Sec-Fetch-*`, its
/// user agent, through its proxy), rotating cookies stored back into the session.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRenew {
    /// The refresh endpoint, relative to the site's origin.
    pub refresh_url: String,
    /// Its method (default `POST`).
    #[serde(default = "defaults::renew_method")]
    pub method: String,
    /// The JSON pointer of the new token in the answer (default `/access_token`).
    #[serde(default = "defaults::renew_pointer")]
    pub pointer: String,
    /// The JSON pointer of its lifetime in seconds, when the answer has one (else the JWT's
    /// `exp`, else `default_ttl`).
    #[serde(default)]
    pub expires_in_pointer: Option<String>,
}

/// One `[credentials.NAME]` table. Field names are the public config keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// The `[providers.NAME]` whose keys this credential inherits (it sets what it overrides).
    #[serde(default)]
    pub provider: Option<String>,
    /// Labels to find and authorize the credential by (`labels = { tenant = "42" }`): client keys
    /// may be scoped to `label:KEY=VALUE` or `label:KEY`, and listings filter by them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The token endpoint URL (or use `issuer`).
    #[serde(default)]
    pub token_url: Option<Url>,
    /// An OIDC issuer whose discovery document names the token endpoint.
    #[serde(default)]
    pub issuer: Option<Url>,
    /// The OAuth client id (not for `grant = "session"`).
    #[serde(default)]
    pub client_id: String,
    /// The client secret: `env:NAME`, `file:PATH` or (tests only) inline.
    #[serde(default)]
    pub client_secret: Option<SecretRef>,
    /// `refresh_token` (default) or `client_credentials`.
    #[serde(default)]
    pub grant: GrantKind,
    /// `client_secret_basic` (default), `client_secret_post` or `none`.
    #[serde(default)]
    pub auth_method: ClientAuth,
    /// Scopes to request.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `audience` parameter, if the provider wants one.
    #[serde(default)]
    pub audience: Option<String>,
    /// Extra token-request parameters (e.g. `resource`).
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
    /// The forward proxy all of this credential's traffic goes through (token requests, logins,
    /// the broker's injecting proxy): `env:NAME`, `file:PATH` or (tests only) inline
    /// `http://user:pass@host:port`, `https://`, `socks5://`, `socks5h://`.
    #[serde(default)]
    pub proxy: Option<SecretRef>,
    /// `grant = "session"`: the site (`[sites.NAME]`) whose browser session holds the token.
    #[serde(default)]
    pub site: Option<String>,
    /// `grant = "session"`: the site's account whose session it is.
    #[serde(default)]
    pub account: Option<String>,
    /// `grant = "session"`: where the bearer token lives in the session.
    #[serde(default)]
    pub token_from: Option<TokenFrom>,
    /// `grant = "session"`: how the token is renewed (without it: a fresh login of the session).
    #[serde(default)]
    pub renew: Option<SessionRenew>,
    /// Base URL of the API this credential is for (used by the broker's proxy).
    #[serde(default)]
    pub upstream: Option<Url>,
    /// How the broker's proxy presents the token to `upstream` (default: `Authorization: Bearer`).
    #[serde(default)]
    pub inject: InjectConfig,
    /// Refresh once this share of the lifetime has passed (default 0.8).
    #[serde(default = "defaults::refresh_at")]
    pub refresh_at: f64,
    /// Margin before expiry for clock differences (default 30s, scaled down for short tokens).
    #[serde(default = "defaults::clock_skew", with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Largest share of the lifetime by which refreshes are spread earlier (default 0.05).
    #[serde(default = "defaults::jitter")]
    pub jitter: f64,
    /// Lifetime assumed when a response has neither `expires_in` nor a JWT `exp` (default 1h).
    #[serde(default = "defaults::default_ttl", with = "humantime_serde")]
    pub default_ttl: Duration,
    /// Timeout of one token request (default 10s).
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Refresh in the background before expiry even when nobody asks (default true).
    #[serde(default = "defaults::heartbeat")]
    pub heartbeat: bool,
    /// RFC 8628 device authorization endpoint (default: from the issuer's discovery document).
    #[serde(default)]
    pub device_authorization_url: Option<Url>,
    /// Authorization endpoint for the authorization code flow (default: from discovery).
    #[serde(default)]
    pub authorization_url: Option<Url>,
    /// RFC 7009 revocation endpoint used by `authkeeper logout` (default: from discovery).
    #[serde(default)]
    pub revocation_url: Option<Url>,
    /// How `authkeeper login` (and, later, automatic re-authentication) acquires tokens.
    #[serde(default)]
    pub login: Option<LoginConfig>,
    /// Absolute lifetime of a login session, whatever refreshes happen (e.g. `24h`): the
    /// credential is re-logged in ahead of it and needs re-authentication once it is reached.
    #[serde(default, with = "humantime_serde")]
    pub max_session_age: Option<Duration>,
    /// When scheduled re-logins may run, `HH:MM-HH:MM` in UTC (may wrap midnight, e.g.
    /// `22:00-02:00`); default: any time. See [`crate::reauth::ReloginPolicy`].
    #[serde(default)]
    pub relogin_window: Option<String>,
    /// A scheduled re-login happens at least this long before the absolute expiry (default 30m).
    #[serde(default, with = "humantime_serde")]
    pub relogin_margin: Option<Duration>,
}

/// How a credential is logged in when refresh cannot help: the `login` table of a credential.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// `device`, `pkce` or `command`; default: `command` when `command` is set, else `device`
    /// when the provider has a device authorization endpoint, else `pkce`.
    #[serde(default)]
    pub method: Option<LoginMethod>,
    /// The external login program (run with `sh -c`), which prints a token response JSON on
    /// stdout. Required with `method = "command"`.
    #[serde(default)]
    pub command: Option<String>,
    /// How long a login may take (default 5m for device/pkce, 2m for a command).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Loopback port of the authorization code redirect listener (default 0: any free port).
    #[serde(default)]
    pub redirect_port: u16,
    /// Open the system browser for the authorization code flow (default true).
    #[serde(default)]
    pub open_browser: Option<bool>,
    /// Extra parameters added to the authorization request (e.g. `prompt = "consent"`).
    #[serde(default)]
    pub authorization_params: BTreeMap<String, String>,
}

/// A login method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginMethod {
    /// The device authorization grant (RFC 8628).
    Device,
    /// Authorization code with PKCE and a loopback redirect (RFC 7636, RFC 8252).
    Pkce,
    /// An external program printing a token response.
    Command,
}

impl LoginMethod {
    /// The config name of the method.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginMethod::Device => "device",
            LoginMethod::Pkce => "pkce",
            LoginMethod::Command => "command",
        }
    }
}

/// How a token is presented to an upstream API: a header (default `Authorization` with the
/// prefix `Bearer `) or a query parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectConfig {
    /// The header carrying the token (default `Authorization`).
    #[serde(default)]
    pub header: Option<String>,
    /// Text before the token in the header (default `Bearer ` for `Authorization`, else none).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Send the token as this query parameter instead of a header (e.g. `api_key`).
    #[serde(default)]
    pub query: Option<String>,
}

impl InjectConfig {
    /// The header name and value prefix to use, or `None` when the token goes in the query.
    pub fn header_and_prefix(&self) -> Option<(&str, &str)> {
        if self.query.is_some() && self.header.is_none() {
            return None;
        }
        let header = self.header.as_deref().unwrap_or("authorization");
        let prefix = match &self.prefix {
            Some(prefix) => prefix.as_str(),
            None if header.eq_ignore_ascii_case("authorization") => "Bearer ",
            None => "",
        };
        Some((header, prefix))
    }
}

mod defaults {
    use std::time::Duration;
    pub fn refresh_at() -> f64 {
        0.8
    }
    pub fn clock_skew() -> Duration {
        Duration::from_secs(30)
    }
    pub fn jitter() -> f64 {
        0.05
    }
    pub fn default_ttl() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn heartbeat() -> bool {
        true
    }
    pub fn renew_method() -> String {
        "POST".to_owned()
    }
    pub fn renew_pointer() -> String {
        "/access_token".to_owned()
    }
}

/// A credential's validated settings, secrets resolved.
#[derive(Debug, Clone)]
pub struct CredentialSettings {
    /// How to reach and authenticate at the token endpoint.
    pub client: OAuthClientConfig,
    /// Which grant renews the token.
    pub grant: GrantKind,
    /// When to refresh.
    pub policy: RefreshPolicy,
    /// Expiry assumptions.
    pub expiry: ExpiryDefaults,
    /// Whether the background heartbeat refreshes this credential.
    pub heartbeat: bool,
}

/// Why a credential's configuration is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Neither or both of `token_url` and `issuer`.
    #[error("credential `{0}`: set exactly one of `token_url` and `issuer`")]
    Endpoint(String),
    /// The client secret reference cannot be resolved.
    #[error("credential `{name}`: client_secret: {source}")]
    Secret {
        /// The credential.
        name: String,
        /// Why.
        #[source]
        source: SecretRefError,
    },
    /// A confidential auth method without a secret.
    #[error("credential `{0}`: auth_method needs a client_secret (or use auth_method = \"none\")")]
    MissingSecret(String),
    /// A value out of range.
    #[error("credential `{name}`: {message}")]
    Invalid {
        /// The credential.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// Checks that `url` (the value of `key`) is `http` or `https` with a host.
fn check_http_url(name: &str, key: &str, url: &Url) -> Result<(), ConfigError> {
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::Invalid {
            name: name.to_owned(),
            message: format!(
                "{key} must be an http:// or https:// URL with a host (got `{}://`)",
                url.scheme()
            ),
        });
    }
    Ok(())
}

impl CredentialConfig {
    /// Checks the table without resolving its secret: one endpoint, `http(s)` URLs, a secret
    /// where the auth method needs one, a valid refresh policy and positive durations.
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let invalid = |message: &str| ConfigError::Invalid {
            name: name.to_owned(),
            message: message.to_owned(),
        };
        if self.grant == GrantKind::Session {
            self.validate_session(name)?;
        } else {
            if self.token_url.is_some() == self.issuer.is_some() {
                return Err(ConfigError::Endpoint(name.to_owned()));
            }
            if self.client_id.trim().is_empty() {
                return Err(invalid("client_id is required"));
            }
            if self.client_secret.is_none() && self.auth_method != ClientAuth::None {
                return Err(ConfigError::MissingSecret(name.to_owned()));
            }
            if self.site.is_some()
                || self.account.is_some()
                || self.token_from.is_some()
                || self.renew.is_some()
            {
                return Err(invalid(
                    "site, account, token_from and renew are for grant = \"session\"",
                ));
            }
        }
        let urls = [
            ("token_url", &self.token_url),
            ("issuer", &self.issuer),
            ("upstream", &self.upstream),
            ("device_authorization_url", &self.device_authorization_url),
            ("authorization_url", &self.authorization_url),
            ("revocation_url", &self.revocation_url),
        ];
        for (key, url) in urls {
            if let Some(url) = url {
                check_http_url(name, key, url)?;
            }
        }
        self.policy().validate().map_err(|e| ConfigError::Invalid {
            name: name.to_owned(),
            message: e.to_string(),
        })?;
        if self.timeout.is_zero() || self.default_ttl.is_zero() {
            return Err(ConfigError::Invalid {
                name: name.to_owned(),
                message: "timeout and default_ttl must be positive".into(),
            });
        }
        Ok(())
    }

    /// The checks of a `grant = "session"` credential.
    fn validate_session(&self, name: &str) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            name: name.to_owned(),
            message,
        };
        if self.token_url.is_some() || self.issuer.is_some() {
            return Err(invalid(
                "a grant = \"session\" credential has no token_url or issuer: its token comes from the site's session".into(),
            ));
        }
        match (&self.site, &self.account) {
            (Some(site), Some(account)) => {
                crate::name::SiteName::new(site).map_err(|e| invalid(format!("site: {e}")))?;
                crate::name::AccountName::new(account)
                    .map_err(|e| invalid(format!("account: {e}")))?;
            }
            _ => {
                return Err(invalid(
                    "grant = \"session\" needs site and account (the session holding the token)"
                        .into(),
                ));
            }
        }
        match &self.token_from {
            None => {
                return Err(invalid(
                    "grant = \"session\" needs token_from = { local_storage | session_storage | cookie = \"NAME\" } or { response = { url, pointer } }".into(),
                ));
            }
            Some(TokenFrom::Response { pointer, .. }) if !pointer.starts_with('/') => {
                return Err(invalid(
                    "token_from.response.pointer must be a JSON pointer like /access_token".into(),
                ));
            }
            Some(_) => {}
        }
        if let Some(renew) = &self.renew
            && !renew.pointer.starts_with('/')
        {
            return Err(invalid(
                "renew.pointer must be a JSON pointer like /access_token".into(),
            ));
        }
        Ok(())
    }

    fn policy(&self) -> RefreshPolicy {
        RefreshPolicy {
            refresh_at: self.refresh_at,
            clock_skew: self.clock_skew,
            jitter: self.jitter,
        }
    }

    /// The egress proxy, resolved and checked.
    pub fn egress(&self, name: &str) -> Result<Option<crate::egress::ProxyUrl>, ConfigError> {
        let Some(reference) = &self.proxy else {
            return Ok(None);
        };
        let url = reference.resolve().map_err(|source| ConfigError::Invalid {
            name: name.to_owned(),
            message: format!("proxy: {source}"),
        })?;
        crate::egress::ProxyUrl::parse(secrecy::ExposeSecret::expose_secret(&url))
            .map(Some)
            .map_err(|error| ConfigError::Invalid {
                name: name.to_owned(),
                message: format!("proxy: {error}"),
            })
    }

    /// Validates the table ([`CredentialConfig::validate`]) and resolves its secret.
    pub fn resolve(&self, name: &str) -> Result<CredentialSettings, ConfigError> {
        self.validate(name)?;
        let endpoint = match (&self.token_url, &self.issuer, &self.site, &self.account) {
            (Some(url), None, _, _) => Endpoint::TokenUrl(url.clone()),
            (None, Some(issuer), _, _) => Endpoint::Issuer(issuer.clone()),
            // A session credential has no token endpoint: this names its session (the breaker
            // of its renewals is per session).
            (None, None, Some(site), Some(account)) => Endpoint::TokenUrl(
                Url::parse(&format!("session://{site}/{account}"))
                    .map_err(|_| ConfigError::Endpoint(name.to_owned()))?,
            ),
            _ => return Err(ConfigError::Endpoint(name.to_owned())),
        };
        let client_secret = match &self.client_secret {
            Some(reference) => Some(ClientSecret::from(reference.resolve().map_err(
                |source| ConfigError::Secret {
                    name: name.to_owned(),
                    source,
                },
            )?)),
            None => None,
        };
        let policy = self.policy();
        Ok(CredentialSettings {
            client: OAuthClientConfig {
                endpoint,
                client_id: self.client_id.clone(),
                client_secret,
                auth: self.auth_method,
                scopes: self.scopes.clone(),
                audience: self.audience.clone(),
                extra_params: self
                    .extra_params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                timeout: self.timeout,
                proxy: self.egress(name)?,
            },
            grant: self.grant,
            policy,
            expiry: ExpiryDefaults {
                default_lifetime: self.default_ttl,
            },
            heartbeat: self.heartbeat,
        })
    }
}
