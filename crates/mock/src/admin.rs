//! Test-only administration: `GET /admin/stats`, `GET`/`PUT /admin/knobs` (partial JSON
//! update), `POST /admin/grants` (mint) and `POST /admin/grants/{id}/revoke`. No authentication.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Knobs;
use crate::error::MockError;
use crate::state::{IdpState, Stats};
use crate::token_endpoint::token_success;

/// `GET /admin/stats`.
pub async fn stats(State(state): State<IdpState>) -> Json<Stats> {
    Json(state.stats())
}

/// `GET /admin/knobs`.
pub async fn get_knobs(State(state): State<IdpState>) -> Json<Knobs> {
    Json(Knobs::clone(&state.knobs()))
}

/// `PUT /admin/knobs`: merges a JSON object into the current knobs (`null` clears an optional
/// knob) and returns the result; 400 on an unknown knob or a bad value.
pub async fn put_knobs(State(state): State<IdpState>, body: Bytes) -> Response {
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(patch)) => Value::Object(patch),
        Ok(_) => return bad_request("expected a JSON object"),
        Err(error) => return bad_request(&error.to_string()),
    };
    let mut merged = match serde_json::to_value(&*state.knobs()) {
        Ok(value) => value,
        Err(error) => return bad_request(&error.to_string()),
    };
    if let (Value::Object(merged), Value::Object(patch)) = (&mut merged, patch) {
        merged.extend(patch);
    }
    let knobs: Knobs = match serde_json::from_value(merged) {
        Ok(knobs) => knobs,
        Err(error) => return bad_request(&error.to_string()),
    };
    match state.set_knobs(knobs.clone()) {
        Ok(()) => Json(knobs).into_response(),
        Err(error) => bad_request(&error.to_string()),
    }
}

/// Body of `POST /admin/grants`; both fields optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MintRequest {
    /// The client to mint for (default: the first registered client).
    pub client_id: Option<String>,
    /// The grant's scope (default: the client's default scope).
    pub scope: Option<String>,
}

/// `POST /admin/grants`: a token response (plus `grant_id`) for a fresh grant.
pub async fn mint_grant(State(state): State<IdpState>, body: Bytes) -> Response {
    let request: MintRequest = if body.iter().all(u8::is_ascii_whitespace) {
        MintRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(error) => return bad_request(&error.to_string()),
        }
    };
    match state.mint_grant(request.client_id.as_deref(), request.scope.as_deref()) {
        Ok(issued) => token_success(issued.to_json(&state.knobs(), true)),
        Err(error) => bad_request(&error.to_string()),
    }
}

/// `POST /admin/grants/{id}/revoke`: 200 `{"revoked":true}`, or 404 for an unknown grant.
pub async fn revoke_grant(State(state): State<IdpState>, Path(id): Path<String>) -> Response {
    match state.revoke_grant(&id) {
        Ok(()) => Json(json!({"revoked": true, "grant_id": id})).into_response(),
        Err(error @ MockError::UnknownGrant(_)) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": error.to_string()})),
        )
            .into_response(),
        Err(error) => bad_request(&error.to_string()),
    }
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}
