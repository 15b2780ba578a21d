//! Re-authentication end to end: a refresh token revoked at the IdP mid-run puts the credential
//! in `needs_reauth` within one refresh attempt, the webhook receives a signed notice, `/token`
//! answers `needs-reauth`, `wait=` callers are released by a scripted re-login (an import through
//! the store, as `authkeeper import` in another process does), and workers continue from their
//! checkpoint.

use crate::cred;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authkeeper_core::{
    Clock as _, ExpiryDefaults, Keeper, Store, SystemClock, TokenResponse, TokenSet,
};
use authkeeper_login::reauth::{LoginReauthenticator, ReauthSettings};
use authkeeper_mock::{MockConfig, MockIdp};
use authkeeper_server::notify::{
    DELIVERY_HEADER, Notifier, NotifyConfig, SIGNATURE_HEADER, VerifyError, verify,
};
use authkeeper_server::{Broker, BrokerConfig, Listen, Metrics, ServerConfig};
use authkeeper_store::{KeySettings, SqliteStore};
use axum::body::Bytes;
use http::HeaderMap;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::common::{KEY_A, KEY_B, clients, credential, knobs, problem};

const WEBHOOK_SECRET: &str = "whsec-test-4f1c";
const ITEMS: u64 = 100;

/// One webhook delivery as received.
#[derive(Debug)]
struct Delivery {
    signature: Option<String>,
    id: Option<String>,
    body: Bytes,
}

/// A webhook receiver: every POST body with its signature and delivery headers.
async fn webhook() -> (String, mpsc::UnboundedReceiver<Delivery>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let attempts = Arc::new(Mutex::new(0u32));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let sender = sender.clone();
            let attempts = Arc::clone(&attempts);
            async move {
                // The first delivery fails: the notifier must retry.
                let first = {
                    let mut n = attempts.lock().unwrap();
                    *n += 1;
                    *n == 1
                };
                if first {
                    return http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let _ = sender.send(Delivery {
                    signature: header(SIGNATURE_HEADER),
                    id: header(DELIVERY_HEADER),
                    body,
                });
                http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), receiver)
}

