//! The OAuth 2.0 client side of a credential: token requests (refresh_token and
//! client_credentials grants), client authentication and OIDC discovery.
//!
//! Responses are read with the lenient parser in [`crate::token`] and failures classified by
//! [`crate::error`]. The `oauth2` crate's typed responses reject what real providers send
//! (string `expires_in`, errors in HTTP 200, form-encoded bodies) and drop `Retry-After`, so the
//! request is built here with `reqwest`.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use url::Url;
use zeroize::Zeroizing;

use crate::clock::Timestamp;
use crate::error::{RefreshError, TransportKind, parse_retry_after};
use crate::secret::{ClientSecret, RefreshToken};
use crate::token::{ParsedTokenBody, TokenResponse};

/// Largest token-endpoint response body read (1 MiB).
const MAX_BODY: usize = 1 << 20;

/// How a credential obtains new tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    /// Redeem the stored refresh token (RFC 6749 §6).
    #[default]
    RefreshToken,
    /// Ask with the client's own credentials (RFC 6749 §4.4); no refresh token involved.
    ClientCredentials,
    /// A bearer token kept by a browser session (`[credentials.NAME] site`, `account`,
    /// `token_from`, `renew`): renewed by a [`crate::source::TokenSource`], not a token endpoint.
    Session,
}

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the form-encoded client id and secret.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the request body.
    ClientSecretPost,
    /// A public client: only `client_id` in the body.
    None,
}

/// Where the token endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A fixed token URL.
    TokenUrl(Url),
    /// An OIDC issuer; the token URL comes from its discovery document.
    Issuer(Url),
}

/// Everything needed to talk to a token endpoint for one credential.
#[derive(Clone)]
pub struct OAuthClientConfig {
    /// The token endpoint or issuer.
    pub endpoint: Endpoint,
    /// The client id.
    pub client_id: String,
    /// The client secret, for confidential clients.
    pub client_secret: Option<ClientSecret>,
    /// How to authenticate.
    pub auth: ClientAuth,
    /// Scopes to request (client_credentials) or narrow to (refresh; empty = unchanged).
    pub scopes: Vec<String>,
    /// `audience` parameter (Auth0 and others), if any.
    pub audience: Option<String>,
    /// Further parameters added to every token request (e.g. `resource`).
    pub extra_params: Vec<(String, String)>,
    /// Timeout of one token request.
    pub timeout: Duration,
    /// The forward proxy every request of this credential goes through (none: direct).
    pub proxy: Option<crate::egress::ProxyUrl>,
}

impl fmt::Debug for OAuthClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthClientConfig")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("auth", &self.auth)
            .field("scopes", &self.scopes)
            .field("audience", &self.audience)
            .field("proxy", &self.proxy)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What to ask the token endpoint for.
pub enum GrantRequest<'a> {
    /// Redeem this refresh token.
    RefreshToken(&'a RefreshToken),
    /// A client_credentials token.
    ClientCredentials,
}

/// Endpoints learned from an OIDC discovery document.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Discovery {
    /// The issuer identifier.
    pub issuer: String,
    /// The token endpoint.
    pub token_endpoint: Url,
    /// RFC 7009 revocation endpoint.
    #[serde(default)]
    pub revocation_endpoint: Option<Url>,
    /// RFC 8628 device authorization endpoint.
    #[serde(default)]
    pub device_authorization_endpoint: Option<Url>,
    /// The authorization endpoint.
    #[serde(default)]
    pub authorization_endpoint: Option<Url>,
}

/// A token-endpoint client for one credential. Safe for concurrent use; discovery runs once.
#[derive(Debug)]
pub struct OAuthClient {
    config: OAuthClientConfig,
    http: reqwest::Client,
    discovery: OnceCell<Discovery>,
}

