//! Browser-session records in Redis beyond the conformance suite: the key layout, no plaintext
//! in any Redis value, site/id binding of sealed values, two replicas racing, and the memory a
//! record takes. Each test starts its own redis-server.

use std::sync::Arc;

use authkeeper_core::store::SESSION_KIND;
use authkeeper_core::{Store, StoreError};
use authkeeper_store::{Keyring, RedisStore, SealKey};

use crate::common::{contains, key, realistic_storage_state};
use crate::redis_server::RedisServer;

async fn connect(server: &RedisServer, prefix: &str) -> RedisStore {
    RedisStore::connect(&server.url(), prefix, Keyring::new(key(1)))
        .await
        .expect("connect to redis")
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

#[tokio::test]
async fn session_records_are_sealed_and_bound_to_site_and_id() {
    let server = RedisServer::start();
    let store = connect(&server, "ak:").await;
    for (site, id) in [("shop", "s1"), ("shop", "s2"), ("mail", "s1")] {
        store
            .compare_and_put_session(site, id, 0, &realistic_storage_state(site))
            .await
            .expect("create");
    }
    assert_eq!(store.session_key("shop", "s1"), "ak:{sess:shop}:s1");
    let mut conn = raw(&server).await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("ak:*")
        .query_async(&mut conn)
        .await
        .expect("keys");
    keys.sort();
    assert_eq!(
        keys,
        [
            "ak:key-check",
            "ak:session-sites",
            "ak:{sess:mail}",
            "ak:{sess:mail}:s1",
            "ak:{sess:shop}",
            "ak:{sess:shop}:s1",
            "ak:{sess:shop}:s2",
        ]
    );
    // No plaintext in any key, in any form Redis holds it.
    for key in &keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("dump");
        assert!(
            !contains(&dump, b"PLANTED-SESSION-"),
            "session plaintext in {key}"
        );
    }
    let sealed: Vec<u8> = redis::cmd("HGET")
        .arg("ak:{sess:shop}:s1")
        .arg("sealed")
        .query_async(&mut conn)
        .await
        .expect("hget");
    let ring = Keyring::new(key(1));
    assert!(ring.open(SESSION_KIND, "shop/s1", &sealed).is_ok());
    assert!(ring.open(SESSION_KIND, "mail/s1", &sealed).is_err());

    // Copied to another site or id, it does not open.
    for target in ["ak:{sess:mail}:s1", "ak:{sess:shop}:s2"] {
        let _: () = redis::cmd("HSET")
            .arg(target)
            .arg("sealed")
            .arg(&sealed)
            .query_async(&mut conn)
            .await
            .expect("hset");
    }
    for (site, id) in [("mail", "s1"), ("shop", "s2")] {
        match store.load_session(site, id).await {
            Err(StoreError::Decrypt { kind, name, reason }) => {
                assert_eq!(
                    (kind, name.as_str()),
                    (SESSION_KIND, &*format!("{site}/{id}"))
                );
                assert!(!reason.contains("PLANTED-SESSION-"));
            }
            other => panic!("{site}/{id}: expected a decrypt error, got {other:?}"),
        }
    }
    assert!(
        store
            .load_session("shop", "s1")
            .await
            .expect("load")
            .is_some()
    );
    // Deleting the last record of a site unlists the site (its index set is gone).
    assert!(store.delete_session("mail", "s1", 0).await.expect("delete"));
    assert_eq!(store.list_session_sites().await.expect("sites"), ["shop"]);
}

/// Two replicas (two connections) race read-modify-write increments: none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_lose_no_update() {
    let server = RedisServer::start();
    let a = connect(&server, "ak:").await;
    let b = connect(&server, "ak:").await;
    a.compare_and_put_session("race", "s", 0, br#"{"counter":0}"#)
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store: Arc<dyn Store> = Arc::new(if i % 2 == 0 { a.clone() } else { b.clone() });
        tasks.push(tokio::spawn(async move {
            loop {
                let current = store
                    .load_session("race", "s")
                    .await
                    .expect("load")
                    .expect("stored");
                let value: serde_json::Value = serde_json::from_slice(&current.data).expect("json");
                let next = serde_json::json!({
                    "counter": value["counter"].as_u64().expect("counter") + 1
                });
                if store
                    .compare_and_put_session(
                        "race",
                        "s",
                        current.version,
                        next.to_string().as_bytes(),
                    )
                    .await
                    .expect("cas")
                    .is_some()
                {
                    return;
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let last = b
        .load_session("race", "s")
        .await
        .expect("load")
        .expect("stored");
    let value: serde_json::Value = serde_json::from_slice(&last.data).expect("json");
    assert_eq!(value["counter"], 20);
    assert_eq!(last.version, 21);
}

/// Bytes per stored session in Redis: `MEMORY USAGE` of a record's hash plus its share of the
/// site's index set, over 1 000 realistic records (~2 KB of storageState JSON each); and the
/// growth of `used_memory` for comparison. Run with `--nocapture`.
#[tokio::test]
async fn measure_bytes_per_session_in_redis() {
    const RECORDS: usize = 1_000;
    let server = RedisServer::start();
    let store = RedisStore::connect(
        &server.url(),
        "authkeeper:",
        Keyring::new(SealKey::generate()),
    )
    .await
    .expect("connect");
    let mut conn = raw(&server).await;
    let used_memory = |info: String| -> u64 {
        info.lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory in INFO")
    };
    let before = used_memory(
        redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .expect("info"),
    );
    let site = "example-shop.com";
    let mut json_bytes = 0;
    let mut ids = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let id = format!("acct-{i:04}-proxy-de");
        let document = realistic_storage_state("size");
        json_bytes += document.len();
        store
            .compare_and_put_session(site, &id, 0, &document)
            .await
            .expect("create");
        ids.push(id);
    }
    let after = used_memory(
        redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .expect("info"),
    );
    let mut record_bytes = 0u64;
    for id in &ids {
        let bytes: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(store.session_key(site, id))
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await
            .expect("memory usage");
        record_bytes += bytes;
    }
    let index_bytes: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(store.session_index_key(site))
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut conn)
        .await
        .expect("memory usage");
    let json = json_bytes as f64 / RECORDS as f64;
    let record = record_bytes as f64 / RECORDS as f64;
    let index = index_bytes as f64 / RECORDS as f64;
    let growth = after.saturating_sub(before) as f64 / RECORDS as f64;
    println!(
        "Redis: {RECORDS} sessions of {json:.0} B JSON (sealed: +52 B): MEMORY USAGE record hash {record:.0} B \
         + index share {index:.1} B = {:.0} bytes per session ({:.2}x the JSON); used_memory grew {growth:.0} B per session",
        record + index,
        (record + index) / json
    );
    assert!(
        record > json,
        "a sealed record cannot take less than its JSON"
    );
}
