//! The protected API, `ANY /api/{*rest}`: checks `Authorization: Bearer` (RFC 6750) and
//! requires the `admin` scope under `/api/admin/...`.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::{ErrorStyle, Knobs};
use crate::state::{AccessError, IdpState, bump};

/// The scope `/api/admin/...` requires.
pub const ADMIN_SCOPE: &str = "admin";

/// `ANY /api/{*rest}`: 200 `{"ok":true,"sub",...,"body_len"}` for a valid token.
pub async fn resource(
    State(state): State<IdpState>,
    method: Method,
    Path(rest): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let knobs = state.knobs();
    if knobs.api_latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(knobs.api_latency_ms)).await;
    }
    let Some(token) = bearer_token(&headers) else {
        bump(&state.counters().api_unauthorized);
        return challenge(
            &knobs,
            StatusCode::UNAUTHORIZED,
            "Bearer realm=\"mock\"",
            None,
        );
    };
    let info = match state.check_access(token) {
        Ok(info) => info,
        Err(error) => {
            bump(&state.counters().api_unauthorized);
            let description = match error {
                AccessError::Expired => "the access token expired",
                AccessError::Unknown => "the access token is unknown or revoked",
            };
            let value = format!(
                "Bearer realm=\"mock\", error=\"invalid_token\", error_description=\"{description}\""
            );
            return challenge(
                &knobs,
                StatusCode::UNAUTHORIZED,
                &value,
                Some(("invalid_token", description)),
            );
        }
    };
    let wants_admin = rest == ADMIN_SCOPE || rest.starts_with("admin/");
    if wants_admin && !info.has_scope(ADMIN_SCOPE) {
        bump(&state.counters().api_forbidden);
        let description = "the admin scope is required";
        let value = format!(
            "Bearer realm=\"mock\", error=\"insufficient_scope\", scope=\"{ADMIN_SCOPE}\", \
             error_description=\"{description}\""
        );
        return challenge(
            &knobs,
            StatusCode::FORBIDDEN,
            &value,
            Some(("insufficient_scope", description)),
        );
    }
    bump(&state.counters().api_ok);
    Json(json!({
        "ok": true,
        "sub": &*info.sub,
        "client_id": &*info.client_id,
        "scope": &*info.scope,
        "grant_id": info.grant_id.as_deref(),
        "method": method.as_str(),
        "path": format!("/api/{rest}"),
        "body_len": body.len(),
    }))
    .into_response()
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A 401/403 with an RFC 6750 challenge, or without one in the nonstandard style.
fn challenge(
    knobs: &Knobs,
    status: StatusCode,
    www_authenticate: &str,
    error: Option<(&str, &str)>,
) -> Response {
    let body = match (knobs.error_style, error) {
        (ErrorStyle::Standard, Some((code, description))) => {
            json!({"ok": false, "error": code, "error_description": description})
        }
        (ErrorStyle::Standard, None) => json!({"ok": false}),
        (ErrorStyle::Nonstandard, _) => {
            json!({"message": status.canonical_reason().unwrap_or("Error")})
        }
    };
    let mut response = (status, Json(body)).into_response();
    if knobs.error_style == ErrorStyle::Standard
        && let Ok(value) = HeaderValue::from_str(www_authenticate)
    {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
