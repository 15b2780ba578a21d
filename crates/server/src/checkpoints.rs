//! `PUT/GET/DELETE /v1/checkpoints/{task}`: a task's progress as a JSON document, sealed in the
//! record store (kind `checkpoint`, see [`authkeeper_client::checkpoint`]), so a worker that hits
//! `needs_reauth` can save, exit, and a later worker resume.
//!
//! A client key may use the checkpoint of the task named like the client, of tasks whose name
//! starts with the client's name and `.`, `-` or `_`, and of the tasks listed in its
//! `checkpoints` (see [`crate::auth::ClientIdentity::may_use_checkpoint`]). The document is at most
//! `[server] max_body` bytes. Its contents are never logged.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderValue};
use http::{HeaderMap, StatusCode};

use authkeeper_client::checkpoint;
use authkeeper_core::StoreError;

use crate::api::read_json;
use crate::authorize::{Authorized, Task};
use crate::problem::{Problem, ProblemType};
use crate::state::AppState;

fn store_problem(task: &str, error: &StoreError) -> Problem {
    tracing::warn!(task, error = %error, "checkpoint store operation failed");
    Problem::new(ProblemType::StoreUnavailable, "the store did not answer")
        .with_retry_after(Duration::from_secs(1))
}

/// `PUT /v1/checkpoints/{task}`: saves the JSON body as the task's checkpoint.
pub(crate) async fn put(
    State(state): State<AppState>,
    Authorized { client, name: task }: Authorized<Task>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let document: serde_json::Value = read_json(&headers, body, state.config().max_body).await?;
    let bytes = zeroize::Zeroizing::new(serde_json::to_vec(&document).unwrap_or_default());
    drop(document);
    let now = state.keeper().clock().now();
    let version = checkpoint::save(state.records().as_ref(), &task, &bytes, now)
        .await
        .map_err(|error| store_problem(&task, &error))?;
    tracing::info!(client = client.name(), task = %task, version, bytes = bytes.len(), "checkpoint saved");
    Ok((
        [(CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(serde_json::json!({
            "task": task,
            "version": version,
            "updated_at": now.to_rfc3339(),
        })),
    )
        .into_response())
}

/// `GET /v1/checkpoints/{task}`: the saved JSON document (`ETag` is its version).
pub(crate) async fn get(
    State(state): State<AppState>,
    Authorized { name: task, .. }: Authorized<Task>,
) -> Result<Response, Problem> {
    let saved = checkpoint::load(state.records().as_ref(), &task)
        .await
        .map_err(|error| store_problem(&task, &error))?
        .ok_or_else(|| Problem::not_found("no checkpoint is saved for this task"))?;
    let etag = HeaderValue::from_str(&format!("\"{}\"", saved.version))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    let mut response = (StatusCode::OK, saved.data.to_vec()).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(ETAG, etag);
    if let Ok(at) = HeaderValue::from_str(&saved.updated_at.to_rfc3339()) {
        headers.insert("x-checkpoint-updated-at", at);
    }
    Ok(response)
}

/// `DELETE /v1/checkpoints/{task}`: forgets the checkpoint (the task is done).
pub(crate) async fn delete(
    State(state): State<AppState>,
    Authorized { name: task, .. }: Authorized<Task>,
) -> Result<Response, Problem> {
    match checkpoint::delete(state.records().as_ref(), &task).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(false) => Err(Problem::not_found("no checkpoint is saved for this task")),
        Err(error) => Err(store_problem(&task, &error)),
    }
}
