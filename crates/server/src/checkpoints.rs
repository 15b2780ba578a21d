//! `PUT/GET/DELETE /v1/checkpoints/{task}`: a task's progress as a JSON document, sealed in the
//! credential store (kind `checkpoint`), so a worker that hits `needs_reauth` can save, exit, and
//! a later worker resume.
//!
//! A client key may use the checkpoint of the task named like the client, of tasks whose name
//! starts with the client's name and `.`, `-` or `_`, and of the tasks listed in its
//! `checkpoints` (see [`ClientIdentity::may_use_checkpoint`]). The document is at most
//! `[server] max_body` bytes. Its contents are never logged.

use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderValue};
use http::{HeaderMap, StatusCode};

use authkeeper_core::StoreError;

use crate::api::read_json;
use crate::auth::ClientIdentity;
use crate::problem::{Problem, ProblemType};
use crate::state::AppState;

/// Checks the task name and the client's right to it.
fn authorize(
    client: &ClientIdentity,
    task: Result<Path<String>, PathRejection>,
) -> Result<String, Problem> {
    let Path(task) = task.map_err(|_| Problem::invalid_request("malformed task name"))?;
    if authkeeper_core::store::validate_name(&task).is_err() {
        return Err(Problem::invalid_request(
            "a task name is 1-128 ASCII letters, digits, '.', '_' or '-'",
        ));
    }
    if !client.may_use_checkpoint(&task) {
        return Err(Problem::new(
            ProblemType::Forbidden,
            "this client key may not use the checkpoint of this task",
        ));
    }
    Ok(task)
}

fn store_problem(task: &str, error: &StoreError) -> Response {
    tracing::warn!(task, error = %error, "checkpoint store operation failed");
    Problem::new(ProblemType::StoreUnavailable, "the store did not answer")
        .with_retry_after(Duration::from_secs(1))
        .into_response()
}

/// `PUT /v1/checkpoints/{task}`: saves the JSON body as the task's checkpoint.
pub(crate) async fn put(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    task: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let task = match authorize(&client, task) {
        Ok(task) => task,
        Err(problem) => return problem.into_response(),
    };
    let document: serde_json::Value = match read_json(&headers, body, state.config().max_body).await
    {
        Ok(document) => document,
        Err(problem) => return problem.into_response(),
    };
    let bytes = zeroize::Zeroizing::new(serde_json::to_vec(&document).unwrap_or_default());
    drop(document);
    let now = state.keeper().clock().now();
    match state
        .keeper()
        .store()
        .put_checkpoint(&task, &bytes, now)
        .await
    {
        Ok(version) => {
            tracing::info!(client = client.name(), task = %task, version, bytes = bytes.len(), "checkpoint saved");
            (
                [(CACHE_CONTROL, HeaderValue::from_static("no-store"))],
                axum::Json(serde_json::json!({
                    "task": task,
                    "version": version,
                    "updated_at": now.to_rfc3339(),
                })),
            )
                .into_response()
        }
        Err(error) => store_problem(&task, &error),
    }
}

/// `GET /v1/checkpoints/{task}`: the saved JSON document (`ETag` is its version).
pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    task: Result<Path<String>, PathRejection>,
) -> Response {
    let task = match authorize(&client, task) {
        Ok(task) => task,
        Err(problem) => return problem.into_response(),
    };
    match state.keeper().store().get_checkpoint(&task).await {
        Ok(Some(saved)) => {
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
            response
        }
        Ok(None) => Problem::not_found("no checkpoint is saved for this task").into_response(),
        Err(error) => store_problem(&task, &error),
    }
}

/// `DELETE /v1/checkpoints/{task}`: forgets the checkpoint (the task is done).
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIdentity>,
    task: Result<Path<String>, PathRejection>,
) -> Response {
    let task = match authorize(&client, task) {
        Ok(task) => task,
        Err(problem) => return problem.into_response(),
    };
    match state.keeper().store().delete_checkpoint(&task).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => Problem::not_found("no checkpoint is saved for this task").into_response(),
        Err(error) => store_problem(&task, &error),
    }
}
