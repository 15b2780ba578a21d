//! A test broker: mock IdP, SQLite store in a temp dir, two credentials, two clients.

use crate::cred;
use std::collections::HashMap;
use std::sync::Arc;

use authkeeper_core::{
    Clock as _, CredentialConfig, ExpiryDefaults, Keeper, Store, SystemClock, TokenResponse,
};
use authkeeper_mock::{Knobs, MockConfig, MockIdp};
use authkeeper_server::auth::key_sha256;
use authkeeper_server::config::Permission;
use authkeeper_server::{Broker, BrokerConfig, ClientConfig, Listen, Metrics, ServerConfig};
use authkeeper_store::{KeySettings, SqliteStore};

/// The key of client `a`, allowed to use `crm` only.
pub const KEY_A: &str = "ak_test-key-a";
/// The key of client `b`, allowed to use everything.
pub const KEY_B: &str = "ak_test-key-b";
/// A key that may only scrape `/metrics`.
pub const KEY_OPS: &str = "ak_test_ops_key";

pub struct TestBroker {
    pub broker: Broker,
    pub idp: MockIdp,
    pub store: Arc<dyn Store>,
    pub url: String,
    pub http: reqwest::Client,
    pub _dir: tempfile::TempDir,
}

pub fn knobs(ttl_ms: u64) -> Knobs {
    Knobs {
        access_ttl_ms: ttl_ms,
        rotate_refresh_tokens: true,
        reuse_revokes_grant: true,
        ..Knobs::default()
    }
}

pub fn clients() -> Vec<ClientConfig> {
    vec![
        ClientConfig {
            name: "a".into(),
            key_sha256: key_sha256(KEY_A),
            credentials: vec!["crm".into()],
            sites: vec![],
            checkpoints: vec![],
            permissions: None,
        },
        ClientConfig {
            name: "b".into(),
            key_sha256: key_sha256(KEY_B),
            credentials: vec!["*".into()],
            sites: vec![],
            checkpoints: vec![],
            permissions: None,
        },
        ClientConfig {
            name: "ops".into(),
            key_sha256: key_sha256(KEY_OPS),
            credentials: vec!["*".into()],
            sites: vec![],
            checkpoints: vec![],
            permissions: Some(vec![Permission::Metrics]),
        },
    ]
}

pub fn credential(idp: &MockIdp) -> CredentialConfig {
    serde_json::from_value(serde_json::json!({
        "token_url": idp.token_url(),
        "client_id": "mock-client",
        "client_secret": "mock-secret",
        "upstream": idp.base_url(),
    }))
    .expect("credential config")
}

/// Starts the IdP and a broker with `server` settings (listen defaults to 127.0.0.1:0).
pub async fn start(knobs: Knobs, server: Option<ServerConfig>) -> TestBroker {
    let idp = MockIdp::start(MockConfig::default().with_knobs(knobs))
        .await
        .expect("mock idp");
    let dir = authkeeper_testkit::temp_dir();
    let settings = KeySettings::from_env(None);
    let (store, _) =
        SqliteStore::open_with_settings(dir.path().join("store.db"), &settings).expect("store");
    let store: Arc<dyn Store> = Arc::new(store);
    let now = SystemClock::new().now();
    for name in ["crm", "other"] {
        let grant = serde_json::to_vec(&idp.mint_grant(None, None).expect("grant")).expect("json");
        let tokens = TokenResponse::parse_tokens(&grant)
            .expect("tokens")
            .into_token_set(now, &ExpiryDefaults::default());
        authkeeper_core::store::import(&*store, &cred(name), &tokens, now)
            .await
            .expect("put");
    }
    let metrics = Arc::new(Metrics::new());
    let config = credential(&idp);
    let keeper = Keeper::builder(store.clone(), SystemClock::shared())
        .credential(cred("crm"), config.resolve("crm").expect("settings"))
        .credential(cred("other"), config.resolve("other").expect("settings"))
        .event_sink(metrics.clone())
        .build()
        .expect("keeper");
    let mut upstreams = HashMap::new();
    upstreams.insert(
        "crm".to_owned(),
        authkeeper_server::proxy::Upstream {
            headers: Vec::new(),
            egress: None,
            base: config.upstream.clone().expect("upstream"),
            inject: config.inject.clone(),
        },
    );
    let server = server.unwrap_or_else(|| ServerConfig {
        listen: Listen::Tcp("127.0.0.1:0".parse().expect("addr")),
        ..ServerConfig::default()
    });
    let broker = Broker::start(
        keeper,
        BrokerConfig {
            server,
            clients: clients(),
            upstreams,
            metrics: Some(metrics),
            heartbeat: true,
            readiness_probe: None,
            ..BrokerConfig::new(store.clone())
        },
    )
    .await
    .expect("broker");
    let url = broker.url();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    TestBroker {
        broker,
        idp,
        store,
        url,
        http,
        _dir: dir,
    }
}

impl TestBroker {
    pub fn get(&self, path: &str, key: Option<&str>) -> reqwest::RequestBuilder {
        let request = self.http.get(format!("{}{path}", self.url));
        match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&self) {
        for _ in 0..200 {
            if let Ok(response) = self.get("/readyz", None).send().await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("broker never became ready");
    }
}

/// Asserts a problem+json response and returns its body.
pub async fn problem(response: reqwest::Response, status: u16, slug: &str) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.expect("json body");
    assert_eq!(
        body["type"],
        format!("urn:authkeeper:problem:{slug}"),
        "{body}"
    );
    assert_eq!(body["status"], status);
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}
