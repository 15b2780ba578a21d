//! Browser-session routes: lease a logged-in session of a site, keep the lease alive, return it
//! with an outcome and the updated storage state, list sessions.
//!
//! - `POST /v1/sessions/{site}/lease` body `{"account"?, "lease_ttl"?}` (seconds)
//! - `POST /v1/leases/{lease_id}/heartbeat` body `{"lease_ttl"?}` (optional)
//! - `POST /v1/leases/{lease_id}/release` body `{"outcome", "storage_state"?}`
//! - `GET /v1/sessions` (`?site=NAME`): metadata only, never a cookie
//!
//! A client key may use the sites in its `sites` list (`"*"`: all); an unknown site gets the same
//! 403 as a forbidden one. Storage states are answered with `Cache-Control: no-store` and never
//! logged.

use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use http::header::{CACHE_CONTROL, HeaderValue};
use serde::Deserialize;

use authkeeper_session::pool::LeaseRequest;
use authkeeper_session::{LeaseError, Outcome, SessionPool, StorageState};

use crate::api::read_json;
use crate::auth::ClientIdentity;
use crate::problem::{Problem, ProblemType};
use crate::state::AppState;

/// Body of a lease request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseBody {
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    lease_ttl: Option<u64>,
}

/// Body of a heartbeat.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatBody {
    #[serde(default)]
    lease_ttl: Option<u64>,
}

/// Body of a release.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    outcome: Outcome,
    #[serde(default)]
    storage_state: Option<StorageState>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    site: Option<String>,
}

fn pool(state: &AppState) -> Result<&SessionPool, Problem> {
    state.sessions().map(|pool| pool.as_ref()).ok_or_else(|| {
        Problem::new(
            ProblemType::Forbidden,
            "this broker has no browser-session sites configured",
        )
    })
}

/// Checks the site name and the client's right to it (unknown and forbidden sites look alike).
fn authorize_site(state: &AppState, client: &ClientIdentity, site: &str) -> Result<(), Problem> {
    if authkeeper_core::store::validate_name(site).is_err() {
        return Err(Problem::invalid_request(
            "a site name is 1-128 ASCII letters, digits, '.', '_' or '-'",
        ));
    }
    let configured = state
        .sessions()
        .is_some_and(|pool| pool.site_names().any(|name| name == site));
    if !configured || !client.may_use_site(site) {
        return Err(Problem::new(
            ProblemType::Forbidden,
            "this client key may not use the requested site",
        ));
    }
    Ok(())
}

/// Checks the lease id's site against the client's rights.
fn authorize_lease(
    state: &AppState,
    client: &ClientIdentity,
    lease_id: &str,
) -> Result<(), Problem> {
    let site = lease_id.split('~').next().unwrap_or_default();
    if site.is_empty() || lease_id.len() > 400 {
        return Err(Problem::new(ProblemType::UnknownLease, "no such lease"));
    }
    authorize_site(state, client, site)
        .map_err(|_| Problem::new(ProblemType::UnknownLease, "no such lease"))
}

/// The pool and the lease id of a heartbeat or release the client may send (a lease of a site
/// it may not use looks like an unknown lease).
fn leased<'a>(
    state: &'a AppState,
    client: &ClientIdentity,
    lease_id: Result<Path<String>, PathRejection>,
) -> Result<(&'a SessionPool, String), Problem> {
    let unknown = || Problem::new(ProblemType::UnknownLease, "no such lease");
    let Path(lease_id) = lease_id.map_err(|_| unknown())?;
    authorize_lease(state, client, &lease_id)?;
    let pool = pool(state).map_err(|_| unknown())?;
    Ok((pool, lease_id))
}

/// The problem for a pool failure. Details carry names only.
fn problem(error: &LeaseError) -> Problem {
    match error {
        LeaseError::UnknownSite(_) => Problem::new(
            ProblemType::Forbidden,
            "this client key may not use the requested site",
        ),
        LeaseError::UnknownAccount { .. } | LeaseError::InvalidState(_) => {
            Problem::invalid_request(error.to_string())
        }
        LeaseError::Exhausted { retry_after, .. } => {
            let after = retry_after
                .unwrap_or(Duration::from_secs(1))
                .max(Duration::from_secs(1));
            Problem::new(ProblemType::NoSessionAvailable, error.to_string()).with_retry_after(after)
        }
        LeaseError::UnknownLease(_) | LeaseError::UnknownSession { .. } => {
            Problem::new(ProblemType::UnknownLease, error.to_string())
        }
        LeaseError::LeaseLost(_) => Problem::new(ProblemType::LeaseLost, error.to_string()),
        LeaseError::LoginFailed { .. } if error.is_transient() => {
            Problem::new(ProblemType::LoginFailed, error.to_string())
                .with_status(http::StatusCode::SERVICE_UNAVAILABLE)
                .with_retry_after(Duration::from_secs(5))
        }
        LeaseError::LoginFailed { .. } | LeaseError::NoLogin(_) => {
            Problem::new(ProblemType::LoginFailed, error.to_string())
        }
        LeaseError::Secret { .. } => Problem::new(ProblemType::Configuration, error.to_string()),
        LeaseError::Contention(_) => Problem::new(ProblemType::Unavailable, error.to_string())
            .with_retry_after(Duration::from_secs(1)),
        LeaseError::Store(_) => {
            Problem::new(ProblemType::StoreUnavailable, "the store did not answer")
                .with_retry_after(Duration::from_secs(1))
        }
        _ => Problem::internal("the session pool failed"),
    }
}

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("pragma", HeaderValue::from_static("no-cache"));
    response
}

