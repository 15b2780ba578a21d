//! The heartbeat probe and the cookie refresh against a small axum site on 127.0.0.1.

use std::time::Duration;

use authkeeper_core::Timestamp;
use authkeeper_session::config::SiteConfig;
use authkeeper_session::health::{HealthError, ProbeOutcome, cookie_refresh, http_client, probe};
use authkeeper_session::storage_state::{StateCookie, StorageState};
use axum::Router;
use axum::http::header::{COOKIE, LOCATION, ORIGIN, RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::routing::{get, post};

const NOW: Timestamp = Timestamp::from_secs(1_795_392_000);

fn cookies(headers: &HeaderMap) -> String {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ")
}

fn has_cookie(headers: &HeaderMap, pair: &str) -> bool {
    cookies(headers).split("; ").any(|c| c == pair)
}

async fn me(headers: HeaderMap) -> Response {
    if has_cookie(&headers, "sid=good") {
        (
            // AppendHeaders: a plain array would keep only the last Set-Cookie.
            AppendHeaders([
                (SET_COOKIE, "seen=1; Path=/; Max-Age=3600"),
                (SET_COOKIE, "stale=; Max-Age=0; Path=/"),
            ]),
            "hello alice",
        )
            .into_response()
    } else {
        (
            StatusCode::FOUND,
            [
                (LOCATION, "/login?next=%2Fapi%2Fme"),
                (SET_COOKIE, "sid=; Max-Age=0; Path=/"),
            ],
        )
            .into_response()
    }
}

async fn refresh(headers: HeaderMap) -> Response {
    let origin = headers
        .get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let expected = headers
        .get("x-expected-origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if origin.is_empty() || origin != expected {
        return StatusCode::FORBIDDEN.into_response();
    }
    if !has_cookie(&headers, "refresh=r1") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    (
        [(
            SET_COOKIE,
            "sid=renewed; Path=/; HttpOnly; Max-Age=600; SameSite=Strict",
        )],
        "",
    )
        .into_response()
}

async fn start() -> String {
    let app = Router::new()
        .route("/api/me", get(me))
        .route(
            "/busy",
            get(|| async { (StatusCode::TOO_MANY_REQUESTS, [(RETRY_AFTER, "7")]) }),
        )
        .route("/forbidden", get(|| async { StatusCode::FORBIDDEN }))
        .route("/unauthorized", get(|| async { StatusCode::UNAUTHORIZED }))
        .route("/oops", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
        .route(
            "/elsewhere",
            get(|| async { (StatusCode::FOUND, [(LOCATION, "/home")]) }),
        )
        .route(
            "/marker",
            get(|| async { "<html><form>Please Sign in</form></html>" }),
        )
        .route(
            "/echo",
            get(|headers: HeaderMap| async move { cookies(&headers) }),
        )
        .route("/refresh", post(refresh))
        .route("/refresh-bad", post(|| async { StatusCode::BAD_GATEWAY }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

fn site(base: &str, probe_url: &str, extra: serde_json::Value) -> SiteConfig {
    let mut config = serde_json::json!({
        "origin": base,
        "probe": {
            "url": probe_url,
            "logged_out_redirect": "/login",
            "logged_out_marker": "Sign in",
            "timeout": "5s",
        },
    });
    if let (Some(map), serde_json::Value::Object(more)) = (config.as_object_mut(), extra) {
        map.extend(more);
    }
    serde_json::from_value(config).unwrap()
}

fn state(pairs: &[(&str, &str)]) -> StorageState {
    StorageState {
        cookies: pairs
            .iter()
            .map(|(name, value)| StateCookie::new(*name, *value, "127.0.0.1", "/"))
            .collect(),
        ..StorageState::default()
    }
}

fn client() -> reqwest::Client {
    http_client(None, Duration::from_secs(5)).unwrap()
}

#[tokio::test]
async fn logged_in_probe_merges_set_cookie() {
    let base = start().await;
    let before = state(&[("sid", "good"), ("stale", "x")]);
    let result = probe(
        &client(),
        &site(&base, "/api/me", serde_json::json!({})),
        &before,
        None,
        NOW,
    )
    .await;
    assert_eq!(result.outcome, ProbeOutcome::LoggedIn);
    assert_eq!(result.status, Some(200));
    let names: Vec<&str> = result
        .state
        .cookies
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["sid", "seen"]);
    assert_eq!(result.cookies.added, 1);
    assert_eq!(result.cookies.removed, 1);
}

#[tokio::test]
async fn redirect_to_login_is_logged_out() {
    let base = start().await;
    let result = probe(
        &client(),
        &site(&base, "/api/me", serde_json::json!({})),
        &state(&[("sid", "expired")]),
        None,
        NOW,
    )
    .await;
    assert!(
        matches!(&result.outcome, ProbeOutcome::LoggedOut { reason } if reason.contains("/login")),
        "{:?}",
        result.outcome
    );
    assert_eq!(result.status, Some(302));
    assert!(result.state.cookies.is_empty(), "the site deleted sid");
    // A redirect elsewhere is not a logout.
    let other = probe(
        &client(),
        &site(&base, "/elsewhere", serde_json::json!({})),
        &state(&[]),
        None,
        NOW,
    )
    .await;
    assert_eq!(other.outcome, ProbeOutcome::LoggedIn);
}

#[tokio::test]
async fn statuses_and_marker() {
    let base = start().await;
    let empty = state(&[]);
    let run = |path: &'static str| {
        let base = base.clone();
        let empty = empty.clone();
        async move {
            probe(
                &client(),
                &site(&base, path, serde_json::json!({})),
                &empty,
                None,
                NOW,
            )
            .await
            .outcome
        }
    };
    assert_eq!(
        run("/busy").await,
        ProbeOutcome::Blocked {
            status: 429,
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert_eq!(
        run("/forbidden").await,
        ProbeOutcome::Blocked {
            status: 403,
            retry_after: None
        }
    );
    assert!(matches!(
        run("/unauthorized").await,
        ProbeOutcome::LoggedOut { .. }
    ));
    assert!(matches!(run("/oops").await, ProbeOutcome::Error(reason) if reason.contains("503")));
    assert!(
        matches!(run("/marker").await, ProbeOutcome::LoggedOut { reason } if reason.contains("marker"))
    );
    assert_eq!(run("/echo").await, ProbeOutcome::LoggedIn);
    // 403 listed as a logged-out status wins over "blocked".
    let listed =
        serde_json::json!({"probe": {"url": "/forbidden", "logged_out_status": [401, 403]}});
    let result = probe(&client(), &site(&base, "/x", listed), &empty, None, NOW).await;
    assert!(matches!(result.outcome, ProbeOutcome::LoggedOut { .. }));
}

#[tokio::test]
async fn probe_sends_only_matching_cookies() {
    let base = start().await;
    let mut st = state(&[("a", "1")]);
    let mut secure = StateCookie::new("s", "2", "127.0.0.1", "/");
    secure.secure = true;
    st.cookies.push(secure);
    st.cookies
        .push(StateCookie::new("other", "3", "example.com", "/"));
    st.cookies
        .push(StateCookie::new("deep", "4", "127.0.0.1", "/echo/deeper"));
    let mut old = StateCookie::new("old", "5", "127.0.0.1", "/");
    old.expires = NOW.as_secs() as f64 - 10.0;
    st.cookies.push(old);
    let client = client();
    let response = client.get(format!("{base}/echo")).header(
        "cookie",
        authkeeper_session::jar::cookie_header(&st, &format!("{base}/echo").parse().unwrap(), NOW)
            .unwrap(),
    );
    let body = response.send().await.unwrap().text().await.unwrap();
    assert_eq!(body, "a=1; s=2", "loopback http gets Secure cookies");
}

#[tokio::test]
async fn transport_errors_are_errors() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let result = probe(
        &client(),
        &site(&base, "/api/me", serde_json::json!({})),
        &state(&[("sid", "topsecret")]),
        None,
        NOW,
    )
    .await;
    match &result.outcome {
        ProbeOutcome::Error(reason) => {
            assert!(!reason.contains("topsecret"));
            assert!(!reason.contains("127.0.0.1"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(result.status, None);
    let no_probe: SiteConfig = serde_json::from_value(serde_json::json!({"origin": base})).unwrap();
    let result = probe(&client(), &no_probe, &state(&[]), None, NOW).await;
    assert!(matches!(result.outcome, ProbeOutcome::Error(_)));
}

#[tokio::test]
async fn cookie_refresh_checks_origin_and_merges() {
    let base = start().await;
    let st = state(&[("refresh", "r1"), ("sid", "old")]);
    let refresh_site = |origin: Option<&str>, url: &str| {
        let mut refresh = serde_json::json!({"url": url});
        if let Some(origin) = origin {
            refresh["origin"] = origin.into();
        }
        site(&base, "/api/me", serde_json::json!({"refresh": refresh}))
    };
    // The test server expects the origin it is told about: the default is the site's origin.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers({
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert("x-expected-origin", base.parse().unwrap());
            headers
        })
        .build()
        .unwrap();
    let updated = cookie_refresh(&client, &refresh_site(None, "/refresh"), &st, None, NOW)
        .await
        .unwrap();
    let sid = updated.cookies.iter().find(|c| c.name == "sid").unwrap();
    assert_eq!(sid.value, "renewed");
    assert!(sid.http_only);
    assert_eq!(sid.expires, NOW.as_secs() as f64 + 600.0);
    assert_eq!(updated.cookies.len(), 2);

    // A wrong Origin: 403, the refresh is rejected.
    let err = cookie_refresh(
        &client,
        &refresh_site(Some("https://evil.example"), "/refresh"),
        &st,
        None,
        NOW,
    )
    .await
    .unwrap_err();
    assert_eq!(err, HealthError::RefreshRejected { status: 403 });
    // Without the refresh cookie: 401, with a message saying so.
    let err = cookie_refresh(
        &client,
        &refresh_site(None, "/refresh"),
        &state(&[("sid", "old")]),
        None,
        NOW,
    )
    .await
    .unwrap_err();
    assert_eq!(err, HealthError::RefreshRejected { status: 401 });
    assert!(err.to_string().contains("no longer accepts"));
    assert!(!err.to_string().contains("old"));
    // Other failures.
    let err = cookie_refresh(&client, &refresh_site(None, "/refresh-bad"), &st, None, NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, HealthError::Status { status: 502, .. }));
    let err = cookie_refresh(
        &client,
        &site(&base, "/api/me", serde_json::json!({})),
        &st,
        None,
        NOW,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, HealthError::NotConfigured(_)));
}

#[test]
fn proxy_errors_do_not_show_the_password() {
    let err = http_client(Some("http://user:hunter2@[bad"), Duration::from_secs(1)).unwrap_err();
    assert_eq!(err, HealthError::InvalidProxy);
    assert!(!err.to_string().contains("hunter2"));
    assert!(
        http_client(
            Some("http://user:pw@127.0.0.1:3128"),
            Duration::from_secs(1)
        )
        .is_ok()
    );
}
