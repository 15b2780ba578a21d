//! The login app's routes: blocking middleware, HTML pages, the JSON API and admin.

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{RawQuery, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ORIGIN, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::tokens::random_token;

use super::http::*;
use super::*;

// --- middleware -----------------------------------------------------------------------------

pub(super) async fn block_layer(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let admin = request.uri().path().starts_with("/admin/");
    if let Some(status) = state.blocking().filter(|_| !admin) {
        state
            .0
            .counters
            .blocked_requests
            .fetch_add(1, Ordering::Relaxed);
        let too_many = status == StatusCode::TOO_MANY_REQUESTS;
        let mut response = if request.uri().path().starts_with("/api/") {
            let error = if too_many { "rate_limited" } else { "blocked" };
            json_response(status, &json!({ "error": error }))
        } else {
            let text = if too_many {
                "Too many requests"
            } else {
                "Access denied"
            };
            (status, [(CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
        };
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(BLOCKED_RETRY_AFTER_SECS));
        return response;
    }
    next.run(request).await
}

// --- pages ----------------------------------------------------------------------------------

pub(super) async fn root() -> Response {
    redirect(StatusCode::FOUND, "/home")
}

pub(super) async fn login_page(RawQuery(query): RawQuery) -> Response {
    let next = query
        .as_deref()
        .and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == "next")
                .map(|(_, value)| value.into_owned())
        })
        .unwrap_or_default();
    form_response(StatusCode::OK, &next, "", None)
}

/// The login form with a fresh CSRF token (set as a cookie too).
pub(super) fn form_response(
    status: StatusCode,
    next: &str,
    username: &str,
    error: Option<&str>,
) -> Response {
    let csrf = random_token(24);
    let error = error
        .map(|message| format!("<p id=\"error\" role=\"alert\">{}</p>\n", escape(message)))
        .unwrap_or_default();
    let body = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · authkeeper mock app</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 24rem; margin: 4rem auto; padding: 0 1rem; }}
label {{ display: block; margin-top: 1rem; }}
input {{ width: 100%; padding: .4rem; box-sizing: border-box; }}
button {{ margin-top: 1.5rem; padding: .5rem 1.5rem; }}
#error {{ color: #b00020; }}
</style>
</head>
<body>
<h1>Sign in</h1>
{error}<form method="post" action="/login">
<label for="username">Username</label>
<input id="username" name="username" autocomplete="username" value="{username}" required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="next" value="{next}">
<button id="submit" type="submit">Sign in</button>
</form>
</body>
</html>
"#,
        username = escape(username),
        next = escape(next),
    );
    let mut response = (status, html_headers(), body).into_response();
    append_cookie(
        &mut response,
        &format!("{CSRF_COOKIE}={csrf}; Path=/login; HttpOnly; SameSite=Strict"),
    );
    response
}

pub(super) async fn login_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut username = String::new();
    let mut password = String::new();
    let mut csrf = None;
    let mut next = String::new();
    for (key, value) in url::form_urlencoded::parse(&body) {
        match &*key {
            "username" => username = value.into_owned(),
            "password" => password = value.into_owned(),
            "csrf" => csrf = Some(value.into_owned()),
            "next" => next = value.into_owned(),
            _ => {}
        }
    }
    let csrf_ok = csrf.is_some_and(|form| {
        !form.is_empty()
            && cookie_values(&headers, CSRF_COOKIE)
                .iter()
                .any(|cookie| constant_time_eq(cookie.as_bytes(), form.as_bytes()))
    });
    if !csrf_ok {
        state
            .0
            .counters
            .csrf_failures
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!("mock login app: CSRF check failed");
        return (
            StatusCode::FORBIDDEN,
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            "invalid CSRF token",
        )
            .into_response();
    }
    if !state.check_password(&username, &password) {
        state
            .0
            .counters
            .failed_logins
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(user = %username, "mock login app: wrong credentials");
        return form_response(
            StatusCode::OK,
            &next,
            &username,
            Some("Invalid username or password"),
        );
    }
    let now = state.now();
    let (sid, refresh) = {
        let mut sessions = state.sessions();
        state.sweep(&mut sessions, now);
        state.open_session(&mut sessions, &username, now)
    };
    state.0.counters.logins.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(user = %username, "mock login app: signed in");
    let mut response = redirect(StatusCode::SEE_OTHER, local_path(&next));
    append_session_cookies(&mut response, &state, &sid, &refresh);
    response
}

