//! Connections through the API: created from a provider with a token response, used, listed
//! by label, changed, found by a second broker on the same store, deleted; permissions and
//! scopes of the keys that write them; bad input.

use std::collections::HashMap;
use std::sync::Arc;

use authkeeper_core::{Clock as _, ExpiryDefaults, Keeper, Store, SystemClock, TokenResponse};
use authkeeper_mock::{MockConfig, MockIdp};
use authkeeper_server::auth::key_sha256;
use authkeeper_server::config::Permission;
use authkeeper_server::{Broker, BrokerConfig, ClientConfig, Listen, ServerConfig};
use authkeeper_store::{KeySettings, SqliteStore};
use serde_json::{Value, json};

use super::common::{credential, knobs, problem};
use crate::cred;

const WRITER: &str = "ak_connections-writer";
const TENANT_1: &str = "ak_connections-tenant-1";
const READER: &str = "ak_connections-reader";

fn client(name: &str, key: &str, credentials: &[&str], write: bool) -> ClientConfig {
    let mut permissions = vec![Permission::Token, Permission::Proxy];
    if write {
        permissions.push(Permission::CredentialsWrite);
    }
    ClientConfig {
        name: name.into(),
        key_sha256: key_sha256(key),
        credentials: credentials.iter().map(|c| c.to_string()).collect(),
        sites: vec![],
        checkpoints: vec![],
        permissions: Some(permissions),
    }
}

/// A broker over `store` with provider `mock` and one configured credential `crm`.
async fn broker(idp: &MockIdp, store: Arc<dyn Store>) -> Broker {
    let config = credential(idp);
    let keeper = Keeper::builder(store.clone(), SystemClock::shared())
        .credential(cred("crm"), config.resolve("crm").expect("settings"))
        .build()
        .expect("keeper");
    let providers = HashMap::from([(
        "mock".to_owned(),
        Arc::new(config.resolve("mock").expect("provider")),
    )]);
    Broker::start(
        keeper,
        BrokerConfig {
            server: ServerConfig {
                listen: Listen::Tcp("127.0.0.1:0".parse().expect("addr")),
                ..ServerConfig::default()
            },
            clients: vec![
                client("writer", WRITER, &["*"], true),
                client("tenant-1", TENANT_1, &["label:tenant=1"], true),
                client("reader", READER, &["*"], false),
            ],
            providers,
            provider_upstreams: HashMap::from([(
                "mock".to_owned(),
                authkeeper_server::upstream_of("mock", &config)
                    .expect("upstream")
                    .expect("the provider has one"),
            )]),
            ..BrokerConfig::new(store)
        },
    )
    .await
    .expect("broker")
}

struct Api {
    http: reqwest::Client,
    url: String,
}

impl Api {
    async fn send(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("send")
    }

