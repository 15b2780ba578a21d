//! `GET /v1/credentials` at scale: pages in name order with an opaque cursor, filters by
//! provider, label and state, and client keys scoped by `provider:` and `label:`.

use std::collections::HashMap;
use std::sync::Arc;

use authkeeper_core::{Clock as _, ExpiryDefaults, Keeper, Store, SystemClock, TokenResponse};
use authkeeper_mock::{MockConfig, MockIdp};
use authkeeper_server::auth::key_sha256;
use authkeeper_server::{Broker, BrokerConfig, ClientConfig, CredentialTags, Listen, ServerConfig};
use authkeeper_store::{KeySettings, SqliteStore};

use super::common::{credential, knobs, problem};
use crate::cred;

const ALL: &str = "ak_listing-all";
const TENANT_1: &str = "ak_listing-tenant-1";
const CRM: &str = "ak_listing-crm";
const COUNT: usize = 250;

fn client(name: &str, key: &str, credentials: &[&str]) -> ClientConfig {
    ClientConfig {
        name: name.into(),
        key_sha256: key_sha256(key),
        credentials: credentials.iter().map(|c| c.to_string()).collect(),
        sites: vec![],
        checkpoints: vec![],
        permissions: None,
    }
}

/// 250 credentials `c000`..`c249` (even ones of provider `crm`, label `tenant` = i mod 3), all
/// stored except `c249` (needs re-authentication).
async fn start() -> (Broker, MockIdp, tempfile::TempDir) {
    let idp = MockIdp::start(MockConfig::default().with_knobs(knobs(600_000)))
        .await
        .expect("mock idp");
    let dir = authkeeper_testkit::temp_dir();
    let (store, _) =
        SqliteStore::open_with_settings(dir.path().join("store.db"), &KeySettings::from_env(None))
            .expect("store");
    let store: Arc<dyn Store> = Arc::new(store);
    let now = SystemClock::new().now();
    let config = credential(&idp);
    let mut builder = Keeper::builder(store.clone(), SystemClock::shared());
    let mut tags = HashMap::new();
    for i in 0..COUNT {
        let name = format!("c{i:03}");
        if i < COUNT - 1 {
            let grant =
                serde_json::to_vec(&idp.mint_grant(None, None).expect("grant")).expect("json");
            let tokens = TokenResponse::parse_tokens(&grant)
                .expect("tokens")
                .into_token_set(now, &ExpiryDefaults::default());
            authkeeper_core::store::import(&*store, &cred(&name), &tokens, now)
                .await
                .expect("put");
        }
        builder = builder.credential(cred(&name), config.resolve(&name).expect("settings"));
        tags.insert(
            name,
            CredentialTags {
                provider: (i % 2 == 0).then(|| "crm".to_owned()),
                labels: [("tenant".to_owned(), (i % 3).to_string())].into(),
            },
        );
    }
    let keeper = builder.build().expect("keeper");
    let broker = Broker::start(
        keeper,
        BrokerConfig {
            server: ServerConfig {
                listen: Listen::Tcp("127.0.0.1:0".parse().expect("addr")),
                ..ServerConfig::default()
            },
            clients: vec![
                client("all", ALL, &["*"]),
                client("tenant-1", TENANT_1, &["label:tenant=1"]),
                client("crm", CRM, &["provider:crm"]),
            ],
            credential_tags: tags,
            ..BrokerConfig::new(store.clone())
        },
    )
    .await
    .expect("broker");
    (broker, idp, dir)
}

/// Every page of `query` for `key`: the names, and how many pages it took.
async fn all_pages(broker: &Broker, key: &str, query: &str) -> (Vec<String>, usize) {
    let http = reqwest::Client::new();
    let mut names = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/credentials?{query}", broker.url());
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: serde_json::Value = http
            .get(url)
            .bearer_auth(key)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        pages += 1;
        for credential in page["credentials"].as_array().expect("array") {
            names.push(credential["name"].as_str().expect("name").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (names, pages),
        }
        assert!(pages < 100, "pages never end");
    }
}

#[tokio::test]
async fn pages_filters_and_scopes() {
    let (broker, _idp, _dir) = start().await;
    let expected = |keep: &dyn Fn(usize) -> bool| -> Vec<String> {
        (0..COUNT)
            .filter(|i| keep(*i))
            .map(|i| format!("c{i:03}"))
            .collect()
    };

    let (names, pages) = all_pages(&broker, ALL, "limit=100").await;
    assert_eq!(names, expected(&|_| true), "every name once, in order");
    assert_eq!(pages, 3);
    let (names, _) = all_pages(&broker, ALL, "limit=1000").await;
    assert_eq!(names.len(), COUNT);

    let (names, _) = all_pages(&broker, ALL, "provider=crm&limit=40").await;
    assert_eq!(names, expected(&|i| i % 2 == 0));
    let (names, _) = all_pages(&broker, ALL, "label=tenant=2").await;
    assert_eq!(names, expected(&|i| i % 3 == 2));
    let (names, _) = all_pages(&broker, ALL, "label=tenant").await;
    assert_eq!(names.len(), COUNT);
    let (names, _) = all_pages(&broker, ALL, "state=needs_reauth").await;
    assert_eq!(names, ["c249"]);
    let (names, _) = all_pages(&broker, ALL, "state=valid&provider=crm&label=tenant=0").await;
    assert_eq!(names, expected(&|i| i % 6 == 0 && i < COUNT - 1));

    // Scoped keys see, list and use only what their scope names.
    let (names, _) = all_pages(&broker, TENANT_1, "limit=7").await;
    assert_eq!(names, expected(&|i| i % 3 == 1));
    let (names, _) = all_pages(&broker, CRM, "").await;
    assert_eq!(names, expected(&|i| i % 2 == 0));
    let http = reqwest::Client::new();
    let token = |key: &'static str, name: &'static str| {
        http.get(format!("{}/v1/credentials/{name}/token", broker.url()))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(token(TENANT_1, "c001").await.expect("send").status(), 200);
    problem(
        token(TENANT_1, "c002").await.expect("send"),
        403,
        "forbidden",
    )
    .await;
    assert_eq!(token(CRM, "c002").await.expect("send").status(), 200);
    problem(token(CRM, "c001").await.expect("send"), 403, "forbidden").await;

    // Bad input is a clear 400.
    for query in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "cursor=%%%",
        "cursor=YSBi",
        "state=sleepy",
    ] {
        let response = http
            .get(format!("{}/v1/credentials?{query}", broker.url()))
            .bearer_auth(ALL)
            .send()
            .await
            .expect("send");
        problem(response, 400, "invalid-request").await;
    }
}