pub(super) async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    state.0.counters.pages.fetch_add(1, Ordering::Relaxed);
    let Some((user, api_token)) = state.authenticate(&headers) else {
        return redirect(StatusCode::FOUND, "/login?next=/home");
    };
    let body = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Home · authkeeper mock app</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 40rem; margin: 4rem auto; padding: 0 1rem; }}
#token {{ font-family: ui-monospace, monospace; word-break: break-all; }}
</style>
</head>
<body>
<h1 id="welcome">Welcome, {user}</h1>
<p>API token (kept in localStorage): </p>
<p id="token"></p>
<script>
localStorage.setItem("api_token", "{api_token}");
document.getElementById("token").textContent = localStorage.getItem("api_token");
</script>
</body>
</html>
"#,
        user = escape(&user),
        api_token = escape(&api_token),
    );
    (StatusCode::OK, html_headers(), body).into_response()
}

// --- API --------------------------------------------------------------------------------------

pub(super) async fn me(State(state): State<AppState>, headers: HeaderMap) -> Response {
    state.0.counters.probes.fetch_add(1, Ordering::Relaxed);
    match state.authenticate(&headers) {
        Some((user, _)) => json_response(StatusCode::OK, &json!({ "user": user })),
        None => json_response(StatusCode::UNAUTHORIZED, &json!({"error": "logged_out"})),
    }
}

pub(super) async fn refresh(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let origin_ok = headers
        .get(ORIGIN)
        .and_then(|origin| origin.to_str().ok())
        .is_some_and(|origin| state.same_origin(origin, &headers));
    if !origin_ok {
        tracing::debug!("mock login app: refresh without a same-origin Origin");
        return json_response(StatusCode::FORBIDDEN, &json!({"error": "bad_origin"}));
    }
    let now = state.now();
    let rotated = {
        let mut sessions = state.sessions();
        let mut found = None;
        for presented in cookie_values(&headers, REFRESH_COOKIE) {
            let Some(grant) = sessions.refresh.remove(&presented) else {
                continue;
            };
            if state.refresh_valid(&grant, now) {
                found = Some(grant);
                break;
            }
        }
        found.map(|grant| {
            sessions.by_sid.remove(&grant.sid);
            state.sweep(&mut sessions, now);
            state.open_session(&mut sessions, &grant.user, now)
        })
    };
    let Some((sid, refresh)) = rotated else {
        tracing::debug!("mock login app: refresh with a bad refresh cookie");
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_refresh"}),
        );
    };
    state.0.counters.refreshes.fetch_add(1, Ordering::Relaxed);
    tracing::debug!("mock login app: session refreshed");
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    append_session_cookies(&mut response, &state, &sid, &refresh);
    response
}

// --- admin ----------------------------------------------------------------------------------

pub(super) async fn admin_stats(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &state.stats())
}

pub(super) async fn admin_expire_sessions(State(state): State<AppState>) -> Response {
    let expired = state.expire_sessions();
    json_response(StatusCode::OK, &json!({ "expired": expired }))
}

/// Body of `PUT /admin/blocking`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BlockingRequest {
    status: Option<u16>,
}

pub(super) async fn admin_blocking(State(state): State<AppState>, body: Bytes) -> Response {
    let request: BlockingRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": error.to_string()}),
            );
        }
    };
    let status = match request.status {
        None => None,
        Some(403) => Some(StatusCode::FORBIDDEN),
        Some(429) => Some(StatusCode::TOO_MANY_REQUESTS),
        Some(_) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "status must be 403, 429 or null"}),
            );
        }
    };
    state.set_blocking(status);
    json_response(
        StatusCode::OK,
        &json!({ "status": status.map(|s| s.as_u16()) }),
    )
}
