//! The credential-injecting reverse proxy behind `ANY /proxy/{name}/{path...}`.
//!
//! A request is forwarded to the credential's upstream with the credential injected (a header,
//! `Authorization: Bearer` by default, or a query parameter) and the caller's broker key
//! removed. Bodies stream both ways; a request body up to [`ProxyConfig::replay_limit`] is kept
//! so that, when the upstream answers 401 because the token is invalid or expired (RFC 6750), the
//! Keeper can compare-and-refresh and the request is sent once more with the new token. 403s and
//! `insufficient_scope` are passed through untouched.
//!
//! Redirects are never followed, so the credential never reaches another origin; a `Location`
//! on the upstream's base is rewritten to the caller's `/proxy/{name}/...` form.
//!
//! - [`target`]: URL joining, path normalization, query injection, `Location` rewriting.
//! - [`headers`]: hop-by-hop and forwarding headers.
//! - [`body`]: the replay buffer and streaming request bodies.

mod body;
#[doc(hidden)]
pub mod fuzzing;
mod headers;
mod target;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use authkeeper_core::config::InjectConfig;
use authkeeper_core::www_authenticate::classify_api_response;
use authkeeper_core::{ExposeSecret, Keeper, KeeperError, Timestamp, Token};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use http::header::{CONTENT_LENGTH, HeaderMap, HeaderValue, LOCATION, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::problem::Problem;

use self::body::{OutgoingBody, ReplayBuffer, RequestBody};
use self::headers::Caller;
use self::target::{Injection, Route, Target};

/// The validity a token must still have when it is sent (the Keeper keeps its own clock-skew
/// margin on top of this).
const MIN_TTL: Duration = Duration::ZERO;

/// How long an idle upstream connection stays in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Proxy limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Largest request body kept for a replay after a refresh (default 1 MiB). Longer bodies
    /// stream upstream and a 401 on them is passed through.
    pub replay_limit: usize,
    /// How long the upstream may take to answer with its response headers, per attempt
    /// (default 30 s); sending the request body counts. The response body then streams without
    /// a deadline.
    pub timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            replay_limit: 1024 * 1024,
            timeout: Duration::from_secs(30),
        }
    }
}

/// One credential's upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The base URL requests are forwarded to: `/proxy/{name}/x` goes to `{base}/x`.
    pub base: url::Url,
    /// How the token is presented.
    pub inject: InjectConfig,
    /// The credential's egress proxy: every request to `base` goes through it.
    pub egress: Option<authkeeper_core::egress::ProxyUrl>,
    /// Headers set on every upstream request, replacing the caller's (a session credential's
    /// `User-Agent` and `Accept-Language`: one identity towards the site).
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
}