impl OAuthClient {
    /// A client using `http` for its requests.
    pub fn new(config: OAuthClientConfig, http: reqwest::Client) -> Self {
        OAuthClient {
            config,
            http,
            discovery: OnceCell::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &OAuthClientConfig {
        &self.config
    }

    /// A key grouping credentials that share a token endpoint (for circuit breaking).
    pub fn endpoint_key(&self) -> String {
        let endpoint = match &self.config.endpoint {
            Endpoint::TokenUrl(url) | Endpoint::Issuer(url) => url.as_str(),
        };
        // One breaker per endpoint and egress: a dead proxy must not open the circuit of the
        // credentials that reach the endpoint another way.
        match &self.config.proxy {
            Some(proxy) => format!("{endpoint} via {}", proxy.redacted()),
            None => endpoint.to_owned(),
        }
    }

    /// The token URL, running OIDC discovery the first time when configured with an issuer.
    pub async fn token_url(&self) -> Result<Url, RefreshError> {
        match &self.config.endpoint {
            Endpoint::TokenUrl(url) => Ok(url.clone()),
            Endpoint::Issuer(issuer) => Ok(self.discover(issuer).await?.token_endpoint.clone()),
        }
    }

    /// The discovery document (issuer-configured credentials only).
    pub async fn discovery(&self) -> Result<Option<&Discovery>, RefreshError> {
        match &self.config.endpoint {
            Endpoint::TokenUrl(_) => Ok(None),
            Endpoint::Issuer(issuer) => self.discover(issuer).await.map(Some),
        }
    }

    async fn discover(&self, issuer: &Url) -> Result<&Discovery, RefreshError> {
        self.discovery
            .get_or_try_init(|| fetch_discovery(&self.http, issuer, self.config.timeout))
            .await
    }

    /// Sends one token request. `now` is used to interpret an HTTP-date `Retry-After`.
    pub async fn request(
        &self,
        grant: &GrantRequest<'_>,
        now: Timestamp,
    ) -> Result<TokenResponse, RefreshError> {
        let url = self.token_url().await?;
        // The form serializer is not `Send`: it lives only in this block, before any await.
        let (body, authorization) = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            match grant {
                GrantRequest::RefreshToken(token) => {
                    form.append_pair("grant_type", "refresh_token");
                    form.append_pair("refresh_token", token.expose_secret());
                }
                GrantRequest::ClientCredentials => {
                    form.append_pair("grant_type", "client_credentials");
                }
            }
            self.add_request_params(&mut form, true);
            self.finish_form(form)?
        };
        self.post_encoded(url, body, authorization, now)
            .await?
            .into_token_response()
    }

    /// Adds the configured `scope` (when `with_scope`), `audience` and extra parameters. With
    /// [`OAuthClient::finish_form`] and [`OAuthClient::post_encoded`], the building blocks of the
    /// other grants and endpoints (device code, authorization code, revocation in
    /// `authkeeper-login`), so they share this client's authentication and answer parsing.
    pub fn add_request_params(
        &self,
        form: &mut url::form_urlencoded::Serializer<'_, String>,
        with_scope: bool,
    ) {
        if with_scope && !self.config.scopes.is_empty() {
            form.append_pair("scope", &self.config.scopes.join(" "));
        }
        if let Some(audience) = &self.config.audience {
            form.append_pair("audience", audience);
        }
        for (key, value) in &self.config.extra_params {
            form.append_pair(key, value);
        }
    }

    /// Adds the client authentication to `form` (post, none) or as a Basic header, and returns
    /// the encoded body (zeroized on drop) with that header.
    pub fn finish_form(
        &self,
        mut form: url::form_urlencoded::Serializer<'_, String>,
    ) -> Result<(Zeroizing<String>, Option<reqwest::header::HeaderValue>), RefreshError> {
        let mut authorization = None;
        match self.config.auth {
            ClientAuth::ClientSecretBasic => {
                let id = form_encode(&self.config.client_id);
                let secret = Zeroizing::new(form_encode(
                    self.config
                        .client_secret
                        .as_ref()
                        .map(|s| s.expose_secret())
                        .unwrap_or(""),
                ));
                let credentials = Zeroizing::new(format!("{}:{}", id.as_str(), secret.as_str()));
                let encoded = Zeroizing::new(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes())
                ));
                let mut value =
                    reqwest::header::HeaderValue::try_from(encoded.as_str()).map_err(|_| {
                        RefreshError::Transport {
                            kind: TransportKind::Other,
                            message: "client credentials cannot be sent in a header".into(),
                        }
                    })?;
                value.set_sensitive(true);
                authorization = Some(value);
            }
            ClientAuth::ClientSecretPost => {
                form.append_pair("client_id", &self.config.client_id);
                if let Some(secret) = &self.config.client_secret {
                    form.append_pair("client_secret", secret.expose_secret());
                }
            }
            ClientAuth::None => {
                form.append_pair("client_id", &self.config.client_id);
            }
        }
        Ok((Zeroizing::new(form.finish()), authorization))
    }

    /// POSTs an encoded form to `url` and reads the answer (at most 1 MiB). `now` interprets
    /// an HTTP-date `Retry-After`.
    pub async fn post_encoded(
        &self,
        url: Url,
        body: Zeroizing<String>,
        authorization: Option<reqwest::header::HeaderValue>,
        now: Timestamp,
    ) -> Result<FormAnswer, RefreshError> {
        let mut request = self
            .http
            .post(url)
            .timeout(self.config.timeout)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        if let Some(value) = authorization {
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        let response = request
            .body(body.as_bytes().to_vec())
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now));
        let body = read_limited(response).await?;
        Ok(FormAnswer {
            status,
            retry_after,
            body,
        })
    }
}

