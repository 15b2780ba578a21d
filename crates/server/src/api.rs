//! Handlers of the HTTP API v1 (`/v1/credentials...`), health, readiness, metrics and the
//! OpenAPI document.

use std::time::Duration;

use authkeeper_core::backoff::CircuitState;
use authkeeper_core::{
    CredentialState, CredentialStatus, CredentialSummary, ExposeSecret as _, Timestamp, Token,
};
use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::{Deserialize, Serialize};

use authkeeper_core::name::CredentialName;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::auth::ClientIdentity;
use crate::authorize::{Authorized, StatusOf, TokenOf};
use crate::config::Permission;
use crate::problem::{Problem, ProblemType};
use crate::state::AppState;

/// The OpenAPI 3.1 document of this API (`docs/openapi.json`).
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// How long readiness waits for the store.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The body of a token answer.
#[derive(Debug, Serialize)]
struct TokenBody<'a> {
    access_token: &'a str,
    token_type: &'a str,
    expires_at: String,
    generation: u64,
}

fn token_response(token: &Token) -> Response {
    let body = TokenBody {
        access_token: token.secret().expose_secret(),
        token_type: token.token_type(),
        expires_at: token.expires_at().to_rfc3339(),
        generation: token.generation(),
    };
    let mut response = axum::Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("pragma", HeaderValue::from_static("no-cache"));
    response
}

/// `?min_ttl=SECONDS&wait=SECONDS`.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenQuery {
    #[serde(default)]
    min_ttl: Option<u64>,
    #[serde(default)]
    wait: Option<u64>,
}

/// The longest `wait` accepted: a long poll for a re-authentication (five minutes).
pub const MAX_WAIT: u64 = 300;

/// The `wait` query parameter of a request, capped at [`MAX_WAIT`] (for the request timeout).
pub(crate) fn wait_param(query: Option<&str>) -> Duration {
    let wait = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| pair.strip_prefix("wait="))
        .find_map(|value| value.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_secs(wait.min(MAX_WAIT))
}

/// The longest `min_ttl` accepted (one year).
const MAX_MIN_TTL: u64 = 365 * 24 * 3600;

/// `GET /v1/credentials/{name}/token`.
pub(crate) async fn token(
    State(state): State<AppState>,
    Authorized { client, name }: Authorized<TokenOf>,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let (min_ttl, wait) = match query {
        Ok(Query(TokenQuery { min_ttl, wait }))
            if min_ttl.unwrap_or(0) <= MAX_MIN_TTL && wait.unwrap_or(0) <= MAX_WAIT =>
        {
            (
                Duration::from_secs(min_ttl.unwrap_or(0)),
                Duration::from_secs(wait.unwrap_or(0)),
            )
        }
        _ => {
            state
                .metrics()
                .token_request(&name, ProblemType::InvalidRequest.slug());
            return Err(Problem::invalid_request(format!(
                "min_ttl and wait must be whole numbers of seconds (wait at most {MAX_WAIT})"
            ))
            .with_credential(name.as_str()));
        }
    };
    match state.keeper().token_or_wait(&name, min_ttl, wait).await {
        Ok(token) => {
            state.metrics().token_request(&name, "ok");
            tracing::debug!(client = client.name(), credential = %name, generation = token.generation(), "token handed out");
            Ok(token_response(&token))
        }
        Err(error) => {
            let problem = Problem::from_keeper(&error, state.keeper().clock().now());
            state.metrics().token_request(&name, problem.kind().slug());
            tracing::warn!(client = client.name(), credential = %name, error = %error, "token request failed");
            Err(problem)
        }
    }
}

/// `{"generation": N}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectedBody {
    generation: u64,
}

/// `POST /v1/credentials/{name}/rejected`.
pub(crate) async fn rejected(
    State(state): State<AppState>,
    Authorized { client, name }: Authorized<TokenOf>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let request: RejectedBody = read_json(&headers, body, state.config().max_body)
        .await
        .map_err(|problem| problem.with_credential(name.as_str()))?;
    match state.keeper().rejected(&name, request.generation).await {
        Ok(token) => {
            tracing::info!(
                client = client.name(),
                credential = %name,
                rejected_generation = request.generation,
                generation = token.generation(),
                "token reported rejected"
            );
            Ok(token_response(&token))
        }
        Err(error) => {
            tracing::warn!(client = client.name(), credential = %name, error = %error, "rejected report failed");
            Err(Problem::from_keeper(&error, state.keeper().clock().now()))
        }
    }
}

