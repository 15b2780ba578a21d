//! [`SpaApp`]: a single-page-app style site for tests of credentials backed by a browser session
//! (`grant = "session"`). Its login is bound to the browser's `User-Agent` and to the egress it
//! came through (the `X-Egress-Identity` a [`crate::ForwardProxy`] stamps, else `direct`); it
//! keeps a short-lived JWT in localStorage and a tab marker in sessionStorage; it renews the JWT
//! through an HttpOnly refresh cookie that rotates on every use, checks `Origin` and
//! `Sec-Fetch-Site`, and revokes the whole login when a used refresh cookie comes back (reuse).
//!
//! | route | what |
//! | --- | --- |
//! | `GET /login` | the form (`#username`, `#password`, `#submit`) |
//! | `POST /login` | wrong credentials: 200 + `#error`; else the `rt` cookie (HttpOnly, `Path=/api/auth`) and a page that stores the JWT (`access_token` in localStorage) and a tab marker (`tab` in sessionStorage), then goes to `/app` |
//! | `GET /app` | `<p id="ready">` |
//! | `POST /api/auth/refresh` | `rt` cookie, same-origin `Origin`, `Sec-Fetch-Site: same-origin`, the login's UA and egress → `{"access_token", "expires_in"}` and a rotated `rt` |
//! | `ANY /api/{*rest}` | `Authorization: Bearer <JWT>` valid, unexpired, the login's UA and egress → 200 `{"ok", "sub", "egress"}`; else 401 with `WWW-Authenticate: Bearer error="invalid_token"` (403 for another identity) |
//! | `GET /admin/stats` | [`SpaStats`] |
//!
//! Time comes from the injected clock. Tokens and cookies are never logged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use authkeeper_core::clock::{SharedClock, SystemClock, Timestamp};
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::MockError;
use crate::forward_proxy::IDENTITY_HEADER;
use crate::tokens::random_token;

/// How a [`SpaApp`] behaves.
#[derive(Clone)]
pub struct SpaConfig {
    /// The accounts that can sign in: `(username, password)`.
    pub accounts: Vec<(String, String)>,
    /// Lifetime of a JWT.
    pub token_ttl: Duration,
    /// Where to listen (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// The clock.
    pub clock: SharedClock,
}

impl SpaConfig {
    /// These accounts, 15-second JWTs, the system clock.
    pub fn new(accounts: Vec<(String, String)>) -> Self {
        SpaConfig {
            accounts,
            token_ttl: Duration::from_secs(15),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            clock: SystemClock::shared(),
        }
    }
}

/// What the app saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaStats {
    /// Successful logins.
    pub logins: u64,
    /// Successful refreshes.
    pub refreshes: u64,
    /// Refresh cookies presented again after they were rotated (each revokes its login).
    pub reuse_detected: u64,
    /// Refreshes refused for a missing or wrong `Origin` / `Sec-Fetch-Site`.
    pub refresh_refused: u64,
    /// API calls answered 200.
    pub api_ok: u64,
    /// API calls answered 401 (missing, invalid or expired token).
    pub api_unauthorized: u64,
    /// Refreshes and API calls from another user agent or egress than the login's.
    pub identity_mismatch: u64,
    /// Requests (every route) per egress identity (`direct` without one).
    pub by_egress: BTreeMap<String, u64>,
    /// User agents seen on the login, refresh and API routes.
    pub user_agents: BTreeSet<String>,
}

/// One login: its identity and its refresh-cookie chain.
struct Login {
    user: String,
    user_agent: String,
    egress: String,
    current_rt: String,
    revoked: bool,
}

#[derive(Default)]
struct Logins {
    by_id: HashMap<String, Login>,
    /// Every refresh cookie ever issued, and its login.
    rt_owner: HashMap<String, String>,
}

struct Shared {
    accounts: Vec<(String, String)>,
    token_ttl: Duration,
    clock: SharedClock,
    base_url: String,
    secret: String,
    logins: Mutex<Logins>,
    stats: Mutex<SpaStats>,
}

