//! A mock login web app: a cookie-session site with a real HTML login form, for the browser
//! session tests (Playwright, CDP login recipes, session pools).
//!
//! It is a separate server from [`crate::MockIdp`]. [`LoginApp::start`] binds a loopback port
//! and serves, on a tokio task:
//!
//! | route | what |
//! | --- | --- |
//! | `GET /login` | the form (`#username`, `#password`, hidden `csrf` and `next`, `#submit`); sets a `csrf` cookie (double submit) |
//! | `POST /login` | 403 on a bad CSRF token; 200 + form + `#error` on wrong credentials; 303 to `next` with `sid` and `refresh` cookies |
//! | `GET /home` | `<h1 id="welcome">`, stores a per-session `api_token` in localStorage; logged out: 302 to `/login?next=/home` |
//! | `GET /` | 302 to `/home` |
//! | `GET /api/me` | `{"user":…}` or 401 `{"error":"logged_out"}` (a heartbeat probe) |
//! | `POST /api/auth/refresh` | same-origin `Origin` + `refresh` cookie → 204, new `sid`, rotated `refresh` |
//! | `GET /admin/stats` | [`LoginAppStats`] |
//! | `POST /admin/expire-sessions` | [`LoginApp::expire_sessions`] |
//! | `PUT /admin/blocking` | body `{"status": 403 \| 429 \| null}`, see [`LoginApp::set_blocking`] |
//!
//! A session is valid while `now - last_seen < idle_timeout` and `now - created <
//! absolute_timeout`, where now comes from the injected [`SharedClock`]; every authenticated
//! request updates `last_seen`. Admin routes are never blocked. Passwords, session ids, refresh
//! cookies, CSRF tokens and API tokens are never logged.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use authkeeper_core::clock::{SharedClock, SystemClock, Timestamp};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN, RETRY_AFTER, SET_COOKIE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::MockError;
use crate::tokens::random_token;

/// The `Retry-After` value (seconds) sent with blocked answers.
const BLOCKED_RETRY_AFTER_SECS: u32 = 30;

/// Name of the session cookie.
const SID_COOKIE: &str = "sid";
/// Name of the refresh cookie (path `/api/auth`).
const REFRESH_COOKIE: &str = "refresh";
/// Name of the double-submit CSRF cookie (path `/login`).
const CSRF_COOKIE: &str = "csrf";

/// Configuration of a [`LoginApp`].
#[derive(Clone)]
pub struct LoginAppConfig {
    /// The accounts that can sign in: `(username, password)`.
    pub accounts: Vec<(String, String)>,
    /// A session ends this long after its last authenticated request (default 10 min).
    pub idle_timeout: Duration,
    /// A session ends this long after it was created, however active (default 1 h).
    pub absolute_timeout: Duration,
    /// Lifetime of a `refresh` cookie (default 24 h); each refresh issues a new one.
    pub refresh_ttl: Duration,
    /// Time source (default the system clock); tests inject a `ManualClock`.
    pub clock: SharedClock,
    /// Where to listen (default `127.0.0.1:0`, a free loopback port).
    pub listen: SocketAddr,
}

impl fmt::Debug for LoginAppConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users: Vec<&str> = self
            .accounts
            .iter()
            .map(|(user, _)| user.as_str())
            .collect();
        f.debug_struct("LoginAppConfig")
            .field("accounts", &users)
            .field("idle_timeout", &self.idle_timeout)
            .field("absolute_timeout", &self.absolute_timeout)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("clock", &self.clock)
            .field("listen", &self.listen)
            .finish()
    }
}

impl LoginAppConfig {
    /// Default idle timeout: 10 minutes.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
    /// Default absolute timeout: 1 hour.
    pub const DEFAULT_ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(60 * 60);
    /// Default refresh cookie lifetime: 24 hours.
    pub const DEFAULT_REFRESH_TTL: Duration = Duration::from_secs(24 * 60 * 60);

