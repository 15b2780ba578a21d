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
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use http::header::{CACHE_CONTROL, HeaderValue};
use serde::Deserialize;

use authkeeper_session::pool::LeaseRequest;
use authkeeper_session::{LeaseError, Outcome, SessionPool, StorageState};

use crate::api::read_json;
use crate::auth::ClientIdentity;
use crate::authorize::{Authorized, Lease, Resource as _, Site};
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

/// The pool, for a lease the client may use (any other lease looks unknown).
fn lease_pool(state: &AppState) -> Result<&SessionPool, Problem> {
    pool(state).map_err(|_| Problem::new(ProblemType::UnknownLease, "no such lease"))
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
    Authorized { client, name: site }: Authorized<Site>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let body: LeaseBody = optional_json(&headers, body, state.config().max_body).await?;
    let pool = pool(&state)?;
    let request = LeaseRequest {
        account: body.account,
        lease_ttl: body.lease_ttl.map(Duration::from_secs),
        holder: client.name().to_owned(),
    };
    match pool.lease(&site, &request).await {
        Ok(lease) => {
            tracing::info!(site = %site, session = %lease.session_id, client = %client.name(), "session leased");
            Ok(no_store(axum::Json(&lease).into_response()))
        }
        Err(error) => {
            tracing::warn!(site = %site, client = %client.name(), error = %error, "session lease refused");
            Err(problem(&error))
        }
    }
}

/// `POST /v1/leases/{lease_id}/heartbeat`.
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    Authorized { name: lease_id, .. }: Authorized<Lease>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let pool = lease_pool(&state)?;
    let body: HeartbeatBody = optional_json(&headers, body, state.config().max_body).await?;
    let expires_at = pool
        .heartbeat(&lease_id, body.lease_ttl.map(Duration::from_secs))
        .await
        .map_err(|error| problem(&error))?;
    Ok(
        axum::Json(serde_json::json!({ "lease_expires_at": expires_at.to_rfc3339() }))
            .into_response(),
    )
}

/// `POST /v1/leases/{lease_id}/release`.
pub(crate) async fn release(
    State(state): State<AppState>,
    Authorized {
        client,
        name: lease_id,
    }: Authorized<Lease>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let pool = lease_pool(&state)?;
    let body: ReleaseBody = read_json(&headers, body, state.config().max_body).await?;
    let summary = pool
        .release(&lease_id, body.outcome, body.storage_state)
        .await
        .map_err(|error| problem(&error))?;
    tracing::info!(session = %summary.session_id, client = %client.name(), outcome = body.outcome.as_str(), state = summary.state.as_str(), "session released");
    Ok(axum::Json(summary).into_response())
}

/// `GET /v1/sessions`.
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Ok(Query(query)) = query else {
        return Err(Problem::invalid_request("malformed query"));
    };
    let Some(pool) = state.sessions() else {
        return Ok(axum::Json(serde_json::json!({ "sessions": [] })).into_response());
    };
    let site = query
        .site
        .as_deref()
        .map(|site| Site::authorize(&state, &client, site))
        .transpose()?;
    let sessions = pool
        .list(site.as_ref().map(|site| site.as_str()))
        .await
        .map_err(|error| problem(&error))?;
    let visible: Vec<_> = sessions
        .into_iter()
        .filter(|s| client.may_use_site(&s.site))
        .collect();
    Ok(axum::Json(serde_json::json!({ "sessions": visible })).into_response())
}