/// Reads a JSON body of at most `limit` bytes, answering problems for a wrong content type,
/// an oversized body or invalid JSON.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, Problem> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| {
            let v = v.trim().to_ascii_lowercase();
            v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
        })
        .unwrap_or(false);
    if !is_json {
        return Err(Problem::new(
            ProblemType::UnsupportedMediaType,
            "the request body must be application/json",
        ));
    }
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(Problem::payload_too_large(limit));
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(Problem::payload_too_large(limit));
        }
        Err(_) => {
            return Err(Problem::invalid_request(
                "the request body could not be read",
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|error| {
        // serde_json's message names the field and position, never echoes the input.
        Problem::invalid_request(format!("invalid JSON body: {error}"))
    })
}

/// The public status of one credential.
#[derive(Debug, Serialize)]
pub(crate) struct StatusBody {
    name: String,
    state: &'static str,
    expires_at: Option<String>,
    generation: u64,
    last_refresh_at: Option<String>,
    failures: u32,
    reason: Option<String>,
    next_attempt_at: Option<String>,
    circuit: &'static str,
    /// What a human should run, when the credential needs re-authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    login_hint: Option<String>,
}

fn circuit_name(state: Option<CircuitState>) -> &'static str {
    match state {
        Some(CircuitState::Closed) | None => "closed",
        Some(CircuitState::Open { .. }) => "open",
        Some(CircuitState::HalfOpen) => "half_open",
    }
}

pub(crate) fn status_body(
    state: &AppState,
    name: &str,
    summary: Option<&CredentialSummary>,
) -> StatusBody {
    let memory = state.keeper().status(name).unwrap_or_default();
    let status: CredentialStatus = match summary {
        Some(summary) if memory == CredentialStatus::default() => summary.status.clone(),
        _ => memory,
    };
    let (state_name, reason) = match summary {
        None if status == CredentialStatus::default() => (
            CredentialState::NeedsReauth.as_str(),
            Some("no tokens stored yet: import or log in".to_owned()),
        ),
        _ => (status.state.as_str(), status.reason.clone()),
    };
    StatusBody {
        name: name.to_owned(),
        state: state_name,
        expires_at: summary.map(|s| s.expires_at.to_rfc3339()),
        generation: summary.map_or(0, |s| s.generation),
        last_refresh_at: status.last_refresh_at.map(Timestamp::to_rfc3339),
        failures: status.failures,
        reason,
        next_attempt_at: status.next_attempt_at.map(Timestamp::to_rfc3339),
        circuit: circuit_name(state.keeper().circuit_state(name)),
        login_hint: (state_name == CredentialState::NeedsReauth.as_str())
            .then(|| authkeeper_core::reauth::login_hint(name)),
    }
}

/// `GET /v1/credentials?provider=&label=&state=&cursor=&limit=`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// Credentials per page unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 100;
/// The largest page.
const MAX_PAGE: usize = 1000;
/// How many names a listing looks at per step while filtering.
const SCAN_WINDOW: usize = 1000;

/// What a page cursor encodes: the last name of the previous page (opaque to clients).
fn encode_cursor(name: &str) -> String {
    URL_SAFE_NO_PAD.encode(name)
}

fn decode_cursor(cursor: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let name = String::from_utf8(bytes).ok()?;
    authkeeper_core::name::is_valid(&name).then_some(name)
}

/// The summary of `name` from memory when this process holds it, else from the store.
pub(crate) async fn summary_of(
    state: &AppState,
    name: &CredentialName,
) -> Result<Option<CredentialSummary>, Problem> {
    if let Some(snapshot) = state.keeper().snapshot(name)
        && let (true, Some(expires_at)) = (snapshot.generation > 0, snapshot.expires_at)
    {
        return Ok(Some(CredentialSummary {
            name: name.clone(),
            generation: snapshot.generation,
            expires_at,
            status: snapshot.status,
        }));
    }
    let record = state.keeper().store().load(name).await.map_err(|error| {
        tracing::warn!(credential = %name, error = %error, "store load failed");
        Problem::new(ProblemType::StoreUnavailable, "the store did not answer")
            .with_retry_after(Duration::from_secs(1))
    })?;
    Ok(record.map(|r| CredentialSummary {
        name: r.name,
        generation: r.generation,
        expires_at: r.tokens.expires_at,
        status: r.status,
    }))
}