/// Why the proxy could not be built. Never contains a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// A credential's upstream is unusable.
    #[error("the upstream of credential `{name}` is invalid: {reason}")]
    InvalidUpstream {
        /// The credential.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A credential's egress proxy could not be used (the URL is not shown: it may hold a
    /// password).
    #[error("cannot use the egress proxy {0}")]
    Egress(String),
    /// The TLS client configuration could not be built.
    #[error("cannot build the proxy's TLS client: {0}")]
    Tls(#[source] tokio_rustls::rustls::Error),
}

/// Observes proxied responses (metrics).
pub trait ProxyObserver: Send + Sync {
    /// Called once per proxied request to a configured upstream with the final status (the
    /// upstream's, or the problem's when the proxy answered itself).
    fn proxy_response(&self, credential: &str, status: u16);
}

type UpstreamClient = Client<HttpsConnector<HttpConnector>, OutgoingBody>;

struct Inner {
    keeper: Keeper,
    routes: HashMap<String, Route>,
    config: ProxyConfig,
    observer: Option<Arc<dyn ProxyObserver>>,
    client: UpstreamClient,
    /// The clients of credentials with an egress proxy (through it, never direct).
    egress: HashMap<String, reqwest::Client>,
}

/// The reverse proxy. Cheap to clone; safe for concurrent use. Its `Debug` shows no secret.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("upstreams", &self.inner.routes.keys().collect::<Vec<_>>())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Builds the proxy over `keeper` for `upstreams` (credential name → upstream). HTTP and
    /// HTTPS upstreams are supported (HTTP/1.1; TLS via rustls with the webpki roots).
    pub fn new(
        keeper: Keeper,
        upstreams: HashMap<String, Upstream>,
        config: ProxyConfig,
        observer: Option<Arc<dyn ProxyObserver>>,
    ) -> Result<Proxy, ProxyError> {
        let routes = upstreams
            .iter()
            .map(|(name, upstream)| Ok((name.clone(), Route::new(name, upstream)?)))
            .collect::<Result<HashMap<_, _>, ProxyError>>()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(tokio_rustls::rustls::crypto::ring::default_provider())
            .map_err(ProxyError::Tls)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        let mut egress = HashMap::new();
        for (name, upstream) in &upstreams {
            if let Some(proxy) = &upstream.egress {
                egress.insert(name.clone(), egress_client(proxy, &config)?);
            }
        }
        Ok(Proxy {
            inner: Arc::new(Inner {
                keeper,
                routes,
                config,
                observer,
                client,
                egress,
            }),
        })
    }

    /// Adds the upstreams of providers (`[providers.NAME] upstream`), used for credentials
    /// without one of their own that belong to such a provider — connections created through
    /// the API ([`Proxy::forward_as`]). Call before the proxy is shared.
    pub fn add_provider_upstreams(
        &mut self,
        providers: HashMap<String, Upstream>,
    ) -> Result<(), ProxyError> {
        let Some(inner) = Arc::get_mut(&mut self.inner) else {
            tracing::warn!("provider upstreams added to a proxy already in use: ignored");
            return Ok(());
        };
        for (provider, upstream) in providers {
            let key = provider_key(&provider);
            if let Some(proxy) = &upstream.egress {
                inner
                    .egress
                    .insert(key.clone(), egress_client(proxy, &inner.config)?);
            }
            inner
                .routes
                .insert(key.clone(), Route::new(&key, &upstream)?);
        }
        Ok(())
    }

    /// Whether a request for `credential` of `provider` has an upstream to go to.
    pub fn has_route(&self, credential: &str, provider: Option<&str>) -> bool {
        self.inner.routes.contains_key(credential)
            || provider.is_some_and(|p| self.inner.routes.contains_key(&provider_key(p)))
    }

    /// [`Proxy::forward`] for `credential` of `provider`: its own upstream, else its
    /// provider's.
    pub async fn forward_as(
        &self,
        credential: &str,
        provider: Option<&str>,
        path_and_query: &str,
        request: Request<Body>,
    ) -> Response<Body> {
        if self.inner.routes.contains_key(credential) {
            return self.forward(credential, path_and_query, request).await;
        }
        let Some(key) = provider.map(provider_key) else {
            return self.forward(credential, path_and_query, request).await;
        };
        let Some(route) = self.inner.routes.get(&key) else {
            return self.forward(credential, path_and_query, request).await;
        };
        let response = match self
            .exchange(credential, &key, route, path_and_query, request)
            .await
        {
            Ok(response) => response,
            Err(problem) => problem.into_response(),
        };
        if let Some(observer) = &self.inner.observer {
            observer.proxy_response(credential, response.status().as_u16());
        }
        response
    }

    /// The proxy's limits.
    pub fn config(&self) -> &ProxyConfig {
        &self.inner.config
    }

    /// Forwards one request to `credential`'s upstream and returns its response (streaming), or
    /// a problem+json answer when the proxy cannot.
    ///
    /// `path_and_query` is what follows `/proxy/{name}` in the request target, still
    /// percent-encoded: it starts with `/` or is empty, and includes the query string. The
    /// caller's address is read from an [`axum::extract::ConnectInfo<SocketAddr>`] extension
    /// and its scheme from an [`http::uri::Scheme`] extension (default `http`), when present.
    pub async fn forward(
        &self,
        credential: &str,
        path_and_query: &str,
        request: Request<Body>,
    ) -> Response<Body> {
        let Some(route) = self.inner.routes.get(credential) else {
            let shown: String = credential.chars().take(128).collect();
            return Problem::not_found(format!("no upstream is configured for `{shown}`"))
                .into_response();
        };
        let response = match self
            .exchange(credential, credential, route, path_and_query, request)
            .await
        {
            Ok(response) => response,
            Err(problem) => problem.into_response(),
        };
        if let Some(observer) = &self.inner.observer {
            observer.proxy_response(credential, response.status().as_u16());
        }
        response
    }

    /// The whole exchange: target, headers, body, token, attempts.
    async fn exchange(
        &self,
        name: &str,
        route_key: &str,
        route: &Route,
        path_and_query: &str,
        request: Request<Body>,
    ) -> Result<Response<Body>, Problem> {
        let target = route
            .target(path_and_query)
            .map_err(|error| Problem::invalid_request(error.to_string()).with_credential(name))?;
        let (parts, body) = request.into_parts();
        let caller = Caller {
            ip: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
            proto: parts
                .extensions
                .get::<http::uri::Scheme>()
                .or(parts.uri.scheme())
                .map_or("http", |scheme| scheme.as_str()),
        };
        let method = parts.method;
        let mut headers = parts.headers;
        let declared_len = headers::content_length(&headers);
        let injected = match &route.injection {
            Injection::Header { name, .. } => Some(name),
            Injection::Query(_) => None,
        };
        headers::prepare_request(&mut headers, &route.host, injected, caller);
        for (name, value) in &route.headers {
            headers.insert(name.clone(), value.clone());
        }
        let body = body::read_for_replay(body, self.inner.config.replay_limit, declared_len)
            .await
            .map_err(|_| {
                Problem::invalid_request("the request body could not be read").with_credential(name)
            })?;
        let (replay, mut streaming) = match body {
            RequestBody::Replayable(buffer) => {
                set_length(&mut headers, &method, &buffer);
                (Some(buffer), None)
            }
            RequestBody::Streaming(body) => (None, Some(body)),
        };
        let mut token = self
            .inner
            .keeper
            .token(name, MIN_TTL)
            .await
            .map_err(|error| keeper_problem(&error))?;
        let mut retried = false;
        loop {
            let (body, headers) = match (&replay, streaming.take()) {
                (Some(buffer), _) => (buffer.body(), headers.clone()),
                (None, Some(body)) => (body, std::mem::take(&mut headers)),
                (None, None) => return Err(Problem::internal("the request body was consumed")),
            };
            let request = build_request(route, &method, &target, headers, &token, body)
                .map_err(|problem| problem.with_credential(name))?;
            let response = self.send(name, route_key, request).await?;
            if response.status() == StatusCode::UNAUTHORIZED && !retried && token_refused(&response)
            {
                let generation = token.generation();
                if replay.is_some() {
                    token = self
                        .inner
                        .keeper
                        .rejected(name, generation)
                        .await
                        .map_err(|error| keeper_problem(&error))?;
                    tracing::debug!(credential = %name, generation, "upstream refused the token; retrying once with a newer one");
                    body::drain(response.into_body());
                    retried = true;
                    continue;
                }
                // The body is gone: pass the 401 through, but have the token replaced for the
                // next request.
                let keeper = self.inner.keeper.clone();
                let name = name.to_owned();
                tokio::spawn(async move {
                    let _ = keeper.rejected(&name, generation).await;
                });
            }
            return Ok(respond(route, &target, response));
        }
    }

    /// One attempt, bounded by the timeout for the response headers: through the credential's
    /// egress proxy when it has one, else directly.
    async fn send(
        &self,
        name: &str,
        route_key: &str,
        request: Request<OutgoingBody>,
    ) -> Result<Response<Body>, Problem> {
        let timeout = self.inner.config.timeout;
        if let Some(client) = self.inner.egress.get(route_key) {
            return self.send_through(name, client, request).await;
        }
        match tokio::time::timeout(timeout, self.inner.client.request(request)).await {
            Ok(Ok(response)) => Ok(response.map(Body::new)),
            Ok(Err(error)) => {
                let what = if error.is_connect() {
                    "cannot connect to the upstream"
                } else {
                    "the upstream exchange failed"
                };
                tracing::debug!(credential = %name, error = %error, "{what}");
                Err(
                    Problem::upstream_unavailable(format!("{what} of `{name}`: {error}"))
                        .with_credential(name),
                )
            }
            Err(_elapsed) => Err(Problem::upstream_timeout(format!(
                "the upstream of `{name}` did not answer within {timeout:?}"
            ))
            .with_credential(name)),
        }
    }
}

