//! Session routes over HTTP: leases, heartbeats, releases, listing, key rules, problems, metrics,
//! and 100 concurrent workers through the broker never sharing a session.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use authkeeper_core::{Keeper, MemoryStore, Store, SystemClock};
use authkeeper_server::auth::key_sha256;
use authkeeper_server::config::Permission;
use authkeeper_server::{Broker, BrokerConfig, ClientConfig, Listen, ServerConfig};
use authkeeper_session::{SessionPool, SiteConfig, StateCookie, StorageState};
use serde_json::{Value, json};

use super::common::problem;
use super::openapi::{conforms, document};

const WORKER: &str = "ak_sessions-worker";
const OUTSIDER: &str = "ak_sessions-outsider";
const OPS: &str = "ak_sessions-ops";

fn state(account: &str) -> StorageState {
    let mut cookie = StateCookie::new("sid", format!("SECRET-COOKIE-{account}"), "127.0.0.1", "/");
    cookie.http_only = true;
    StorageState {
        cookies: vec![cookie],
        ..StorageState::default()
    }
}

struct Sessions {
    broker: Broker,
    memory: Arc<MemoryStore>,
    pool: Arc<SessionPool>,
    url: String,
    http: reqwest::Client,
}

async fn start(accounts: usize) -> Sessions {
    let names: Vec<String> = (0..accounts)
        .map(|i| format!("{{ name = \"a{i}\" }}"))
        .collect();
    let site: SiteConfig = toml::from_str(&format!(
        "origin = \"http://127.0.0.1:9\"\naccounts = [{}]\n[pool]\nmax_usage = 0\n",
        names.join(", ")
    ))
    .expect("site");
    let memory = Arc::new(MemoryStore::new());
    let store: Arc<dyn Store> = memory.clone();
    let pool = Arc::new(
        SessionPool::new(
            store.clone(),
            SystemClock::shared(),
            [("portal".parse().expect("site name"), site)],
        )
        .expect("pool"),
    );
    for i in 0..accounts {
        let account = format!("a{i}");
        pool.import("portal", &account, state(&account))
            .await
            .expect("import");
    }
    let keeper = Keeper::builder(store.clone(), SystemClock::shared())
        .build()
        .expect("keeper");
    let client = |name: &str, key: &str, sites: &[&str]| ClientConfig {
        name: name.into(),
        key_sha256: key_sha256(key),
        credentials: vec![],
        sites: sites.iter().map(|s| s.to_string()).collect(),
        checkpoints: vec![],
        permissions: None,
    };
    let broker = Broker::start(
        keeper,
        BrokerConfig {
            server: ServerConfig {
                listen: Listen::Tcp("127.0.0.1:0".parse().unwrap()),
                ..ServerConfig::default()
            },
            clients: vec![
                client("worker", WORKER, &["portal"]),
                client("outsider", OUTSIDER, &[]),
                ClientConfig {
                    permissions: Some(vec![Permission::Metrics]),
                    ..client("ops", OPS, &[])
                },
            ],
            sessions: Some(pool.clone()),
            ..BrokerConfig::new(store.clone())
        },
    )
    .await
    .expect("broker");
    let url = broker.url();
    Sessions {
        broker,
        memory,
        pool,
        url,
        http: reqwest::Client::new(),
    }
}

impl Sessions {
    async fn post(&self, path: &str, key: &str, body: Option<Value>) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("send")
    }
}