    async fn names(&self, query: &str) -> Vec<String> {
        let list: Value = self
            .send("GET", &format!("/v1/credentials?{query}"), WRITER, None)
            .await
            .json()
            .await
            .expect("json");
        list["credentials"]
            .as_array()
            .expect("array")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

#[tokio::test]
async fn connections_are_created_used_changed_shared_and_deleted() {
    let idp = MockIdp::start(MockConfig::default().with_knobs(knobs(600_000)))
        .await
        .expect("mock idp");
    let dir = authkeeper_testkit::temp_dir();
    let (store, _) =
        SqliteStore::open_with_settings(dir.path().join("store.db"), &KeySettings::from_env(None))
            .expect("store");
    let store: Arc<dyn Store> = Arc::new(store);
    // The configured credential has tokens too.
    let now = SystemClock::new().now();
    let grant = serde_json::to_vec(&idp.mint_grant(None, None).expect("grant")).expect("json");
    let tokens = TokenResponse::parse_tokens(&grant)
        .expect("tokens")
        .into_token_set(now, &ExpiryDefaults::default());
    authkeeper_core::store::import(&*store, &cred("crm"), &tokens, now)
        .await
        .expect("put");
    let first = broker(&idp, store.clone()).await;
    let api = Api {
        http: reqwest::Client::new(),
        url: first.url(),
    };
    let grant = || serde_json::to_value(idp.mint_grant(None, None).expect("grant")).expect("json");

    let created = api
        .send(
            "POST",
            "/v1/credentials",
            WRITER,
            Some(json!({"name": "u1", "provider": "mock", "labels": {"tenant": "1"}, "token_response": grant()})),
        )
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("json");
    assert_eq!(created["state"], "valid");
    assert_eq!(created["generation"], 1);
    assert!(!created.to_string().contains("access_token"), "{created}");
    let token = api
        .send("GET", "/v1/credentials/u1/token", WRITER, None)
        .await;
    assert_eq!(token.status(), 200);

    // Bad input: nothing is created.
    let duplicate = api
        .send(
            "POST",
            "/v1/credentials",
            WRITER,
            Some(json!({"name": "u1", "provider": "mock"})),
        )
        .await;
    problem(duplicate, 409, "already-exists").await;
    let configured = api
        .send(
            "POST",
            "/v1/credentials",
            WRITER,
            Some(json!({"name": "crm", "provider": "mock"})),
        )
        .await;
    problem(configured, 409, "already-exists").await;
    for body in [
        json!({"name": "u2", "provider": "nope"}),
        json!({"name": "u2", "provider": "mock", "token_response": {"foo": 1}}),
        json!({"name": "u 2", "provider": "mock"}),
        json!({"name": "u2", "provider": "mock", "labels": {"bad key": "x"}}),
        json!({"name": "u2", "provider": "mock", "scopes": ["a b"]}),
        json!({"name": "u2", "provider": "mock", "surprise": true}),
    ] {
        let response = api
            .send("POST", "/v1/credentials", WRITER, Some(body))
            .await;
        problem(response, 400, "invalid-request").await;
    }
    problem(
        api.send("GET", "/v1/credentials/u2", WRITER, None).await,
        403,
        "forbidden",
    )
    .await;

    // Permissions and scopes of the writing key.
    let denied = api
        .send(
            "POST",
            "/v1/credentials",
            READER,
            Some(json!({"name": "u3", "provider": "mock"})),
        )
        .await;
    problem(denied, 403, "forbidden").await;
    let outside = api
        .send(
            "POST",
            "/v1/credentials",
            TENANT_1,
            Some(json!({"name": "u3", "provider": "mock", "labels": {"tenant": "2"}})),
        )
        .await;
    problem(outside, 403, "forbidden").await;
    let inside = api
        .send(
            "POST",
            "/v1/credentials",
            TENANT_1,
            Some(json!({"name": "u3", "provider": "mock", "labels": {"tenant": "1"}, "token_response": grant()})),
        )
        .await;
    assert_eq!(inside.status(), 201);
    // The injecting proxy serves a connection through its provider's upstream.
    let proxied = api
        .send("GET", "/proxy/u3/api/resource", WRITER, None)
        .await;
    assert_eq!(proxied.status(), 200, "through the provider's upstream");
    assert_eq!(api.names("provider=mock").await, ["u1", "u3"]);
    assert_eq!(api.names("label=tenant=1").await, ["u1", "u3"]);

    // Change labels: the listing and the scoped key follow.
    let changed = api
        .send(
            "PATCH",
            "/v1/credentials/u1",
            WRITER,
            Some(json!({"labels": {"tenant": "3"}})),
        )
        .await;
    assert_eq!(changed.status(), 200);
    assert_eq!(api.names("label=tenant=3").await, ["u1"]);
    problem(
        api.send("GET", "/v1/credentials/u1/token", TENANT_1, None)
            .await,
        403,
        "forbidden",
    )
    .await;
    let config_change = api
        .send(
            "PATCH",
            "/v1/credentials/crm",
            WRITER,
            Some(json!({"labels": {"a": "b"}})),
        )
        .await;
    problem(config_change, 409, "already-exists").await;

    // A second broker on the same store finds the connections: at start-up, and on first use
    // of one created after it started.
    let second = broker(&idp, store.clone()).await;
    let replica = Api {
        http: reqwest::Client::new(),
        url: second.url(),
    };
    let late = api
        .send(
            "POST",
            "/v1/credentials",
            WRITER,
            Some(json!({"name": "u4", "provider": "mock", "token_response": grant()})),
        )
        .await;
    assert_eq!(late.status(), 201);
    for name in ["u1", "u4"] {
        let token = replica
            .send(
                "GET",
                &format!("/v1/credentials/{name}/token"),
                WRITER,
                None,
            )
            .await;
        assert_eq!(token.status(), 200, "{name} on the second broker");
    }

    // Delete: gone for everyone who asks the first broker; the name can be used again.
    let deleted = api.send("DELETE", "/v1/credentials/u1", WRITER, None).await;
    assert_eq!(deleted.status(), 204);
    problem(
        api.send("GET", "/v1/credentials/u1/token", WRITER, None)
            .await,
        403,
        "forbidden",
    )
    .await;
    assert!(store.load(&cred("u1")).await.expect("load").is_none());
    let again = api
        .send(
            "POST",
            "/v1/credentials",
            WRITER,
            Some(json!({"name": "u1", "provider": "mock"})),
        )
        .await;
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["state"], "needs_reauth", "no tokens yet: {again}");
    problem(
        api.send("DELETE", "/v1/credentials/crm", WRITER, None)
            .await,
        409,
        "already-exists",
    )
    .await;
}