/// A JSON body that may be empty (no content type needed then).
async fn optional_json<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, Problem> {
    let empty = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0")
        || (headers.get(http::header::CONTENT_TYPE).is_none()
            && headers.get(http::header::TRANSFER_ENCODING).is_none());
    if empty {
        return Ok(T::default());
    }
    read_json(headers, body, limit).await
}

/// `POST /v1/sessions/{site}/lease`.
pub(crate) async fn lease(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    site: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(Path(site)) = site else {
        return Problem::invalid_request("malformed site name").into_response();
    };
    if let Err(problem) = authorize_site(&state, &client, &site) {
        return problem.into_response();
    }
    let body: LeaseBody = match optional_json(&headers, body, state.config().max_body).await {
        Ok(body) => body,
        Err(problem) => return problem.into_response(),
    };
    let Ok(pool) = pool(&state) else {
        return Problem::new(ProblemType::Forbidden, "no sites configured").into_response();
    };
    let request = LeaseRequest {
        account: body.account,
        lease_ttl: body.lease_ttl.map(Duration::from_secs),
        holder: client.name().to_owned(),
    };
    match pool.lease(&site, &request).await {
        Ok(lease) => {
            tracing::info!(site = %site, session = %lease.session_id, client = %client.name(), "session leased");
            no_store(axum::Json(&lease).into_response())
        }
        Err(error) => {
            tracing::warn!(site = %site, client = %client.name(), error = %error, "session lease refused");
            problem(&error).into_response()
        }
    }
}

/// `POST /v1/leases/{lease_id}/heartbeat`.
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    lease_id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (pool, lease_id) = match leased(&state, &client, lease_id) {
        Ok(found) => found,
        Err(problem) => return problem.into_response(),
    };
    let body: HeartbeatBody = match optional_json(&headers, body, state.config().max_body).await {
        Ok(body) => body,
        Err(problem) => return problem.into_response(),
    };
    match pool
        .heartbeat(&lease_id, body.lease_ttl.map(Duration::from_secs))
        .await
    {
        Ok(expires_at) => {
            axum::Json(serde_json::json!({ "lease_expires_at": expires_at.to_rfc3339() }))
                .into_response()
        }
        Err(error) => problem(&error).into_response(),
    }
}

/// `POST /v1/leases/{lease_id}/release`.
pub(crate) async fn release(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    lease_id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (pool, lease_id) = match leased(&state, &client, lease_id) {
        Ok(found) => found,
        Err(problem) => return problem.into_response(),
    };
    let body: ReleaseBody = match read_json(&headers, body, state.config().max_body).await {
        Ok(body) => body,
        Err(problem) => return problem.into_response(),
    };
    match pool
        .release(&lease_id, body.outcome, body.storage_state)
        .await
    {
        Ok(summary) => {
            tracing::info!(session = %summary.session_id, client = %client.name(), outcome = body.outcome.as_str(), state = summary.state.as_str(), "session released");
            axum::Json(summary).into_response()
        }
        Err(error) => problem(&error).into_response(),
    }
}

/// `GET /v1/sessions`.
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return Problem::invalid_request("malformed query").into_response();
    };
    let Some(pool) = state.sessions() else {
        return axum::Json(serde_json::json!({ "sessions": [] })).into_response();
    };
    if let Some(site) = &query.site
        && let Err(problem) = authorize_site(&state, &client, site)
    {
        return problem.into_response();
    }
    match pool.list(query.site.as_deref()).await {
        Ok(sessions) => {
            let visible: Vec<_> = sessions
                .into_iter()
                .filter(|s| client.may_use_site(&s.site))
                .collect();
            axum::Json(serde_json::json!({ "sessions": visible })).into_response()
        }
        Err(error) => problem(&error).into_response(),
    }
}
