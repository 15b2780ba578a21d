//! The mock login web app over real HTTP on loopback, with a `ManualClock` and cookies set by hand.

use std::sync::Arc;
use std::time::Duration;

use authkeeper_core::clock::{ManualClock, SharedClock, Timestamp};
use authkeeper_mock::login_app::{LoginApp, LoginAppConfig, LoginAppStats};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, ORIGIN, RETRY_AFTER, SET_COOKIE};
use serde_json::{Value, json};

const USER: &str = "alice";
const PASSWORD: &str = "wonder land&=";

struct App {
    app: LoginApp,
    clock: Arc<ManualClock>,
    http: reqwest::Client,
}

/// A signed-in browser, as far as cookies go.
#[derive(Debug, Clone)]
struct Login {
    sid: String,
    refresh: String,
}

impl App {
    async fn start() -> App {
        Self::start_with(|config| config).await
    }

    async fn start_with(tune: impl FnOnce(LoginAppConfig) -> LoginAppConfig) -> App {
        let clock = ManualClock::new(Timestamp::from_secs(1_700_000_000));
        let shared: SharedClock = clock.clone();
        let config = LoginAppConfig::new(vec![
            (USER.to_owned(), PASSWORD.to_owned()),
            ("bob".to_owned(), "builder".to_owned()),
        ])
        .with_clock(shared);
        let app = LoginApp::start(tune(config))
            .await
            .expect("login app starts");
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        App { app, clock, http }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.base_url())
    }

    /// `GET /login[?next=…]`: the page and its CSRF token, checked against the cookie.
    async fn login_page(&self, query: &str) -> (String, String) {
        let response = self
            .http
            .get(self.url(&format!("/login{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let cookie = set_cookie(&response, "csrf").expect("csrf cookie");
        let page = response.text().await.unwrap();
        let csrf = hidden_value(&page, "csrf");
        assert_eq!(csrf, cookie, "double submit: form value equals cookie");
        (page, csrf)
    }

    async fn post_login(
        &self,
        csrf_cookie: Option<&str>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.http.post(self.url("/login")).form(form);
        if let Some(csrf) = csrf_cookie {
            request = request.header(COOKIE, format!("csrf={csrf}"));
        }
        request.send().await.unwrap()
    }

    async fn login(&self, user: &str, password: &str) -> Login {
        let (_, csrf) = self.login_page("").await;
        let response = self
            .post_login(
                Some(&csrf),
                &[
                    ("username", user),
                    ("password", password),
                    ("csrf", &csrf),
                    ("next", ""),
                ],
            )
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(response.headers()[LOCATION], "/home");
        Login {
            sid: set_cookie(&response, "sid").expect("sid"),
            refresh: set_cookie(&response, "refresh").expect("refresh"),
        }
    }

    async fn home(&self, sid: &str) -> reqwest::Response {
        self.http
            .get(self.url("/home"))
            .header(COOKIE, format!("sid={sid}"))
            .send()
            .await
            .unwrap()
    }

    async fn me(&self, sid: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.get(self.url("/api/me"));
        if let Some(sid) = sid {
            request = request.header(COOKIE, format!("sid={sid}"));
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    async fn refresh(&self, refresh: Option<&str>, origin: Option<&str>) -> reqwest::Response {
        let mut request = self.http.post(self.url("/api/auth/refresh"));
        if let Some(refresh) = refresh {
            request = request.header(COOKIE, format!("refresh={refresh}"));
        }
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        request.send().await.unwrap()
    }

    async fn admin_stats(&self) -> LoginAppStats {
        self.http
            .get(self.url("/admin/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// The value of cookie `name` among the response's `Set-Cookie` headers.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    set_cookie_line(response, name).map(|line| {
        let pair = line.split(';').next().unwrap();
        pair.split_once('=').unwrap().1.to_owned()
    })
}

/// The whole `Set-Cookie` header for cookie `name`.
fn set_cookie_line(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .find(|line| line.starts_with(&format!("{name}=")))
}

/// The `value` of `<input … name="NAME" value="…">` in `page`.
fn hidden_value(page: &str, name: &str) -> String {
    let start = page
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no input {name} in {page}"));
    let rest = &page[start + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn login_page_is_a_real_form_with_fresh_csrf_tokens() {
    let h = App::start().await;
    let (page, first) = h.login_page("?next=/home%3Fx%3D1").await;
    for needle in [
        r#"<form method="post" action="/login">"#,
        r#"<input id="username" name="username""#,
        r#"<input id="password" name="password" type="password""#,
        r#"<button id="submit" type="submit">Sign in</button>"#,
        "<!doctype html>",
    ] {
        assert!(page.contains(needle), "{needle} missing from {page}");
    }
    assert_eq!(hidden_value(&page, "next"), "/home?x=1");
    let (_, second) = h.login_page("").await;
    assert_ne!(first, second, "a fresh token per page view");
    assert!(first.len() >= 20);

    assert_eq!(
        h.http.get(h.url("/")).send().await.unwrap().headers()[LOCATION],
        "/home"
    );
}

#[tokio::test]
async fn login_requires_a_matching_csrf_token() {
    let h = App::start().await;
    let (_, csrf) = h.login_page("").await;
    let good = [("username", USER), ("password", PASSWORD)];

    let missing_field = h.post_login(Some(&csrf), &good).await;
    assert_eq!(missing_field.status(), StatusCode::FORBIDDEN);
    assert_eq!(missing_field.text().await.unwrap(), "invalid CSRF token");

    let with_field = [good[0], good[1], ("csrf", csrf.as_str())];
    let missing_cookie = h.post_login(None, &with_field).await;
    assert_eq!(missing_cookie.status(), StatusCode::FORBIDDEN);

    let mismatch = h.post_login(Some("other"), &with_field).await;
    assert_eq!(mismatch.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&mismatch, "sid").is_none());

    let empty = [good[0], good[1], ("csrf", "")];
    assert_eq!(
        h.post_login(Some(""), &empty).await.status(),
        StatusCode::FORBIDDEN
    );

    let ok = h.post_login(Some(&csrf), &with_field).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);

    let stats = h.app.stats();
    assert_eq!((stats.csrf_failures, stats.logins), (4, 1));
}

#[tokio::test]
async fn wrong_password_shows_the_form_again() {
    let h = App::start().await;
    let (_, csrf) = h.login_page("?next=/home").await;
    let response = h
        .post_login(
            Some(&csrf),
            &[
                ("username", USER),
                ("password", "nope"),
                ("csrf", &csrf),
                ("next", "/home"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(set_cookie(&response, "sid").is_none());
    let fresh_csrf = set_cookie(&response, "csrf").expect("a new csrf cookie");
    let page = response.text().await.unwrap();
    assert!(page.contains(r#"<p id="error""#), "{page}");
    assert!(page.contains("Invalid username or password</p>"));
    assert!(page.contains(r#"<form method="post" action="/login">"#));
    assert_eq!(hidden_value(&page, "csrf"), fresh_csrf);
    assert_eq!(hidden_value(&page, "next"), "/home");
    assert!(!page.contains("nope"), "the password is not echoed");

    let unknown_user = h
        .post_login(
            Some(&csrf),
            &[
                ("username", "mallory"),
                ("password", PASSWORD),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(unknown_user.status(), StatusCode::OK);
    let stats = h.app.stats();
    assert_eq!((stats.failed_logins, stats.logins), (2, 0));
}

#[tokio::test]
async fn login_sets_cookies_and_opens_home() {
    let h = App::start_with(|c| c.with_refresh_ttl(Duration::from_secs(7200))).await;
    let (_, csrf) = h.login_page("").await;
    let response = h
        .post_login(
            Some(&csrf),
            &[
                ("username", USER),
                ("password", PASSWORD),
                ("csrf", &csrf),
                ("next", "/api/me"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/api/me");
    let sid_line = set_cookie_line(&response, "sid").unwrap();
    assert!(
        sid_line.ends_with("; Path=/; HttpOnly; SameSite=Lax"),
        "{sid_line}"
    );
    let refresh_line = set_cookie_line(&response, "refresh").unwrap();
    assert!(
        refresh_line.ends_with("; Path=/api/auth; HttpOnly; SameSite=Strict; Max-Age=7200"),
        "{refresh_line}"
    );
    let sid = set_cookie(&response, "sid").unwrap();

    let home = h.home(&sid).await;
    assert_eq!(home.status(), StatusCode::OK);
    let page = home.text().await.unwrap();
    assert!(
        page.contains(r#"<h1 id="welcome">Welcome, alice</h1>"#),
        "{page}"
    );
    assert!(page.contains(r#"<p id="token">"#));
    assert!(page.contains(r#"localStorage.setItem("api_token", ""#));
    let again = h.home(&sid).await.text().await.unwrap();
    assert_eq!(page, again, "the API token is per session");

    let other = h.login("bob", "builder").await;
    let bob = h.home(&other.sid).await.text().await.unwrap();
    assert!(bob.contains("Welcome, bob"));
    assert_ne!(
        bob.replace("bob", "alice"),
        page,
        "another session, another token"
    );

    // Off-site `next` values land on /home.
    for next in ["https://evil.example/", "//evil.example/x"] {
        let (_, csrf) = h.login_page("").await;
        let response = h
            .post_login(
                Some(&csrf),
                &[
                    ("username", USER),
                    ("password", PASSWORD),
                    ("csrf", &csrf),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(response.headers()[LOCATION], "/home");
    }

    let logged_out = h.http.get(h.url("/home")).send().await.unwrap();
    assert_eq!(logged_out.status(), StatusCode::FOUND);
    assert_eq!(logged_out.headers()[LOCATION], "/login?next=/home");
    assert_eq!(h.home("bogus").await.status(), StatusCode::FOUND);

    let stats = h.app.stats();
    assert_eq!(stats.logins, 4);
    assert_eq!(stats.active_sessions, 4);
    assert_eq!(stats.pages, 5);
}

#[tokio::test]
async fn idle_sessions_expire_and_activity_keeps_them_alive() {
    let h = App::start_with(|c| c.with_idle_timeout(Duration::from_secs(60))).await;
    let login = h.login(USER, PASSWORD).await;
    for _ in 0..5 {
        h.clock.advance(Duration::from_secs(59));
        assert_eq!(h.home(&login.sid).await.status(), StatusCode::OK);
    }
    h.clock.advance(Duration::from_secs(59));
    assert_eq!(
        h.me(Some(&login.sid)).await,
        (StatusCode::OK, json!({"user": USER}))
    );
    assert_eq!(h.app.stats().active_sessions, 1);
    h.clock.advance(Duration::from_secs(60));
    assert_eq!(h.app.stats().active_sessions, 0);
    assert_eq!(h.home(&login.sid).await.status(), StatusCode::FOUND);
    assert_eq!(
        h.me(Some(&login.sid)).await,
        (StatusCode::UNAUTHORIZED, json!({"error": "logged_out"}))
    );
}

#[tokio::test]
async fn sessions_end_at_the_absolute_timeout_however_active() {
    let h = App::start_with(|c| {
        c.with_idle_timeout(Duration::from_secs(600))
            .with_absolute_timeout(Duration::from_secs(1800))
    })
    .await;
    let login = h.login(USER, PASSWORD).await;
    for _ in 0..5 {
        h.clock.advance(Duration::from_secs(300));
        assert_eq!(h.me(Some(&login.sid)).await.0, StatusCode::OK);
    }
    h.clock.advance(Duration::from_secs(299));
    assert_eq!(h.me(Some(&login.sid)).await.0, StatusCode::OK);
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(h.me(Some(&login.sid)).await.0, StatusCode::UNAUTHORIZED);

    // The refresh cookie outlives the session and starts a new one with fresh timeouts.
    let response = h
        .refresh(Some(&login.refresh), Some(h.app.base_url()))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let sid = set_cookie(&response, "sid").unwrap();
    h.clock.advance(Duration::from_secs(599));
    assert_eq!(h.me(Some(&sid)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn refresh_needs_same_origin_and_rotates_both_cookies() {
    let h = App::start_with(|c| c.with_refresh_ttl(Duration::from_secs(3600))).await;
    let login = h.login(USER, PASSWORD).await;
    let origin = h.app.base_url().to_owned();

    let no_origin = h.refresh(Some(&login.refresh), None).await;
    assert_eq!(no_origin.status(), StatusCode::FORBIDDEN);
    let cross_site = h
        .refresh(Some(&login.refresh), Some("http://evil.example"))
        .await;
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        h.refresh(None, Some(&origin)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.refresh(Some("bogus"), Some(&origin)).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let response = h.refresh(Some(&login.refresh), Some(&origin)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let sid_line = set_cookie_line(&response, "sid").unwrap();
    assert!(sid_line.ends_with("; Path=/; HttpOnly; SameSite=Lax"));
    let refresh_line = set_cookie_line(&response, "refresh").unwrap();
    assert!(refresh_line.ends_with("; Path=/api/auth; HttpOnly; SameSite=Strict; Max-Age=3600"));
    let rotated = Login {
        sid: set_cookie(&response, "sid").unwrap(),
        refresh: set_cookie(&response, "refresh").unwrap(),
    };
    assert_ne!(rotated.sid, login.sid);
    assert_ne!(rotated.refresh, login.refresh);

    assert_eq!(
        h.me(Some(&login.sid)).await.0,
        StatusCode::UNAUTHORIZED,
        "old sid"
    );
    assert_eq!(h.me(Some(&rotated.sid)).await.0, StatusCode::OK);
    assert_eq!(
        h.refresh(Some(&login.refresh), Some(&origin))
            .await
            .status(),
        StatusCode::UNAUTHORIZED,
        "old refresh cookie"
    );

    // Refresh cookies have their own lifetime.
    h.clock.advance(Duration::from_secs(3600));
    assert_eq!(
        h.refresh(Some(&rotated.refresh), Some(&origin))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.app.stats().refreshes, 1);
}

#[tokio::test]
async fn expire_sessions_logs_everyone_out() {
    let h = App::start().await;
    let alice = h.login(USER, PASSWORD).await;
    let bob = h.login("bob", "builder").await;
    assert_eq!(h.app.stats().active_sessions, 2);
    h.app.expire_sessions();
    assert_eq!(h.app.stats().active_sessions, 0);
    for login in [&alice, &bob] {
        assert_eq!(h.home(&login.sid).await.status(), StatusCode::FOUND);
        assert_eq!(
            h.refresh(Some(&login.refresh), Some(h.app.base_url()))
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }

    // The same over the admin route.
    let carol = h.login(USER, PASSWORD).await;
    let expired: Value = h
        .http
        .post(h.url("/admin/expire-sessions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(expired, json!({"expired": 1}));
    assert_eq!(h.me(Some(&carol.sid)).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn blocking_answers_every_non_admin_route_with_retry_after() {
    let h = App::start().await;
    let login = h.login(USER, PASSWORD).await;
    for status in [403u16, 429] {
        h.app.set_blocking(Some(status));
        for path in ["/home", "/login", "/api/me", "/", "/nowhere"] {
            let response = h
                .http
                .get(h.url(path))
                .header(COOKIE, format!("sid={}", login.sid))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), status, "{path}");
            assert_eq!(response.headers()[RETRY_AFTER], "30");
        }
        let refresh = h
            .refresh(Some(&login.refresh), Some(h.app.base_url()))
            .await;
        assert_eq!(refresh.status().as_u16(), status);
        assert_eq!(
            h.admin_stats().await,
            h.app.stats(),
            "admin is never blocked"
        );
    }
    h.app.set_blocking(None);
    assert_eq!(h.home(&login.sid).await.status(), StatusCode::OK);
    let stats = h.app.stats();
    assert_eq!(stats.blocked_requests, 12);
    assert_eq!((stats.pages, stats.probes, stats.refreshes), (1, 0, 0));

    // And over the admin route.
    let set = |body: Value| h.http.put(h.url("/admin/blocking")).json(&body).send();
    let answer: Value = set(json!({"status": 429}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer, json!({"status": 429}));
    assert_eq!(
        h.me(None).await,
        (
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": "rate_limited"})
        )
    );
    assert_eq!(
        set(json!({"status": 500})).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        set(json!({"status": null})).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(h.home(&login.sid).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn probes_are_counted_and_stats_match_over_http() {
    let h = App::start().await;
    let login = h.login(USER, PASSWORD).await;
    for _ in 0..3 {
        assert_eq!(
            h.me(Some(&login.sid)).await,
            (StatusCode::OK, json!({"user": USER}))
        );
    }
    assert_eq!(
        h.me(None).await,
        (StatusCode::UNAUTHORIZED, json!({"error": "logged_out"}))
    );
    let stats = h.admin_stats().await;
    assert_eq!(stats, h.app.stats());
    assert_eq!(
        stats,
        LoginAppStats {
            logins: 1,
            probes: 4,
            active_sessions: 1,
            ..LoginAppStats::default()
        }
    );

    let base = h.app.base_url().to_owned();
    tokio::time::timeout(Duration::from_secs(5), h.app.shutdown())
        .await
        .unwrap()
        .unwrap();
    assert!(h.http.get(format!("{base}/api/me")).send().await.is_err());
}