struct Fixture {
    broker: Broker,
    idp: MockIdp,
    store: Arc<dyn Store>,
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

fn tokens_of(grant: &Value) -> TokenSet {
    TokenResponse::parse_tokens(&serde_json::to_vec(grant).unwrap())
        .unwrap()
        .into_token_set(SystemClock::new().now(), &ExpiryDefaults::default())
}

async fn start(hook_url: &str) -> (Fixture, String) {
    let idp = MockIdp::start(MockConfig::default().with_knobs(knobs(60_000)))
        .await
        .unwrap();
    let dir = authkeeper_testkit::temp_dir();
    let (store, _) =
        SqliteStore::open_with_settings(dir.path().join("store.db"), &KeySettings::from_env(None))
            .unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let grant = idp.mint_grant(None, None).unwrap();
    let grant_id = grant["grant_id"].as_str().unwrap().to_owned();
    let now = SystemClock::new().now();
    authkeeper_core::store::import(&*store, &cred("crm"), &tokens_of(&grant), now)
        .await
        .unwrap();
    let config = credential(&idp);
    let mut credentials = std::collections::BTreeMap::new();
    credentials.insert(cred("crm"), config.clone());
    let reauth =
        LoginReauthenticator::from_config(&credentials, ReauthSettings::default()).unwrap();
    let notify: NotifyConfig = serde_json::from_value(json!({
        "webhook_url": hook_url,
        "webhook_secret": WEBHOOK_SECRET,
        "retry_base": "50ms",
    }))
    .unwrap();
    let notifier = Notifier::start(&notify, HashSet::new(), SystemClock::shared()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let keeper = Keeper::builder(store.clone(), SystemClock::shared())
        .credential(cred("crm"), config.resolve("crm").unwrap())
        .event_sink(metrics.clone())
        .event_sink(notifier)
        .reauthenticator(Arc::new(reauth))
        .build()
        .unwrap();
    let mut upstreams = HashMap::new();
    upstreams.insert(
        "crm".to_owned(),
        authkeeper_server::proxy::Upstream {
            headers: Vec::new(),
            egress: None,
            base: config.upstream.clone().unwrap(),
            inject: config.inject.clone(),
        },
    );
    let broker = Broker::start(
        keeper,
        BrokerConfig {
            server: ServerConfig {
                listen: Listen::Tcp("127.0.0.1:0".parse().unwrap()),
                ..ServerConfig::default()
            },
            clients: clients(),
            upstreams,
            metrics: Some(metrics),
            heartbeat: true,
            readiness_probe: None,
            ..BrokerConfig::new(store.clone())
        },
    )
    .await
    .unwrap();
    let url = broker.url();
    (
        Fixture {
            broker,
            idp,
            store,
            url,
            http: reqwest::Client::new(),
            _dir: dir,
        },
        grant_id,
    )
}

/// How a worker ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Every item is processed.
    Done,
    /// The credential needs re-authentication: progress saved, exited cleanly.
    NeedsReauth,
}

/// A worker of a long task: resumes from the checkpoint, processes items one by one with a
/// token from the broker against the protected API, saves its progress after each item, and
/// exits cleanly on `needs-reauth`. `revoke_at` revokes the grant when that item is reached.
async fn worker(
    t: &Fixture,
    processed: &Mutex<Vec<u64>>,
    revoke_at: Option<(u64, &str)>,
) -> Outcome {
    let checkpoint = format!("{}/v1/checkpoints/a.crawl", t.url);
    let response = t
        .http
        .get(&checkpoint)
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    let mut next = match response.status().as_u16() {
        404 => 0,
        200 => response.json::<Value>().await.unwrap()["next"]
            .as_u64()
            .unwrap(),
        other => panic!("checkpoint GET answered {other}"),
    };
    while next < ITEMS {
        if let Some((at, grant)) = revoke_at
            && at == next
        {
            t.idp.revoke_grant(grant).unwrap();
        }
        let token = t
            .http
            .get(format!("{}/v1/credentials/crm/token", t.url))
            .bearer_auth(KEY_A)
            .send()
            .await
            .unwrap();
        if token.status() == 409 {
            return Outcome::NeedsReauth;
        }
        let token: Value = token.json().await.unwrap();
        let api = t
            .http
            .get(t.idp.api_url())
            .bearer_auth(token["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        if api.status() == 401 {
            // Report it: the broker refreshes once; a dead grant means needs-reauth.
            let rejected = t
                .http
                .post(format!("{}/v1/credentials/crm/rejected", t.url))
                .bearer_auth(KEY_A)
                .json(&json!({ "generation": token["generation"] }))
                .send()
                .await
                .unwrap();
            if rejected.status() == 409 {
                return Outcome::NeedsReauth;
            }
            continue; // retry the item with the new token
        }
        assert_eq!(api.status(), 200);
        processed.lock().unwrap().push(next);
        next += 1;
        let saved = t
            .http
            .put(&checkpoint)
            .bearer_auth(KEY_A)
            .json(&json!({ "next": next }))
            .send()
            .await
            .unwrap();
        assert_eq!(saved.status(), 200, "{:?}", saved.text().await);
    }
    Outcome::Done
}

/// Checks a delivery with [`verify`] and with the documented Python and Node examples, and that
/// a changed body, delivery id or secret, or a stale timestamp, fails.
fn assert_verifies(delivery: &Delivery) {
    let signature = delivery.signature.as_deref().expect("signed");
    let id = delivery.id.as_deref().expect("a delivery id");
    let secret = WEBHOOK_SECRET.as_bytes();
    let now = SystemClock::new().now().as_secs();
    assert_eq!(verify(secret, signature, id, &delivery.body, now), Ok(()));
    assert_eq!(
        verify(b"another secret", signature, id, &delivery.body, now),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        verify(secret, signature, "another-id", &delivery.body, now),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        verify(secret, signature, id, &delivery.body, now + 600),
        Err(VerifyError::Stale)
    );
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/webhooks");
    for (program, script) in [("python3", "verify.py"), ("node", "verify.mjs")] {
        for (body, expect_ok) in [(&delivery.body[..], true), (&b"{}"[..], false)] {
            let mut child = std::process::Command::new(program)
                .arg(examples.join(script))
                .env("AK_SECRET", WEBHOOK_SECRET)
                .env("AK_SIGNATURE", signature)
                .env("AK_DELIVERY", id)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("{program} must be installed (scripts/test does): {e}"));
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(body).unwrap();
            let status = child.wait().unwrap();
            assert_eq!(status.success(), expect_ok, "{program} {script}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_grant_notifies_and_wait_callers_resume_from_the_checkpoint() {
    let (hook_url, mut hooks) = webhook().await;
    let (t, grant_id) = start(&hook_url).await;
    let refreshes_before = t.idp.stats();
    let processed = Mutex::new(Vec::new());

    // The grant is revoked at the IdP in the middle of the run.
    let outcome = worker(&t, &processed, Some((40, &grant_id))).await;
    assert_eq!(outcome, Outcome::NeedsReauth);
    assert_eq!(processed.lock().unwrap().len(), 40);
    let stats = t.idp.stats();
    assert_eq!(
        stats.refresh_calls - refreshes_before.refresh_calls,
        1,
        "needs_reauth must follow one refresh attempt: {stats:?}"
    );
    assert_eq!(stats.invalid_grant - refreshes_before.invalid_grant, 1);

    // The webhook got a signed notice (after one failed delivery).
    let delivery = tokio::time::timeout(Duration::from_secs(10), hooks.recv())
        .await
        .expect("no webhook notice within 10 s")
        .expect("webhook channel");
    assert_verifies(&delivery);
    let body = delivery.body.clone();
    let notice: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(notice["event"], "needs_reauth");
    assert_eq!(notice["credential"], "crm");
    assert_eq!(notice["login_hint"], "authkeeper login crm");
    assert!(
        notice["reason"].as_str().unwrap().contains("invalid_grant"),
        "{notice}"
    );
    assert!(notice["at"].is_string());
    assert!(!String::from_utf8_lossy(&body).contains(WEBHOOK_SECRET));

    // Status shows the reason and the login hint; /token says needs-reauth.
    let status: Value = t
        .http
        .get(format!("{}/v1/credentials/crm", t.url))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "needs_reauth", "{status}");
    assert_eq!(status["login_hint"], "authkeeper login crm");
    assert!(
        status["reason"].as_str().unwrap().contains("invalid_grant"),
        "{status}"
    );
    let response = t
        .http
        .get(format!("{}/v1/credentials/crm/token", t.url))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    let body = problem(response, 409, "needs-reauth").await;
    assert_eq!(body["login_hint"], "authkeeper login crm");

    // A short wait times out with the same problem.
    let started = std::time::Instant::now();
    let response = t
        .http
        .get(format!("{}/v1/credentials/crm/token?wait=1", t.url))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    problem(response, 409, "needs-reauth").await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    // More than the cap is refused.
    let response = t
        .http
        .get(format!("{}/v1/credentials/crm/token?wait=301", t.url))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    problem(response, 400, "invalid-request").await;

    // Callers waiting for the re-login.
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let request = t
                .http
                .get(format!("{}/v1/credentials/crm/token?wait=60", t.url))
                .bearer_auth(KEY_B);
            tokio::spawn(async move { request.send().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "waiters returned early"
    );

    // The scripted re-login: a new grant imported through the store (another process).
    let old_generation = status["generation"].as_u64().unwrap();
    let grant = t.idp.mint_grant(None, None).unwrap();
    let generation = authkeeper_core::store::import(
        &*t.store,
        &cred("crm"),
        &tokens_of(&grant),
        SystemClock::new().now(),
    )
    .await
    .unwrap();
    assert!(generation > old_generation);
    for waiter in waiters {
        let response = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("waiter not released within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 200);
        let token: Value = response.json().await.unwrap();
        assert_eq!(token["generation"], generation);
    }

    // The webhook hears that the credential works again.
    let delivery = tokio::time::timeout(Duration::from_secs(10), hooks.recv())
        .await
        .expect("no recovered notice within 10 s")
        .expect("webhook channel");
    assert_verifies(&delivery);
    let notice: Value = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!(notice["event"], "recovered", "{notice}");
    assert_eq!(notice["credential"], "crm");

    // A new worker continues from the checkpoint, not from the start.
    let outcome = worker(&t, &processed, None).await;
    assert_eq!(outcome, Outcome::Done);
    let processed = processed.into_inner().unwrap();
    assert_eq!(
        processed,
        (0..ITEMS).collect::<Vec<_>>(),
        "items redone or skipped"
    );
    let status: Value = t
        .http
        .get(format!("{}/v1/credentials/crm", t.url))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "valid", "{status}");
    assert!(status.get("login_hint").is_none());
    t.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_sealed_limited_and_per_client() {
    let (hook_url, _hooks) = webhook().await;
    let (t, _) = start(&hook_url).await;
    let url = |task: &str| format!("{}/v1/checkpoints/{task}", t.url);
    let secret = "cursor-secret-7d2e";
    // Client a may use its own tasks, not b's nor arbitrary ones.
    for (task, key, status) in [
        ("a", KEY_A, 200),
        ("a.one", KEY_A, 200),
        ("a-two", KEY_A, 403), // a different client could be named `a-two`
        ("ab", KEY_A, 403),
        ("b.x", KEY_A, 403),
        ("b.x", KEY_B, 200),
    ] {
        let response = t
            .http
            .put(url(task))
            .bearer_auth(key)
            .json(&json!({ "cursor": secret }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "PUT {task}");
    }
    let response = t
        .http
        .get(url("a.one"))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"1\"");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "cursor": secret })
    );
    let response = t
        .http
        .get(url("b.x"))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    problem(response, 403, "forbidden").await;
    let response = t
        .http
        .get(url("a.none"))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    problem(response, 404, "not-found").await;
    let response = t.http.get(url("a.one")).send().await.unwrap();
    problem(response, 401, "unauthorized").await;
    // Not JSON, too large, bad names.
    let response = t
        .http
        .put(url("a.one"))
        .bearer_auth(KEY_A)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    problem(response, 400, "invalid-request").await;
    let response = t
        .http
        .put(url("a.one"))
        .bearer_auth(KEY_A)
        .json(&json!({ "blob": "x".repeat(70 * 1024) }))
        .send()
        .await
        .unwrap();
    problem(response, 413, "payload-too-large").await;
    let response = t
        .http
        .get(url("a%2F.."))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    problem(response, 400, "invalid-request").await;
    // Sealed at rest: the store file never holds the plaintext.
    let db = std::fs::read(t._dir.path().join("store.db")).unwrap();
    let wal = std::fs::read(t._dir.path().join("store.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "checkpoint plaintext found in the store file"
        );
    }
    // Delete.
    let response = t
        .http
        .delete(url("a.one"))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = t
        .http
        .delete(url("a.one"))
        .bearer_auth(KEY_A)
        .send()
        .await
        .unwrap();
    problem(response, 404, "not-found").await;
    t.broker.shutdown().await.unwrap();
}
