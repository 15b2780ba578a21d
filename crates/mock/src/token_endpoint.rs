//! `POST /token` (RFC 6749: `refresh_token` and `client_credentials` grants; the device-code and
//! authorization-code grants are in [`crate::login`]) and `POST /revoke` (RFC 7009), with client
//! authentication, injected faults and latency.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::Rng as _;
use serde_json::json;

use crate::config::{ErrorStyle, Knobs, MockClient};
use crate::state::{GrantError, IdpState, bump};

/// `POST /token`.
pub async fn token(State(state): State<IdpState>, headers: HeaderMap, body: Bytes) -> Response {
    let answer_delay = state.knobs().token_answer_delay_ms;
    let response = answer(state, headers, body).await;
    if answer_delay > 0 {
        tokio::time::sleep(Duration::from_millis(answer_delay)).await;
    }
    response
}

/// Decides the `/token` answer (rotation included).
async fn answer(state: IdpState, headers: HeaderMap, body: Bytes) -> Response {
    bump(&state.counters().token_requests);
    let knobs = state.knobs();
    if knobs.token_latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(knobs.token_latency_ms)).await;
    }
    let form = match parse_form(&body) {
        Ok(form) => form,
        Err(description) => {
            return oauth_error(
                &knobs,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                description,
            );
        }
    };
    let grant_type = match form.get("grant_type").map(String::as_str) {
        None => {
            return oauth_error(
                &knobs,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "missing grant_type",
            );
        }
        Some(kind @ ("refresh_token" | "client_credentials")) => kind,
        Some(kind @ (crate::login::DEVICE_CODE_GRANT | "authorization_code")) => {
            if let Some(fault) = injected_fault(&knobs) {
                bump(&state.counters().faults_injected);
                return fault;
            }
            let client = match authenticate(&state, &headers, &form) {
                Ok(client) => client,
                Err(failure) => return client_auth_error(&state, &knobs, failure),
            };
            return if kind == "authorization_code" {
                crate::login::authorization_code_grant(&state, &knobs, client, &form)
            } else {
                crate::login::device_code_grant(&state, &knobs, client, &form)
            };
        }
        Some(_) => {
            return oauth_error(
                &knobs,
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only refresh_token, client_credentials, authorization_code and device_code are supported",
            );
        }
    };
    if grant_type == "refresh_token" {
        bump(&state.counters().refresh_calls);
    } else {
        bump(&state.counters().client_credentials_calls);
    }
    if let Some(fault) = injected_fault(&knobs) {
        bump(&state.counters().faults_injected);
        return fault;
    }
    let client = match authenticate(&state, &headers, &form) {
        Ok(client) => client,
        Err(failure) => return client_auth_error(&state, &knobs, failure),
    };
    let scope = form.get("scope").map(String::as_str);
    let issued = if grant_type == "refresh_token" {
        let Some(presented) = form.get("refresh_token") else {
            return oauth_error(
                &knobs,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "missing refresh_token",
            );
        };
        match state.refresh(&client.client_id, presented, scope) {
            Ok(issued) => issued,
            Err(GrantError::InvalidGrant(description)) => {
                bump(&state.counters().invalid_grant);
                return oauth_error(
                    &knobs,
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    description,
                );
            }
            Err(GrantError::InvalidScope) => {
                return oauth_error(
                    &knobs,
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "requested scope exceeds the grant",
                );
            }
        }
    } else {
        state.client_credentials(client, scope)
    };
    token_success(issued.to_json(&knobs, false))
}

/// `POST /revoke` (RFC 7009): always 200 once the client is authenticated.
pub async fn revoke(State(state): State<IdpState>, headers: HeaderMap, body: Bytes) -> Response {
    bump(&state.counters().revocations);
    let knobs = state.knobs();
    let form = match parse_form(&body) {
        Ok(form) => form,
        Err(description) => {
            return oauth_error(
                &knobs,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                description,
            );
        }
    };
    let client = match authenticate(&state, &headers, &form) {
        Ok(client) => client,
        Err(failure) => return client_auth_error(&state, &knobs, failure),
    };
    let Some(token) = form.get("token") else {
        return oauth_error(
            &knobs,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "missing token",
        );
    };
    state.revoke_token(&client.client_id, token);
    StatusCode::OK.into_response()
}

/// A successful token response with the RFC 6749 §5.1 cache headers.
pub(crate) fn token_success(body: serde_json::Value) -> Response {
    let mut response = Json(body).into_response();
    no_store(response.headers_mut());
    response
}

fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// Parses an `application/x-www-form-urlencoded` body; a repeated parameter is an error.
pub(crate) fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, &'static str> {
    let mut form = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(body) {
        if form.insert(key.into_owned(), value.into_owned()).is_some() {
            return Err("a parameter appears more than once");
        }
    }
    Ok(form)
}