#[tokio::test]
async fn lease_heartbeat_release_and_the_problems_around_them() {
    let t = start(2).await;
    let doc = document();

    let first = t
        .post(
            "/v1/sessions/portal/lease",
            WORKER,
            Some(json!({"lease_ttl": 60})),
        )
        .await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["cache-control"], "no-store");
    let first: Value = first.json().await.unwrap();
    conforms(&doc, "SessionLease", &first);
    assert!(
        first["storage_state"]["cookies"][0]["value"]
            .as_str()
            .unwrap()
            .starts_with("SECRET-COOKIE-")
    );

    let second: Value = t
        .post("/v1/sessions/portal/lease", WORKER, None)
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(
        first["session_id"], second["session_id"],
        "two workers, two sessions"
    );
    let full = t.post("/v1/sessions/portal/lease", WORKER, None).await;
    let retry_after: u64 = full.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry_after), "{retry_after}");
    conforms(
        &doc,
        "Problem",
        &problem(full, 503, "no-session-available").await,
    );

    // Key rules: a key without the site, and an unknown site, look alike.
    problem(
        t.post("/v1/sessions/portal/lease", OUTSIDER, None).await,
        403,
        "forbidden",
    )
    .await;
    problem(
        t.post("/v1/sessions/nosuch/lease", WORKER, None).await,
        403,
        "forbidden",
    )
    .await;
    problem(
        t.post("/v1/sessions/portal/lease", "ak_wrong", None).await,
        401,
        "unauthorized",
    )
    .await;
    let lease_id = first["lease_id"].as_str().unwrap();
    problem(
        t.post(
            &format!("/v1/leases/{lease_id}/release"),
            OUTSIDER,
            Some(json!({"outcome": "ok"})),
        )
        .await,
        404,
        "unknown-lease",
    )
    .await;
    problem(
        t.post("/v1/leases/garbage/heartbeat", WORKER, None).await,
        404,
        "unknown-lease",
    )
    .await;
    problem(
        t.post(
            "/v1/sessions/portal/lease",
            WORKER,
            Some(json!({"account": "nobody"})),
        )
        .await,
        400,
        "invalid-request",
    )
    .await;
    problem(
        t.post(
            &format!("/v1/leases/{lease_id}/release"),
            WORKER,
            Some(json!({"outcome": "meh"})),
        )
        .await,
        400,
        "invalid-request",
    )
    .await;

    let renewed: Value = t
        .post(
            &format!("/v1/leases/{lease_id}/heartbeat"),
            WORKER,
            Some(json!({"lease_ttl": 120})),
        )
        .await
        .json()
        .await
        .unwrap();
    conforms(&doc, "LeaseRenewed", &renewed);

    // Release with the browser's new state: stored, and the next lease of it gets it.
    let mut updated = state("a-new");
    updated.cookies[0].name = "sid2".into();
    let released = t
        .post(&format!("/v1/leases/{lease_id}/release"), WORKER, Some(json!({"outcome": "ok", "storage_state": serde_json::from_str::<Value>(&updated.to_json()).unwrap()})))
        .await;
    assert_eq!(released.status(), 200);
    let released: Value = released.json().await.unwrap();
    conforms(&doc, "ReleaseSummary", &released);
    assert_eq!(released["state"], "active");
    let session_id = first["session_id"].as_str().unwrap();
    assert_eq!(t.pool.export("portal", session_id).await.unwrap(), updated);
    problem(
        t.post(
            &format!("/v1/leases/{lease_id}/release"),
            WORKER,
            Some(json!({"outcome": "ok"})),
        )
        .await,
        409,
        "lease-lost",
    )
    .await;

    // Listing: metadata only, filtered to the key's sites.
    let list = t
        .http
        .get(format!("{}/v1/sessions", t.url))
        .bearer_auth(WORKER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !list.contains("SECRET-COOKIE"),
        "no cookie value in a listing: {list}"
    );
    let list: Value = serde_json::from_str(&list).unwrap();
    conforms(&doc, "SessionList", &list);
    for item in list["sessions"].as_array().unwrap() {
        conforms(&doc, "SessionSummary", item);
    }
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);
    let theirs: Value = t
        .http
        .get(format!("{}/v1/sessions", t.url))
        .bearer_auth(OUTSIDER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["sessions"].as_array().unwrap().len(), 0);

    // A scrape reads counters kept in memory: never the store (no session is decrypted).
    let reads_before = t.memory.reads();
    let scrape = || async {
        t.http
            .get(format!("{}/metrics", t.url))
            .bearer_auth(OPS)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let _ = scrape().await;
    let metrics = scrape().await;
    assert_eq!(t.memory.reads(), reads_before, "a scrape read the store");
    assert!(
        metrics.contains("authkeeper_session_events_total{event=\"lease\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authkeeper_session_events_total{event=\"exhausted\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authkeeper_sessions{site=\"portal\",state=\"active\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("authkeeper_sessions{site=\"portal\",state=\"leased\"} 1"),
        "{metrics}"
    );
    t.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_http_workers_never_share_a_session() {
    let t = Arc::new(start(10).await);
    let held: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut workers = Vec::new();
    for worker in 0..100u64 {
        let t = t.clone();
        let held = held.clone();
        workers.push(tokio::spawn(async move {
            let mut done = 0;
            while done < 3 {
                let response = t.post("/v1/sessions/portal/lease", WORKER, None).await;
                if response.status() == 503 {
                    tokio::time::sleep(std::time::Duration::from_millis(5 + worker % 10)).await;
                    continue;
                }
                assert_eq!(response.status(), 200);
                let lease: Value = response.json().await.unwrap();
                let session = lease["session_id"].as_str().unwrap().to_owned();
                assert!(
                    held.lock().unwrap().insert(session.clone()),
                    "{session} leased twice at once"
                );
                tokio::task::yield_now().await;
                assert!(held.lock().unwrap().remove(&session));
                let released = t
                    .post(
                        &format!("/v1/leases/{}/release", lease["lease_id"].as_str().unwrap()),
                        WORKER,
                        Some(json!({"outcome": "ok"})),
                    )
                    .await;
                assert_eq!(released.status(), 200);
                done += 1;
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let uses: u32 = t
        .pool
        .list(None)
        .await
        .unwrap()
        .iter()
        .map(|s| s.usage_count)
        .sum();
    assert_eq!(uses, 300);
}
