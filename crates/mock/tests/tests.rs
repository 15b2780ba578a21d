//! Integration tests of the mock IdP over real HTTP on loopback, with a `ManualClock`.

use std::sync::Arc;
use std::time::Duration;

use authkeeper_core::clock::{Clock, ManualClock, SharedClock, Timestamp};
use authkeeper_mock::{ErrorStyle, Knobs, MockClient, MockConfig, MockIdp, Stats};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::{Value, json};

mod login_app;

const ID: &str = MockClient::DEFAULT_ID;
const SECRET: &str = MockClient::DEFAULT_SECRET;

struct Harness {
    idp: MockIdp,
    clock: Arc<ManualClock>,
    http: reqwest::Client,
}

impl Harness {
    async fn start(knobs: Knobs) -> Harness {
        Self::start_with(knobs, vec![MockClient::default()]).await
    }

    async fn start_with(knobs: Knobs, clients: Vec<MockClient>) -> Harness {
        let clock = ManualClock::new(Timestamp::from_secs(1_700_000_000));
        let shared: SharedClock = clock.clone();
        let config = MockConfig::default()
            .with_clock(shared)
            .with_knobs(knobs)
            .with_clients(clients);
        let idp = MockIdp::start(config).await.expect("mock starts");
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Harness { idp, clock, http }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.idp.base_url())
    }

    async fn mint(&self, body: Option<Value>) -> Value {
        let request = self.http.post(self.url("/admin/grants"));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        response.json().await.unwrap()
    }

    async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.http
            .post(self.idp.token_url())
            .basic_auth(ID, Some(SECRET))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await
            .unwrap()
    }

    async fn api(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn stats(&self) -> Stats {
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

fn text(value: &Value, key: &str) -> String {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {value}"))
        .to_owned()
}

async fn oauth_error(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (status, text(&body, "error"))
}

fn jwt_payload(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "JWT-shaped token");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_grant() {
    let h = Harness::start(Knobs::default()).await;
    let minted = h.mint(None).await;
    assert_eq!(text(&minted, "token_type"), "Bearer");
    assert_eq!(minted["expires_in"], 3600);
    let (rt0, grant) = (text(&minted, "refresh_token"), text(&minted, "grant_id"));

    let response = h.refresh(&rt0).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
    let refreshed: Value = response.json().await.unwrap();
    let (rt1, at1) = (
        text(&refreshed, "refresh_token"),
        text(&refreshed, "access_token"),
    );
    assert_ne!(rt1, rt0, "rotated");
    assert_eq!(h.api("/api/resource", &at1).await.status(), StatusCode::OK);

    assert_eq!(
        oauth_error(h.refresh(&rt0).await).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into())
    );
    assert_eq!(
        oauth_error(h.refresh(&rt1).await).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into())
    );
    for token in [&at1, &text(&minted, "access_token")] {
        let response = h.api("/api/resource", token).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(
            response.headers()[WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("error=\"invalid_token\"")
        );
    }

    let stats = h.idp.stats();
    assert_eq!(
        (
            stats.reuse_detected,
            stats.grants_revoked,
            stats.active_grants
        ),
        (1, 1, 0)
    );
    assert_eq!(stats.grants[0].id, grant);
    assert!(!stats.grants[0].alive);
    assert_eq!(stats.grants[0].generation, 1);
}

#[tokio::test]
async fn grace_window_accepts_a_retry_of_the_previous_token() {
    let h = Harness::start(Knobs {
        reuse_grace_ms: 10_000,
        ..Knobs::default()
    })
    .await;
    let rt0 = text(&h.mint(None).await, "refresh_token");
    let first: Value = h.refresh(&rt0).await.json().await.unwrap();
    let rt1 = text(&first, "refresh_token");

    h.clock.advance(Duration::from_secs(5));
    let retry = h.refresh(&rt0).await;
    assert_eq!(retry.status(), StatusCode::OK);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(text(&retry, "refresh_token"), rt1, "the chain is kept");
    assert_ne!(text(&retry, "access_token"), text(&first, "access_token"));
    assert_eq!(
        h.api("/api/resource", &text(&retry, "access_token"))
            .await
            .status(),
        StatusCode::OK
    );

    h.clock.advance(Duration::from_secs(6));
    assert_eq!(oauth_error(h.refresh(&rt0).await).await.1, "invalid_grant");
    assert_eq!(
        oauth_error(h.refresh(&rt1).await).await.1,
        "invalid_grant",
        "grant revoked after grace"
    );
    let stats = h.idp.stats();
    assert_eq!(
        (
            stats.reuse_in_grace,
            stats.reuse_detected,
            stats.grants_revoked
        ),
        (1, 1, 1)
    );
    assert_eq!(stats.grants[0].generation, 2);
}

#[tokio::test]
async fn expired_or_missing_tokens_get_rfc6750_challenges() {
    let h = Harness::start(Knobs {
        access_ttl_ms: 60_000,
        ..Knobs::default()
    })
    .await;
    let minted = h.mint(None).await;
    assert_eq!(minted["expires_in"], 60);
    let at = text(&minted, "access_token");
    let ok: Value = h.api("/api/resource", &at).await.json().await.unwrap();
    assert_eq!(
        (ok["ok"].clone(), text(&ok, "sub")),
        (json!(true), "user-1".to_owned())
    );

    h.clock.advance(Duration::from_secs(61));
    let response = h.api("/api/resource", &at).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()[WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge
            .starts_with("Bearer realm=\"mock\", error=\"invalid_token\", error_description=\"")
    );
    assert!(challenge.contains("expired"), "{challenge}");

    let response = h.http.get(h.idp.api_url()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[WWW_AUTHENTICATE],
        "Bearer realm=\"mock\""
    );

    let unknown = h.api("/api/resource", "not-a-token").await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admin_paths_need_the_admin_scope() {
    let h = Harness::start(Knobs::default()).await;
    let plain = text(&h.mint(None).await, "access_token");
    let response = h.api("/api/admin/users", &plain).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = response.headers()[WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"admin\""), "{challenge}");

    let admin = text(
        &h.mint(Some(json!({"scope": "api.read admin"}))).await,
        "access_token",
    );
    assert_eq!(
        h.api("/api/admin/users", &admin).await.status(),
        StatusCode::OK
    );
    let posted: Value = h
        .http
        .post(h.url("/api/things"))
        .bearer_auth(&admin)
        .body("hello")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(posted["body_len"], 5);
    assert_eq!(h.idp.stats().api_forbidden, 1);
}

#[tokio::test]
async fn client_credentials_with_basic_and_post_authentication() {
    let odd = MockClient::new("svc:one", "p@ss word&=");
    let h = Harness::start_with(Knobs::default(), vec![MockClient::default(), odd]).await;
    let basic = h
        .http
        .post(h.idp.token_url())
        .basic_auth(ID, Some(SECRET))
        .form(&[("grant_type", "client_credentials"), ("scope", "api.read")])
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::OK);
    assert_eq!(basic.headers()[CACHE_CONTROL], "no-store");
    let basic: Value = basic.json().await.unwrap();
    assert!(basic.get("refresh_token").is_none());
    assert_eq!(text(&basic, "scope"), "api.read");
    let api: Value = h
        .api("/api/resource", &text(&basic, "access_token"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(text(&api, "sub"), ID);

    let post = h
        .http
        .post(h.idp.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "svc:one"),
            ("client_secret", "p@ss word&="),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::OK);

    // RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
    let encoded = STANDARD.encode("svc%3Aone:p%40ss+word%26%3D");
    let encoded_basic = h
        .http
        .post(h.idp.token_url())
        .header("authorization", format!("Basic {encoded}"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(encoded_basic.status(), StatusCode::OK);

    let wrong = h
        .http
        .post(h.idp.token_url())
        .basic_auth(ID, Some("nope"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(
        wrong.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(oauth_error(wrong).await.1, "invalid_client");

    let stats = h.idp.stats();
    assert_eq!(
        (
            stats.client_credentials_calls,
            stats.client_credentials_success
        ),
        (4, 3)
    );
    assert_eq!(stats.invalid_client, 1);
}

#[tokio::test]
async fn missing_or_unsupported_grant_types_are_rejected() {
    let h = Harness::start(Knobs::default()).await;
    let missing = h
        .http
        .post(h.idp.token_url())
        .basic_auth(ID, Some(SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(
        oauth_error(missing).await,
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
    let password = h
        .http
        .post(h.idp.token_url())
        .basic_auth(ID, Some(SECRET))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        oauth_error(password).await,
        (StatusCode::BAD_REQUEST, "unsupported_grant_type".into())
    );
    let no_token = h
        .http
        .post(h.idp.token_url())
        .basic_auth(ID, Some(SECRET))
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(oauth_error(no_token).await.1, "invalid_request");
}

#[tokio::test]
async fn injected_faults_carry_retry_after() {
    let h = Harness::start(Knobs {
        fault_503_rate: 1.0,
        retry_after_secs: Some(7),
        ..Knobs::default()
    })
    .await;
    let rt = text(&h.mint(None).await, "refresh_token");
    let response = h.refresh(&rt).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[RETRY_AFTER], "7");

    h.idp
        .set_knobs(Knobs {
            fault_429_rate: 1.0,
            retry_after_secs: Some(2),
            ..Knobs::default()
        })
        .unwrap();
    let response = h.refresh(&rt).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[RETRY_AFTER], "2");

    h.idp.set_knobs(Knobs::default()).unwrap();
    assert_eq!(
        h.refresh(&rt).await.status(),
        StatusCode::OK,
        "faults come before any state change"
    );
    let stats = h.idp.stats();
    assert_eq!(
        (
            stats.faults_injected,
            stats.refresh_calls,
            stats.refresh_success
        ),
        (2, 3, 1)
    );
    assert!(
        h.idp
            .set_knobs(Knobs {
                fault_500_rate: 1.5,
                ..Knobs::default()
            })
            .is_err()
    );
}

#[tokio::test]
async fn nonstandard_error_style_drops_json_and_challenges() {
    let knobs = Knobs {
        error_style: ErrorStyle::Nonstandard,
        ..Knobs::default()
    };
    let h = Harness::start(knobs).await;
    let wrong = h
        .http
        .post(h.idp.token_url())
        .basic_auth(ID, Some("nope"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(WWW_AUTHENTICATE).is_none());
    assert!(
        wrong.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(wrong.text().await.unwrap().contains("<html>"));

    let rt = text(&h.mint(None).await, "refresh_token");
    let mut knobs = h.idp.knobs();
    knobs.fault_500_rate = 1.0;
    h.idp.set_knobs(knobs).unwrap();
    let fault = h.refresh(&rt).await;
    assert_eq!(fault.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(fault.text().await.unwrap().is_empty());

    let api = h.api("/api/resource", "bogus").await;
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    assert!(api.headers().get(WWW_AUTHENTICATE).is_none());
}

#[tokio::test]
async fn jwt_tokens_without_expires_in_carry_exp() {
    let h = Harness::start(Knobs {
        jwt_access_tokens: true,
        omit_expires_in: true,
        ..Knobs::default()
    })
    .await;
    let minted = h.mint(None).await;
    assert!(minted.get("expires_in").is_none());
    let at = text(&minted, "access_token");
    let payload = jwt_payload(&at);
    let now = h.clock.now().as_secs();
    assert_eq!(
        (payload["iat"].as_i64(), payload["exp"].as_i64()),
        (Some(now), Some(now + 3600))
    );
    assert_eq!(text(&payload, "sub"), "user-1");
    assert_eq!(text(&payload, "iss"), h.idp.issuer());
    assert!(payload["jti"].is_string());
    assert_eq!(h.api("/api/resource", &at).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn expires_in_can_be_a_string() {
    let h = Harness::start(Knobs {
        expires_in_as_string: true,
        ..Knobs::default()
    })
    .await;
    assert_eq!(h.mint(None).await["expires_in"], json!("3600"));
}

#[tokio::test]
async fn clock_offset_moves_jwt_exp_and_expiry_checks() {
    let knobs = Knobs {
        jwt_access_tokens: true,
        clock_offset_ms: 120_000,
        access_ttl_ms: 600_000,
        ..Knobs::default()
    };
    let h = Harness::start(knobs).await;
    let minted = h.mint(None).await;
    assert_eq!(minted["expires_in"], 600, "expires_in stays relative");
    let at = text(&minted, "access_token");
    let now = h.clock.now().as_secs();
    assert_eq!(jwt_payload(&at)["exp"].as_i64(), Some(now + 120 + 600));

    let mut knobs = h.idp.knobs();
    knobs.clock_offset_ms = 720_000; // issued at +120 s, expires at +720 s
    h.idp.set_knobs(knobs).unwrap();
    assert_eq!(
        h.api("/api/resource", &at).await.status(),
        StatusCode::UNAUTHORIZED,
        "IdP time is past exp"
    );
}

#[tokio::test]
async fn absolute_grant_lifetime_and_refresh_ttl_end_refreshes() {
    let knobs = Knobs {
        grant_lifetime_ms: Some(3_600_000),
        refresh_ttl_ms: Some(600_000),
        ..Knobs::default()
    };
    let h = Harness::start(knobs).await;
    let rt0 = text(&h.mint(None).await, "refresh_token");
    h.clock.advance(Duration::from_secs(599));
    let rt1 = text(
        &h.refresh(&rt0).await.json().await.unwrap(),
        "refresh_token",
    );
    h.clock.advance(Duration::from_secs(601));
    assert_eq!(
        oauth_error(h.refresh(&rt1).await).await.1,
        "invalid_grant",
        "refresh TTL"
    );

    let rt = text(&h.mint(None).await, "refresh_token");
    h.clock.advance(Duration::from_secs(3_600));
    assert_eq!(
        oauth_error(h.refresh(&rt).await).await.1,
        "invalid_grant",
        "grant lifetime"
    );
    assert_eq!(h.idp.stats().invalid_grant, 2);
}

#[tokio::test]
async fn omit_refresh_token_on_refresh_keeps_the_old_one_valid() {
    let h = Harness::start(Knobs {
        omit_refresh_token_on_refresh: true,
        ..Knobs::default()
    })
    .await;
    let rt = text(&h.mint(None).await, "refresh_token");
    for _ in 0..3 {
        let response: Value = h.refresh(&rt).await.json().await.unwrap();
        assert!(response.get("refresh_token").is_none());
        assert!(response["access_token"].is_string());
    }
    assert_eq!(h.idp.stats().grants[0].generation, 3);
}

#[tokio::test]
async fn discovery_revocation_and_admin_routes() {
    let h = Harness::start(Knobs::default()).await;
    let discovery: Value = h
        .http
        .get(h.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(text(&discovery, "issuer"), h.idp.issuer());
    assert_eq!(text(&discovery, "token_endpoint"), h.idp.token_url());
    assert_eq!(text(&discovery, "revocation_endpoint"), h.idp.revoke_url());

    // RFC 7009: revoking a refresh token kills the grant; unknown tokens still get 200.
    let minted = h.mint(None).await;
    for token in [text(&minted, "refresh_token"), "unknown".to_owned()] {
        let response = h
            .http
            .post(h.idp.revoke_url())
            .basic_auth(ID, Some(SECRET))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(
        h.api("/api/resource", &text(&minted, "access_token"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );

    // Partial knob update over HTTP.
    let knobs: Knobs = h
        .http
        .put(h.url("/admin/knobs"))
        .json(&json!({"access_ttl_ms": 5_000, "retry_after_secs": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            knobs.access_ttl_ms,
            knobs.retry_after_secs,
            knobs.rotate_refresh_tokens
        ),
        (5_000, Some(3), true)
    );
    assert_eq!(h.idp.knobs(), knobs);
    let typo = h
        .http
        .put(h.url("/admin/knobs"))
        .json(&json!({"acces_ttl_ms": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(typo.status(), StatusCode::BAD_REQUEST);

    // Admin revocation.
    let second = h.mint(None).await;
    let id = text(&second, "grant_id");
    let revoked = h
        .http
        .post(h.url(&format!("/admin/grants/{id}/revoke")))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(
        oauth_error(h.refresh(&text(&second, "refresh_token")).await)
            .await
            .1,
        "invalid_grant"
    );
    let missing = h
        .http
        .post(h.url("/admin/grants/g99/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(h.idp.stats().grants_revoked, 2);
}

#[tokio::test]
async fn stats_add_up_over_http_and_library() {
    let h = Harness::start(Knobs::default()).await;
    let mut rt = text(&h.idp.mint_grant(None, None).unwrap(), "refresh_token");
    let mut at = String::new();
    for _ in 0..5 {
        let response: Value = h.refresh(&rt).await.json().await.unwrap();
        rt = text(&response, "refresh_token");
        at = text(&response, "access_token");
    }
    for _ in 0..4 {
        assert_eq!(h.api("/api/resource", &at).await.status(), StatusCode::OK);
    }
    assert_eq!(
        h.api("/api/resource", "nope").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(h.idp.mint_grant(Some("nobody"), None).is_err());

    let stats = h.stats().await;
    assert_eq!(stats, h.idp.stats());
    assert_eq!(stats.token_requests, 5);
    assert_eq!((stats.refresh_calls, stats.refresh_success), (5, 5));
    assert_eq!(
        (stats.api_ok, stats.api_unauthorized, stats.api_forbidden),
        (4, 1, 0)
    );
    assert_eq!((stats.grants_minted, stats.active_grants), (1, 1));
    assert_eq!(stats.grants[0].generation, 5);
    assert_eq!(stats.access_tokens_tracked, 6);
}

#[tokio::test]
async fn expired_tokens_are_swept() {
    let h = Harness::start(Knobs {
        access_ttl_ms: 1_000,
        ..Knobs::default()
    })
    .await;
    for _ in 0..10 {
        h.idp.mint_grant(None, None).unwrap();
    }
    assert_eq!(h.idp.stats().access_tokens_tracked, 10);
    h.clock.advance(Duration::from_secs(10));
    h.idp.mint_grant(None, None).unwrap();
    assert_eq!(h.idp.stats().access_tokens_tracked, 1);
}

#[tokio::test]
async fn many_concurrent_clients_and_graceful_shutdown() {
    let h = Harness::start(Knobs::default()).await;
    let at = text(&h.mint(None).await, "access_token");
    let url = h.idp.api_url();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (http, url, at) = (h.http.clone(), url.clone(), at.clone());
            tokio::spawn(async move {
                http.get(url)
                    .bearer_auth(at)
                    .send()
                    .await
                    .map(|r| r.status())
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), StatusCode::OK);
    }
    assert_eq!(h.idp.stats().api_ok, 200);
    let base = h.idp.base_url().to_owned();
    tokio::time::timeout(Duration::from_secs(5), h.idp.shutdown())
        .await
        .unwrap()
        .unwrap();
    assert!(
        h.http
            .get(format!("{base}/admin/stats"))
            .send()
            .await
            .is_err()
    );
}