#[derive(Clone)]
struct AppState(Arc<Shared>);

impl AppState {
    fn logins(&self) -> MutexGuard<'_, Logins> {
        self.0.logins.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self) -> MutexGuard<'_, SpaStats> {
        self.0.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> Timestamp {
        self.0.clock.now()
    }

    /// Records the request's egress and user agent; answers both.
    fn observe(&self, headers: &HeaderMap) -> (String, String) {
        let egress = header_text(headers, IDENTITY_HEADER).unwrap_or_else(|| "direct".to_owned());
        let user_agent = header_text(headers, header::USER_AGENT.as_str()).unwrap_or_default();
        let mut stats = self.stats();
        *stats.by_egress.entry(egress.clone()).or_default() += 1;
        stats.user_agents.insert(user_agent.clone());
        (egress, user_agent)
    }

    /// A signed JWT for login `id` of `user`.
    fn jwt(&self, id: &str, user: &str) -> String {
        let now = self.now();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = serde_json::json!({
            "sub": user,
            "sid": id,
            "iat": now.as_secs(),
            "exp": (now + self.0.token_ttl).as_secs(),
            "jti": random_token(8),
        });
        let payload = URL_SAFE_NO_PAD.encode(payload.to_string());
        // Marked in the signature: the header and claims stay a decodable JWT.
        let signature = authkeeper_testkit::mark(self.sign(&format!("{header}.{payload}")));
        format!("{header}.{payload}.{signature}")
    }

    fn sign(&self, text: &str) -> String {
        let digest = Sha256::digest(format!("{}.{text}", self.0.secret).as_bytes());
        URL_SAFE_NO_PAD.encode(digest)
    }

    /// The login id of a valid, unexpired JWT.
    fn verify(&self, token: &str) -> Option<String> {
        let mut parts = token.split('.');
        let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        let signature = signature
            .strip_prefix(authkeeper_testkit::MARKER)
            .unwrap_or(signature);
        if self.sign(&format!("{header}.{payload}")) != signature {
            return None;
        }
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (claims["exp"].as_i64()? > self.now().as_secs())
            .then(|| claims["sid"].as_str().map(str::to_owned))
            .flatten()
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// A running app; stops when dropped.
pub struct SpaApp {
    state: AppState,
    served: crate::serve::Served,
}

impl std::fmt::Debug for SpaApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpaApp")
            .field("base_url", &self.served.base_url)
            .finish_non_exhaustive()
    }
}

impl SpaApp {
    /// Binds `config.listen` and serves on a tokio task.
    pub async fn start(config: SpaConfig) -> Result<SpaApp, MockError> {
        let bound = crate::serve::bind(config.listen).await?;
        let state = AppState(Arc::new(Shared {
            accounts: config.accounts,
            token_ttl: config.token_ttl,
            clock: config.clock,
            base_url: bound.base_url.clone(),
            secret: random_token(24),
            logins: Mutex::default(),
            stats: Mutex::default(),
        }));
        let router = Router::new()
            .route("/login", get(login_form).post(login))
            .route("/app", get(app_page))
            .route("/api/auth/refresh", post(refresh))
            .route("/api/{*rest}", any(api))
            .route("/admin/stats", get(stats))
            .with_state(state.clone());
        let served = bound.serve(router);
        Ok(SpaApp { state, served })
    }

    /// `http://127.0.0.1:PORT`: the site's origin.
    pub fn base_url(&self) -> &str {
        &self.served.base_url
    }

    /// What the app saw so far.
    pub fn stats(&self) -> SpaStats {
        self.state.stats().clone()
    }
}

