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
use axum::http::header::HOST;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};

mod handlers;
mod http;

use self::handlers::*;
use self::http::*;
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
        let sid = authkeeper_testkit::mark(random_token(32));
        let refresh = authkeeper_testkit::mark(random_token(32));
        sessions.by_sid.insert(
            sid.clone(),
            Session {
                user: user.to_owned(),
                created: now,
                last_seen: now,
                api_token: authkeeper_testkit::mark(random_token(24)),
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
        use axum::http::HeaderValue;
        use axum::http::header::COOKIE;
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