    /// A configuration with these `(username, password)` accounts and default timeouts, the
    /// system clock and a free loopback port.
    pub fn new(accounts: Vec<(String, String)>) -> Self {
        LoginAppConfig {
            accounts,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            absolute_timeout: Self::DEFAULT_ABSOLUTE_TIMEOUT,
            refresh_ttl: Self::DEFAULT_REFRESH_TTL,
            clock: SystemClock::shared(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }

    /// Replaces the clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces the idle timeout.
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Replaces the absolute timeout.
    pub fn with_absolute_timeout(mut self, absolute_timeout: Duration) -> Self {
        self.absolute_timeout = absolute_timeout;
        self
    }

    /// Replaces the refresh cookie lifetime.
    pub fn with_refresh_ttl(mut self, refresh_ttl: Duration) -> Self {
        self.refresh_ttl = refresh_ttl;
        self
    }

    /// Replaces the listen address.
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }
}

/// Counters of a [`LoginApp`] (also served as JSON by `GET /admin/stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginAppStats {
    /// Successful sign-ins (`POST /login` answered 303).
    pub logins: u64,
    /// Sign-ins with a wrong username or password.
    pub failed_logins: u64,
    /// `POST /login` requests refused for a missing or mismatched CSRF token.
    pub csrf_failures: u64,
    /// Successful `POST /api/auth/refresh` calls.
    pub refreshes: u64,
    /// Sessions valid right now.
    pub active_sessions: u64,
    /// `GET /api/me` requests (logged in or not).
    pub probes: u64,
    /// Requests answered 403/429 because blocking was on.
    pub blocked_requests: u64,
    /// `GET /home` requests (logged in or not).
    pub pages: u64,
}

/// One server-side session.
struct Session {
    user: String,
    created: Timestamp,
    last_seen: Timestamp,
    api_token: String,
}

/// One refresh cookie and the session it belongs to.
struct RefreshGrant {
    user: String,
    issued: Timestamp,
    sid: String,
}

#[derive(Default)]
struct Sessions {
    by_sid: HashMap<String, Session>,
    refresh: HashMap<String, RefreshGrant>,
}

#[derive(Default)]
struct Counters {
    logins: AtomicU64,
    failed_logins: AtomicU64,
    csrf_failures: AtomicU64,
    refreshes: AtomicU64,
    probes: AtomicU64,
    blocked_requests: AtomicU64,
    pages: AtomicU64,
}

struct Shared {
    accounts: Vec<(String, String)>,
    idle_timeout: Duration,
    absolute_timeout: Duration,
    refresh_ttl: Duration,
    clock: SharedClock,
    base_url: String,
    sessions: Mutex<Sessions>,
    /// `None`, or the status every non-admin route answers.
    blocking: Mutex<Option<StatusCode>>,
    counters: Counters,
}

/// Shared state of a running [`LoginApp`]; cheap to clone.
#[derive(Clone)]
struct AppState(Arc<Shared>);