/// `GET /v1/credentials`: one page of the credentials this client may use, in name order,
/// filtered by provider, label (`KEY=VALUE` or `KEY`) and state; `next_cursor` fetches the
/// next page (absent on the last).
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(|_| {
        Problem::invalid_request("malformed provider, label, state, cursor or limit")
    })?;
    let limit = match query.limit {
        None => DEFAULT_PAGE,
        Some(limit) if (1..=MAX_PAGE).contains(&limit) => limit,
        Some(_) => {
            return Err(Problem::invalid_request(format!(
                "limit must be 1-{MAX_PAGE}"
            )));
        }
    };
    if let Some(wanted) = &query.state
        && CredentialState::parse(wanted).is_none()
    {
        return Err(Problem::invalid_request(
            "state must be valid, refreshing, backing_off, needs_reauth or disabled",
        ));
    }
    let after = match &query.cursor {
        None => None,
        Some(cursor) => Some(
            decode_cursor(cursor).ok_or_else(|| Problem::invalid_request("malformed cursor"))?,
        ),
    };
    let mut credentials = Vec::new();
    let mut last: Option<CredentialName> = None;
    let mut scan_after = after;
    'scan: while credentials.len() < limit {
        let window = state
            .keeper()
            .credential_names_after(scan_after.as_deref(), SCAN_WINDOW);
        let Some(end) = window.last() else {
            break;
        };
        scan_after = Some(end.to_string());
        for name in &window {
            if credentials.len() == limit {
                break 'scan;
            }
            let tags = state.tags(name);
            let tags = tags.as_deref();
            if !client.may_use(name, tags) {
                continue;
            }
            if let Some(provider) = &query.provider
                && tags.and_then(|t| t.provider.as_ref()) != Some(provider)
            {
                continue;
            }
            if let Some(label) = &query.label
                && !tags.is_some_and(|t| t.has_label(label))
            {
                continue;
            }
            let summary = summary_of(&state, name).await?;
            let body = status_body(&state, name, summary.as_ref());
            last = Some(name.clone());
            if query
                .state
                .as_deref()
                .is_some_and(|wanted| wanted != body.state)
            {
                continue;
            }
            credentials.push(body);
        }
    }
    let next_cursor = (credentials.len() == limit)
        .then(|| last.map(|name| encode_cursor(name.as_str())))
        .flatten();
    Ok(axum::Json(serde_json::json!({
        "credentials": credentials,
        "next_cursor": next_cursor,
    }))
    .into_response())
}

/// `GET /v1/credentials/{name}`.
pub(crate) async fn status(
    State(state): State<AppState>,
    Authorized { name, .. }: Authorized<StatusOf>,
) -> Result<Response, Problem> {
    let record = state.keeper().store().load(&name).await.map_err(|error| {
        tracing::warn!(credential = %name, error = %error, "store load failed");
        Problem::new(ProblemType::StoreUnavailable, "the store did not answer")
            .with_credential(name.as_str())
            .with_retry_after(Duration::from_secs(1))
    })?;
    let summary = record.map(|r| CredentialSummary {
        name: r.name,
        generation: r.generation,
        expires_at: r.tokens.expires_at,
        status: r.status,
    });
    Ok(axum::Json(status_body(&state, &name, summary.as_ref())).into_response())
}

/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: warm-up finished, the readiness probe (e.g. Redis health) passes and the store
/// answers. The answer says ready or not, nothing more: no credential name, error text or host
/// (those go to the log).
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let not_ready = |kind, detail: &str| {
        Problem::new(kind, detail)
            .with_retry_after(Duration::from_secs(1))
            .into_response()
    };
    // Warm-up is not waited for: a token request for a credential not loaded yet loads it.
    if let Some(probe) = state.readiness_probe() {
        let reason = match tokio::time::timeout(STORE_PROBE_TIMEOUT, probe.check()).await {
            Ok(Ok(())) => None,
            Ok(Err(reason)) => Some(reason),
            Err(_) => Some("the readiness probe did not answer in time".to_owned()),
        };
        if let Some(reason) = reason {
            tracing::warn!(reason = %reason, "readiness: not ready");
            return not_ready(ProblemType::StoreUnavailable, "the store is unavailable");
        }
    }
    match tokio::time::timeout(
        STORE_PROBE_TIMEOUT,
        state.keeper().store().list_page(None, 1),
    )
    .await
    {
        Ok(Ok(_)) => axum::Json(serde_json::json!({ "status": "ready" })).into_response(),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "readiness: store failed");
            not_ready(ProblemType::StoreUnavailable, "the store is unavailable")
        }
        Err(_) => {
            tracing::warn!("readiness: the store did not answer in time");
            not_ready(ProblemType::StoreUnavailable, "the store is unavailable")
        }
    }
}

/// `GET /metrics`: counters and gauges kept in memory (a scrape never reads the store). With
/// `[server] metrics_auth` (the default) the route is behind the client-key middleware and needs
/// the `metrics` permission.
pub(crate) async fn metrics(
    State(state): State<AppState>,
    client: Option<Extension<ClientIdentity>>,
) -> Result<Response, Problem> {
    if state.config().metrics_auth
        && !client.is_some_and(|Extension(client)| client.can(Permission::Metrics))
    {
        return Err(Problem::new(
            ProblemType::Forbidden,
            "this client key lacks the `metrics` permission",
        ));
    }
    let keeper = state.keeper();
    state
        .metrics()
        .update_credentials(keeper, keeper.clock().now());
    if let Some(pool) = state.sessions() {
        state
            .metrics()
            .update_sessions(pool.counters(), &pool.census());
    }
    match state.metrics().encode() {
        Ok(text) => Ok((
            [(
                CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            )],
            text,
        )
            .into_response()),
        Err(_) => Err(Problem::internal("metrics could not be encoded")),
    }
}

/// `GET /openapi.json`.
pub(crate) async fn openapi() -> Response {
    (
        StatusCode::OK,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        OPENAPI,
    )
        .into_response()
}