impl Proxy {
    /// One attempt through an egress proxy. A proxy that is down fails the request
    /// (`upstream-unavailable`): never a direct connection instead.
    async fn send_through(
        &self,
        name: &str,
        client: &reqwest::Client,
        request: Request<OutgoingBody>,
    ) -> Result<Response<Body>, Problem> {
        let timeout = self.inner.config.timeout;
        let (parts, body) = request.into_parts();
        let stream = http_body_util::BodyDataStream::new(body);
        let outgoing = client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(reqwest::Body::wrap_stream(stream));
        match tokio::time::timeout(timeout, outgoing.send()).await {
            Ok(Ok(response)) => {
                let response: http::Response<reqwest::Body> = response.into();
                Ok(response.map(Body::new))
            }
            Ok(Err(error)) => {
                let what = if error.is_connect() {
                    "cannot connect through the egress proxy to the upstream"
                } else {
                    "the upstream exchange through the egress proxy failed"
                };
                tracing::debug!(credential = %name, error = %error.without_url(), "{what}");
                Err(Problem::upstream_unavailable(format!("{what} of `{name}`"))
                    .with_credential(name))
            }
            Err(_elapsed) => Err(Problem::upstream_timeout(format!(
                "the upstream of `{name}` did not answer within {timeout:?}"
            ))
            .with_credential(name)),
        }
    }
}