impl AppState {
    fn now(&self) -> Timestamp {
        self.0.clock.now()
    }

    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.0
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn blocking(&self) -> Option<StatusCode> {
        *self
            .0
            .blocking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn set_blocking(&self, status: Option<StatusCode>) {
        *self
            .0
            .blocking
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = status;
    }

    fn session_valid(&self, session: &Session, now: Timestamp) -> bool {
        now.saturating_since(session.last_seen) < self.0.idle_timeout
            && now.saturating_since(session.created) < self.0.absolute_timeout
    }

    fn refresh_valid(&self, grant: &RefreshGrant, now: Timestamp) -> bool {
        now.saturating_since(grant.issued) < self.0.refresh_ttl
    }

    /// The user of the first valid `sid` cookie in `headers`, touching its `last_seen`, with
    /// the session's API token.
    fn authenticate(&self, headers: &HeaderMap) -> Option<(String, String)> {
        let now = self.now();
        let mut sessions = self.sessions();
        for sid in cookie_values(headers, SID_COOKIE) {
            let valid = match sessions.by_sid.get(&sid) {
                Some(session) => self.session_valid(session, now),
                None => continue,
            };
            if !valid {
                sessions.by_sid.remove(&sid);
                continue;
            }
            if let Some(session) = sessions.by_sid.get_mut(&sid) {
                session.last_seen = now;
                return Some((session.user.clone(), session.api_token.clone()));
            }
        }
        None
    }

    /// Creates a session and its refresh grant for `user`; returns `(sid, refresh)`.
    fn open_session(
        &self,
        sessions: &mut Sessions,
        user: &str,
        now: Timestamp,
    ) -> (String, String) {
        let sid = random_token(32);
        let refresh = random_token(32);
        sessions.by_sid.insert(
            sid.clone(),
            Session {
                user: user.to_owned(),
                created: now,
                last_seen: now,
                api_token: random_token(24),
            },
        );
        sessions.refresh.insert(
            refresh.clone(),
            RefreshGrant {
                user: user.to_owned(),
                issued: now,
                sid: sid.clone(),
            },
        );
        (sid, refresh)
    }

    /// Drops expired sessions and refresh grants.
    fn sweep(&self, sessions: &mut Sessions, now: Timestamp) {
        sessions
            .by_sid
            .retain(|_, session| self.session_valid(session, now));
        sessions
            .refresh
            .retain(|_, grant| self.refresh_valid(grant, now));
    }

    fn stats(&self) -> LoginAppStats {
        let now = self.now();
        let active = {
            let sessions = self.sessions();
            sessions
                .by_sid
                .values()
                .filter(|session| self.session_valid(session, now))
                .count()
        };
        let c = &self.0.counters;
        LoginAppStats {
            logins: c.logins.load(Ordering::Relaxed),
            failed_logins: c.failed_logins.load(Ordering::Relaxed),
            csrf_failures: c.csrf_failures.load(Ordering::Relaxed),
            refreshes: c.refreshes.load(Ordering::Relaxed),
            active_sessions: u64::try_from(active).unwrap_or(u64::MAX),
            probes: c.probes.load(Ordering::Relaxed),
            blocked_requests: c.blocked_requests.load(Ordering::Relaxed),
            pages: c.pages.load(Ordering::Relaxed),
        }
    }

    fn expire_sessions(&self) -> usize {
        let mut sessions = self.sessions();
        let count = sessions.by_sid.len();
        sessions.by_sid.clear();
        sessions.refresh.clear();
        count
    }

    fn check_password(&self, username: &str, password: &str) -> bool {
        // Compare every account fully so timing does not tell which part was wrong (a mock, but
        // it should not teach bad habits).
        let mut ok = false;
        for (user, pass) in &self.0.accounts {
            let user_ok = constant_time_eq(user.as_bytes(), username.as_bytes());
            let pass_ok = constant_time_eq(pass.as_bytes(), password.as_bytes());
            ok |= user_ok & pass_ok;
        }
        ok
    }

    /// Whether `origin` is this app's origin: its base URL or `http://` + the request's Host.
    fn same_origin(&self, origin: &str, headers: &HeaderMap) -> bool {
        if origin == self.0.base_url {
            return true;
        }
        headers
            .get(HOST)
            .and_then(|host| host.to_str().ok())
            .is_some_and(|host| origin == format!("http://{host}"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The axum router of a login app over `state`.
fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/login", get(login_page).post(login_submit))
        .route("/home", get(home))
        .route("/api/me", get(me))
        .route("/api/auth/refresh", post(refresh))
        .route("/admin/stats", get(admin_stats))
        .route("/admin/expire-sessions", post(admin_expire_sessions))
        .route("/admin/blocking", put(admin_blocking))
        .layer(middleware::from_fn_with_state(state.clone(), block_layer))
        .with_state(state)
}

/// A running mock login web app. Dropping it aborts the server; [`LoginApp::shutdown`] stops
/// it gracefully.
pub struct LoginApp {
    state: AppState,
    served: crate::serve::Served,
}

impl fmt::Debug for LoginApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginApp")
            .field("base_url", &self.served.base_url)
            .finish_non_exhaustive()
    }
}

impl LoginApp {
    /// Binds `config.listen` and starts serving on a tokio task.
    pub async fn start(config: LoginAppConfig) -> Result<LoginApp, MockError> {
        let bound = crate::serve::bind(config.listen).await?;
        let base_url = bound.base_url.clone();
        let state = AppState(Arc::new(Shared {
            accounts: config.accounts,
            idle_timeout: config.idle_timeout,
            absolute_timeout: config.absolute_timeout,
            refresh_ttl: config.refresh_ttl,
            clock: config.clock,
            base_url: base_url.clone(),
            sessions: Mutex::new(Sessions::default()),
            blocking: Mutex::new(None),
            counters: Counters::default(),
        }));
        let served = bound.serve(router(state.clone()));
        tracing::debug!(%base_url, "mock login app started");
        Ok(LoginApp { state, served })
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.served.addr
    }

    /// `http://HOST:PORT` (an unspecified listen address is shown as loopback); also the
    /// origin `POST /api/auth/refresh` expects.
    pub fn base_url(&self) -> &str {
        &self.served.base_url
    }

    /// `{base}/login`.
    pub fn login_url(&self) -> String {
        format!("{}/login", self.served.base_url)
    }

    /// `{base}/home`, the logged-in landing page.
    pub fn home_url(&self) -> String {
        format!("{}/home", self.served.base_url)
    }

    /// `{base}/api/me`, the heartbeat probe URL.
    pub fn probe_url(&self) -> String {
        format!("{}/api/me", self.served.base_url)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> LoginAppStats {
        self.state.stats()
    }

    /// Logs every session out server-side: all `sid` and `refresh` cookies stop working.
    pub fn expire_sessions(&self) {
        let count = self.state.expire_sessions();
        tracing::debug!(count, "mock login app: sessions expired");
    }

    /// `Some(403)` or `Some(429)` makes every non-admin route answer that status with
    /// `Retry-After: 30`; `None` stops blocking. Any other status that is not a 4xx or 5xx is
    /// treated as 403.
    pub fn set_blocking(&self, status: Option<u16>) {
        self.state.set_blocking(status.map(blocking_status));
    }

    /// Stops accepting connections, lets open requests finish (at most 5 s) and waits for the
    /// server task.
    pub async fn shutdown(self) -> Result<(), MockError> {
        self.served.shutdown().await
    }
}

fn blocking_status(status: u16) -> StatusCode {
    match StatusCode::from_u16(status) {
        Ok(code) if code.is_client_error() || code.is_server_error() => code,
        _ => StatusCode::FORBIDDEN,
    }
}

// --- middleware -----------------------------------------------------------------------------

async fn block_layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
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

async fn root() -> Response {
    redirect(StatusCode::FOUND, "/home")
}

async fn login_page(RawQuery(query): RawQuery) -> Response {
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
fn form_response(status: StatusCode, next: &str, username: &str, error: Option<&str>) -> Response {
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

async fn login_submit(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
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

async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
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

async fn me(State(state): State<AppState>, headers: HeaderMap) -> Response {
    state.0.counters.probes.fetch_add(1, Ordering::Relaxed);
    match state.authenticate(&headers) {
        Some((user, _)) => json_response(StatusCode::OK, &json!({ "user": user })),
        None => json_response(StatusCode::UNAUTHORIZED, &json!({"error": "logged_out"})),
    }
}

async fn refresh(State(state): State<AppState>, headers: HeaderMap) -> Response {
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

async fn admin_stats(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &state.stats())
}

async fn admin_expire_sessions(State(state): State<AppState>) -> Response {
    let expired = state.expire_sessions();
    json_response(StatusCode::OK, &json!({ "expired": expired }))
}

/// Body of `PUT /admin/blocking`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockingRequest {
    status: Option<u16>,
}

async fn admin_blocking(State(state): State<AppState>, body: Bytes) -> Response {
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

// --- helpers --------------------------------------------------------------------------------

fn html_headers() -> [(axum::http::HeaderName, &'static str); 2] {
    [
        (CONTENT_TYPE, "text/html; charset=utf-8"),
        (CACHE_CONTROL, "no-store"),
    ]
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [
                (CONTENT_TYPE, "application/json"),
                (CACHE_CONTROL, "no-store"),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let mut response = status.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

fn append_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
}

fn append_session_cookies(response: &mut Response, state: &AppState, sid: &str, refresh: &str) {
    append_cookie(
        response,
        &format!("{SID_COOKIE}={sid}; Path=/; HttpOnly; SameSite=Lax"),
    );
    append_cookie(
        response,
        &format!(
            "{REFRESH_COOKIE}={refresh}; Path=/api/auth; HttpOnly; SameSite=Strict; Max-Age={}",
            state.0.refresh_ttl.as_secs()
        ),
    );
}

/// `next` when it is a local path (`/…` but not `//…` or `/\…`), else `/home`.
fn local_path(next: &str) -> &str {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(char::is_control);
    if local { next } else { "/home" }
}

/// Every value of cookie `name` in the request's `Cookie` headers, in order.
fn cookie_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim().trim_matches('"').to_owned())
        .collect()
}

/// Escapes text for HTML element content and double-quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_be_a_local_path() {
        assert_eq!(local_path("/home"), "/home");
        assert_eq!(local_path("/x?y=1"), "/x?y=1");
        assert_eq!(local_path(""), "/home");
        assert_eq!(local_path("https://evil.example/"), "/home");
        assert_eq!(local_path("//evil.example/"), "/home");
        assert_eq!(local_path("/\\evil.example/"), "/home");
    }

    #[test]
    fn cookies_are_parsed_from_every_header() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; sid=x"));
        headers.append(COOKIE, HeaderValue::from_static("sid=y"));
        assert_eq!(cookie_values(&headers, "sid"), ["x", "y"]);
        assert!(cookie_values(&headers, "refresh").is_empty());
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