/// The answer to a form POST at an OAuth endpoint.
pub struct FormAnswer {
    /// HTTP status.
    pub status: u16,
    /// The server's `Retry-After`, if any.
    pub retry_after: Option<Duration>,
    /// The body (zeroized on drop).
    pub body: Zeroizing<Vec<u8>>,
}

impl FormAnswer {
    /// Reads a token-endpoint answer: tokens, or the classified error.
    pub fn into_token_response(self) -> Result<TokenResponse, RefreshError> {
        let FormAnswer {
            status,
            retry_after,
            body,
        } = self;
        if !(200..300).contains(&status) {
            return Err(RefreshError::from_error_response(
                status,
                &body,
                retry_after,
            ));
        }
        match TokenResponse::parse(&body) {
            Ok(ParsedTokenBody::Tokens(tokens)) => Ok(tokens),
            Ok(ParsedTokenBody::Error(embedded)) => Err(RefreshError::OAuth {
                status,
                code: embedded.error,
                description: embedded.description,
                retry_after,
            }),
            Err(source) => Err(RefreshError::InvalidResponse { status, source }),
        }
    }
}

/// RFC 6749 §2.3.1: client id and secret are form-encoded before Basic encoding.
fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

pub(crate) fn transport_error(error: reqwest::Error) -> RefreshError {
    let kind = if error.is_timeout() {
        TransportKind::Timeout
    } else if error.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Other
    };
    // reqwest's messages name the URL and the cause, never the request body.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    RefreshError::Transport { kind, message }
}

pub(crate) async fn read_limited(
    mut response: reqwest::Response,
) -> Result<Zeroizing<Vec<u8>>, RefreshError> {
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(RefreshError::Transport {
                kind: TransportKind::Other,
                message: format!("token endpoint response larger than {MAX_BODY} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Fetches and checks `{issuer}/.well-known/openid-configuration`.
pub async fn fetch_discovery(
    http: &reqwest::Client,
    issuer: &Url,
    timeout: Duration,
) -> Result<Discovery, RefreshError> {
    let base = issuer.as_str().trim_end_matches('/');
    let url = format!("{base}/.well-known/openid-configuration");
    let response = http
        .get(&url)
        .timeout(timeout)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| RefreshError::Discovery(format!("{url}: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(RefreshError::Discovery(format!(
            "{url} answered HTTP {}",
            status.as_u16()
        )));
    }
    let bytes = read_limited(response).await?;
    let document: Discovery = serde_json::from_slice(&bytes)
        .map_err(|e| RefreshError::Discovery(format!("{url}: invalid document: {e}")))?;
    if document.issuer.trim_end_matches('/') != base {
        return Err(RefreshError::Discovery(format!(
            "issuer mismatch: configured {base}, document says {}",
            document.issuer
        )));
    }
    Ok(document)
}
