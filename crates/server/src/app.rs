//! The router: routes, client-key authentication, request logging, timeouts and the
//! problem+json fallbacks.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http::HeaderValue;
use rand::RngCore as _;

use crate::api;
use crate::auth::ClientIdentity;
use crate::authorize::{Authorized, ProxyTo};
use crate::checkpoints;
use crate::problem::{Problem, ProblemType};
use crate::sessions;
use crate::state::AppState;

/// The header carrying the request id (taken from the request when sane, else generated).
pub const REQUEST_ID: &str = "x-request-id";

/// Every route template, for documentation checks.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/credentials"),
    ("POST", "/v1/credentials"),
    ("GET", "/v1/credentials/{name}"),
    ("PATCH", "/v1/credentials/{name}"),
    ("DELETE", "/v1/credentials/{name}"),
    ("GET", "/v1/credentials/{name}/token"),
    ("POST", "/v1/credentials/{name}/rejected"),
    ("GET", "/v1/checkpoints/{task}"),
    ("PUT", "/v1/checkpoints/{task}"),
    ("DELETE", "/v1/checkpoints/{task}"),
    ("POST", "/v1/sessions/{site}/lease"),
    ("GET", "/v1/sessions"),
    ("POST", "/v1/leases/{lease_id}/heartbeat"),
    ("POST", "/v1/leases/{lease_id}/release"),
    ("ANY", "/proxy/{name}"),
    ("ANY", "/proxy/{name}/{path}"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("POST", "/mcp"),
];

/// The client name of a request, reported to the logging layer through response extensions.
#[derive(Debug, Clone)]
struct ClientName(std::sync::Arc<str>);

/// The matched route template, reported to the logging layer.
#[derive(Debug, Clone)]
struct RouteTemplate(String);

/// Builds the broker's router over `state`: the API, the proxy, the probes, and `/mcp` (MCP's
/// streamable HTTP for agents, whose tools call the other routes in process with the key of
/// each MCP request).
pub fn router(state: AppState) -> Router {
    let routes = routes(&state);
    let inner = finish(routes.clone(), state.clone());
    let mcp = Router::new()
        .nest_service("/mcp", crate::mcp::service(inner, mcp_hosts(&state)))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    finish(routes.merge(mcp), state)
}

/// The `Host` values `/mcp` accepts (DNS-rebinding protection): loopback names, the listen
/// address, and the host of `[server] public_url`.
fn mcp_hosts(state: &AppState) -> Vec<String> {
    let mut hosts = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let crate::config::Listen::Tcp(addr) = &state.config().listen {
        hosts.push(addr.ip().to_string());
    }
    if let Some(host) = state
        .config()
        .public_url
        .as_ref()
        .and_then(|u| u.host_str())
    {
        hosts.push(host.to_owned());
    }
    hosts
}

/// Every route except `/mcp`, authenticated where needed, tagged with its template.
fn routes(state: &AppState) -> Router<AppState> {
    let api = Router::new()
        .route(
            "/v1/credentials",
            get(api::list).post(crate::connections::create),
        )
        .route(
            "/v1/credentials/{name}",
            get(api::status)
                .patch(crate::connections::update)
                .delete(crate::connections::delete),
        )
        .route("/v1/credentials/{name}/token", get(api::token))
        .route("/v1/credentials/{name}/rejected", post(api::rejected))
        .route(
            "/v1/checkpoints/{task}",
            get(checkpoints::get)
                .put(checkpoints::put)
                .delete(checkpoints::delete),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            request_timeout,
        ));
    // Session leases may run a browser login: bounded by the site's login timeout, not by the
    // API request timeout.
    let mut protected = api
        .route("/v1/sessions", get(sessions::list))
        .route("/v1/sessions/{site}/lease", post(sessions::lease))
        .route("/v1/leases/{lease_id}/heartbeat", post(sessions::heartbeat))
        .route("/v1/leases/{lease_id}/release", post(sessions::release))
        .route("/proxy/{name}", any(proxy))
        .route("/proxy/{name}/", any(proxy))
        .route("/proxy/{name}/{*path}", any(proxy));
    let mut public = Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/openapi.json", get(api::openapi));
    if state.config().metrics_auth {
        protected = protected.route("/metrics", get(api::metrics));
    } else {
        public = public.route("/metrics", get(api::metrics));
    }
    let protected =
        protected.route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    public
        .merge(protected)
        .route_layer(middleware::from_fn(tag_route))
}