async fn login_form() -> Html<&'static str> {
    Html(
        r#"<!doctype html><html><body><form method="post" action="/login">
<input id="username" name="username"><input id="password" name="password" type="password">
<button id="submit" type="submit">Sign in</button></form></body></html>"#,
    )
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<Credentials>,
) -> Response {
    let (egress, user_agent) = state.observe(&headers);
    let known = state
        .0
        .accounts
        .iter()
        .any(|(user, password)| *user == form.username && *password == form.password);
    if !known {
        return Html(r#"<!doctype html><p id="error">Wrong username or password</p>"#.to_owned())
            .into_response();
    }
    let id = random_token(12);
    let rt = authkeeper_testkit::mark(random_token(24));
    {
        let mut logins = state.logins();
        logins.rt_owner.insert(rt.clone(), id.clone());
        logins.by_id.insert(
            id.clone(),
            Login {
                user: form.username.clone(),
                user_agent,
                egress,
                current_rt: rt.clone(),
                revoked: false,
            },
        );
    }
    state.stats().logins += 1;
    let jwt = state.jwt(&id, &form.username);
    let tab = random_token(6);
    let page = format!(
        r#"<!doctype html><script>localStorage.setItem('access_token', {jwt:?}); sessionStorage.setItem('tab', {tab:?}); location.href = '/app';</script>"#
    );
    let mut response = Html(page).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "rt={rt}; Path=/api/auth; HttpOnly; SameSite=Strict; Max-Age=86400"
    )) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn app_page() -> Html<&'static str> {
    Html(r#"<!doctype html><html><body><p id="ready">signed in</p></body></html>"#)
}

async fn refresh(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (egress, user_agent) = state.observe(&headers);
    let same_origin = header_text(&headers, header::ORIGIN.as_str()).as_deref()
        == Some(state.0.base_url.as_str())
        && header_text(&headers, "sec-fetch-site").as_deref() == Some("same-origin");
    if !same_origin {
        state.stats().refresh_refused += 1;
        return StatusCode::FORBIDDEN.into_response();
    }
    let Some(rt) = cookie(&headers, "rt") else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let mut logins = state.logins();
    let Some(id) = logins.rt_owner.get(&rt).cloned() else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let Some(login) = logins.by_id.get_mut(&id) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if login.revoked {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if login.current_rt != rt {
        login.revoked = true;
        drop(logins);
        state.stats().reuse_detected += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if login.user_agent != user_agent || login.egress != egress {
        drop(logins);
        state.stats().identity_mismatch += 1;
        return StatusCode::FORBIDDEN.into_response();
    }
    let next = authkeeper_testkit::mark(random_token(24));
    login.current_rt = next.clone();
    let user = login.user.clone();
    logins.rt_owner.insert(next.clone(), id.clone());
    drop(logins);
    state.stats().refreshes += 1;
    let body = serde_json::json!({
        "access_token": state.jwt(&id, &user),
        "expires_in": state.0.token_ttl.as_secs(),
    });
    let mut response = Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "rt={next}; Path=/api/auth; HttpOnly; SameSite=Strict; Max-Age=86400"
    )) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn api(
    State(state): State<AppState>,
    Path(_rest): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (egress, user_agent) = state.observe(&headers);
    let unauthorized = |state: &AppState| {
        state.stats().api_unauthorized += 1;
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer error="invalid_token""#),
        );
        response
    };
    let token = header_text(&headers, header::AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned));
    let Some(id) = token.and_then(|token| state.verify(&token)) else {
        return unauthorized(&state);
    };
    let logins = state.logins();
    let Some(login) = logins.by_id.get(&id).filter(|login| !login.revoked) else {
        drop(logins);
        return unauthorized(&state);
    };
    if login.user_agent != user_agent || login.egress != egress {
        drop(logins);
        state.stats().identity_mismatch += 1;
        return StatusCode::FORBIDDEN.into_response();
    }
    let body = serde_json::json!({ "ok": true, "sub": login.user, "egress": login.egress });
    drop(logins);
    state.stats().api_ok += 1;
    Json(body).into_response()
}

async fn stats(State(state): State<AppState>) -> Json<SpaStats> {
    Json(state.stats().clone())
}