/// The route key of a provider's upstream (credential names contain no `:`).
fn provider_key(provider: &str) -> String {
    format!("provider:{provider}")
}

/// An HTTP client that goes out through `proxy` only (never directly).
fn egress_client(
    proxy: &authkeeper_core::egress::ProxyUrl,
    config: &ProxyConfig,
) -> Result<reqwest::Client, ProxyError> {
    let through = reqwest::Proxy::all(proxy.expose_url())
        .map_err(|_| ProxyError::Egress(proxy.redacted().to_owned()))?;
    reqwest::Client::builder()
        .no_proxy()
        .proxy(through)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build()
        .map_err(|_| ProxyError::Egress(proxy.redacted().to_owned()))
}

/// Whether a 401 says the token is invalid or expired (so a refresh can help).
fn token_refused<B>(response: &Response<B>) -> bool {
    let challenges = response
        .headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok());
    classify_api_response(StatusCode::UNAUTHORIZED.as_u16(), challenges).should_refresh()
}

/// Sets the exact `Content-Length` of a buffered body (none for an empty body of a method
/// that carries none).
fn set_length(headers: &mut HeaderMap, method: &Method, buffer: &ReplayBuffer) {
    headers.remove(CONTENT_LENGTH);
    let bodiless = matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    if buffer.len() > 0 || !bodiless {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(buffer.len()));
    }
}

/// The upstream request of one attempt, with the credential injected.
fn build_request(
    route: &Route,
    method: &Method,
    target: &Target,
    headers: HeaderMap,
    token: &Token,
    body: OutgoingBody,
) -> Result<Request<OutgoingBody>, Problem> {
    let secret = token.secret().expose_secret();
    let uri = route
        .uri(target, secret)
        .map_err(|error| Problem::invalid_request(error.to_string()))?;
    let mut request = Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    if let Injection::Header { name, prefix } = &route.injection {
        let mut value = Vec::with_capacity(prefix.len() + secret.len());
        value.extend_from_slice(prefix.as_bytes());
        value.extend_from_slice(secret.as_bytes());
        let mut value =
            HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).map_err(|_| {
                Problem::upstream_unavailable(
                    "the credential's token cannot be sent in a header (invalid characters)",
                )
            })?;
        value.set_sensitive(true);
        request.headers_mut().insert(name.clone(), value);
    }
    Ok(request)
}

/// The caller's response: the upstream's status, headers (hop-by-hop removed, `Location`
/// rewritten) and streaming body.
fn respond(route: &Route, target: &Target, response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(location) = parts.headers.get(LOCATION)
        && let Some(rewritten) = route.rewrite_location(target, location)
    {
        match HeaderValue::from_str(&rewritten) {
            Ok(value) => {
                parts.headers.insert(LOCATION, value);
            }
            Err(_) => {
                parts.headers.remove(LOCATION);
            }
        }
    }
    Response::from_parts(parts, body)
}

/// The problem for a Keeper failure, as the rest of the broker maps it.
fn keeper_problem(error: &KeeperError) -> Problem {
    Problem::from_keeper(error, Timestamp::from_system_time(SystemTime::now()))
}