/// The problem+json fallbacks, request logging and the state.
fn finish(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Requires a known client key; stores the client's identity in the request.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(client) = state.keys().authenticate_headers(request.headers()) else {
        let detail = if request.headers().contains_key(http::header::AUTHORIZATION) {
            "the client key is not valid"
        } else {
            "a client key is required: Authorization: Bearer <key>"
        };
        return Problem::unauthorized(detail).into_response();
    };
    let name = ClientName(std::sync::Arc::from(client.name()));
    request.extensions_mut().insert::<ClientIdentity>(client);
    let mut response = next.run(request).await;
    response.extensions_mut().insert(name);
    response
}

/// Bounds the time of one API request.
async fn request_timeout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // A `wait=` long poll may take that much longer.
    let limit = state.config().request_timeout + api::wait_param(request.uri().query());
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::new(
            ProblemType::Timeout,
            format!("the request took longer than {}s", limit.as_secs_f64()),
        )
        .with_retry_after(Duration::from_secs(1))
        .into_response(),
    }
}

/// Reports the matched route template to the logging layer.
async fn tag_route(request: Request, next: Next) -> Response {
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let mut response = next.run(request).await;
    if let Some(template) = template {
        response.extensions_mut().insert(RouteTemplate(template));
    }
    response
}

/// One log line per request: method, route template, status, latency, request id, client.
/// Never logs headers (the client key travels in `Authorization`) nor the raw path.
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(new_request_id);
    let mut response = next.run(request).await;
    let route = response
        .extensions()
        .get::<RouteTemplate>()
        .map_or("-", |r| r.0.as_str());
    let client = response
        .extensions()
        .get::<ClientName>()
        .map_or("-", |c| &*c.0);
    tracing::info!(
        target: "authkeeper::http",
        method = %method,
        route,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        request_id = %request_id,
        client,
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

fn new_request_id() -> String {
    let mut bytes = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// `ANY /proxy/{name}/{path...}`: forwards to the credential's upstream.
async fn proxy(
    State(state): State<AppState>,
    Authorized { name, .. }: Authorized<ProxyTo>,
    request: Request,
) -> Result<Response, Problem> {
    let tags = state.tags(&name);
    let provider = tags.as_deref().and_then(|tags| tags.provider.as_deref());
    if !state.proxy().has_route(&name, provider) {
        return Err(
            Problem::not_found("this credential has no upstream to proxy to")
                .with_credential(name.as_str()),
        );
    }
    let path_and_query = upstream_path(request.uri());
    Ok(state
        .proxy()
        .forward_as(&name, provider, &path_and_query, request)
        .await)
}

/// The raw (still percent-encoded) path after `/proxy/{name}`, with the query.
fn upstream_path(uri: &http::Uri) -> String {
    let raw = uri.path();
    let rest = raw
        .strip_prefix("/proxy/")
        .and_then(|after| after.find('/').map(|i| &after[i..]))
        .unwrap_or("/");
    match uri.query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_owned(),
    }
}

async fn not_found(request: Request) -> Response {
    Problem::not_found(format!(
        "no route for {} {}",
        request.method(),
        safe_path(request.uri())
    ))
    .into_response()
}

async fn method_not_allowed(request: Request) -> Response {
    Problem::new(
        ProblemType::MethodNotAllowed,
        format!("{} is not allowed here", request.method()),
    )
    .into_response()
}

/// The path for a problem detail, cut short and without the query (which could carry
/// anything).
fn safe_path(uri: &http::Uri) -> String {
    uri.path().chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_paths_keep_encoding_and_query() {
        let uri: http::Uri = "/proxy/crm/a%2Fb/c?x=1".parse().expect("uri");
        assert_eq!(upstream_path(&uri), "/a%2Fb/c?x=1");
        let uri: http::Uri = "/proxy/crm".parse().expect("uri");
        assert_eq!(upstream_path(&uri), "/");
        let uri: http::Uri = "/proxy/crm/".parse().expect("uri");
        assert_eq!(upstream_path(&uri), "/");
    }
}