/// Why client authentication failed.
pub(crate) enum AuthFailure {
    /// 401 `invalid_client`.
    Invalid(&'static str),
    /// 400 `invalid_request`.
    Malformed(&'static str),
}

/// Authenticates by `client_secret_basic` or `client_secret_post` (not both).
pub(crate) fn authenticate<'s>(
    state: &'s IdpState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<&'s MockClient, AuthFailure> {
    let basic = match headers.get(header::AUTHORIZATION) {
        Some(value) => {
            Some(parse_basic(value).ok_or(AuthFailure::Invalid("malformed Basic credentials"))?)
        }
        None => None,
    };
    let (id, secret) = match basic {
        Some((id, secret)) => {
            if form.contains_key("client_secret") {
                return Err(AuthFailure::Malformed(
                    "more than one client authentication method",
                ));
            }
            if form.get("client_id").is_some_and(|body_id| *body_id != id) {
                return Err(AuthFailure::Malformed(
                    "client_id does not match the Authorization header",
                ));
            }
            (id, secret)
        }
        None => match (form.get("client_id"), form.get("client_secret")) {
            (Some(id), Some(secret)) => (id.clone(), secret.clone()),
            _ => return Err(AuthFailure::Invalid("client authentication required")),
        },
    };
    state
        .authenticate(&id, &secret)
        .ok_or(AuthFailure::Invalid("unknown client or wrong secret"))
}

/// Decodes `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
fn parse_basic(value: &HeaderValue) -> Option<(String, String)> {
    let text = value.to_str().ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// Undoes `application/x-www-form-urlencoded` encoding of one component.
fn form_decode(component: &str) -> Option<String> {
    let mut out = Vec::with_capacity(component.len());
    let mut bytes = component.bytes();
    while let Some(byte) = bytes.next() {
        match byte {
            b'+' => out.push(b' '),
            b'%' => {
                let high = char::from(bytes.next()?).to_digit(16)?;
                let low = char::from(bytes.next()?).to_digit(16)?;
                out.push(u8::try_from(high * 16 + low).ok()?);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).ok()
}

pub(crate) fn client_auth_error(state: &IdpState, knobs: &Knobs, failure: AuthFailure) -> Response {
    match failure {
        AuthFailure::Invalid(description) => {
            bump(&state.counters().invalid_client);
            oauth_error(
                knobs,
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                description,
            )
        }
        AuthFailure::Malformed(description) => oauth_error(
            knobs,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            description,
        ),
    }
}

/// An RFC 6749 §5.2 error, or an HTML page in the nonstandard style.
pub(crate) fn oauth_error(
    knobs: &Knobs,
    status: StatusCode,
    code: &str,
    description: &str,
) -> Response {
    let mut response = match knobs.error_style {
        ErrorStyle::Standard => {
            let mut response = (
                status,
                Json(json!({"error": code, "error_description": description})),
            )
                .into_response();
            if status == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"mock\""),
                );
            }
            response
        }
        ErrorStyle::Nonstandard => html_page(status),
    };
    no_store(response.headers_mut());
    response
}

fn html_page(status: StatusCode) -> Response {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let page = format!(
        "<!DOCTYPE html><html><head><title>{title}</title></head>\
         <body><h1>{title}</h1><p>Sorry, something went wrong.</p></body></html>"
    );
    let mut response = (status, page).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// Rolls the dice for an injected 429, 500 or 503 (in that order of precedence).
fn injected_fault(knobs: &Knobs) -> Option<Response> {
    let total = knobs.fault_429_rate + knobs.fault_500_rate + knobs.fault_503_rate;
    if total <= 0.0 {
        return None;
    }
    let roll: f64 = rand::thread_rng().r#gen();
    let (status, code) = if roll < knobs.fault_429_rate {
        (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
    } else if roll < knobs.fault_429_rate + knobs.fault_500_rate {
        (StatusCode::INTERNAL_SERVER_ERROR, "server_error")
    } else if roll < total {
        (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
    } else {
        return None;
    };
    let mut response = match knobs.error_style {
        ErrorStyle::Standard => (
            status,
            Json(json!({"error": code, "error_description": "injected fault"})),
        )
            .into_response(),
        ErrorStyle::Nonstandard => Response::builder()
            .status(status)
            .body(Body::empty())
            .unwrap_or_else(|_| status.into_response()),
    };
    if status != StatusCode::INTERNAL_SERVER_ERROR
        && let Some(secs) = knobs.retry_after_secs
    {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    no_store(response.headers_mut());
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decode_undoes_rfc6749_encoding() {
        assert_eq!(form_decode("a+b%3A%25c").as_deref(), Some("a b:%c"));
        assert_eq!(form_decode("%zz"), None);
        assert_eq!(form_decode("%4"), None);
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let header =
            HeaderValue::from_str(&format!("Basic {}", STANDARD.encode("my%3Aid:s+e%26cret")))
                .unwrap();
        assert_eq!(
            parse_basic(&header),
            Some(("my:id".to_owned(), "s e&cret".to_owned()))
        );
    }

    #[test]
    fn repeated_parameters_are_rejected() {
        assert!(parse_form(b"a=1&a=2").is_err());
        assert_eq!(
            parse_form(b"a=1&b=x+y")
                .unwrap()
                .get("b")
                .map(String::as_str),
            Some("x y")
        );
    }
}
