//! Records (browser sessions, checkpoints) in Redis beyond the conformance suite: the key
//! layout, no plaintext in any Redis value, kind/key binding of sealed values, records of the
//! layout before the record store moved on connect, two replicas racing, and the memory a record
//! takes. Each test starts its own redis-server.

use std::sync::Arc;

use authkeeper_core::store::{Expect, Record, RecordKey, RecordKind, RecordStore};
use authkeeper_core::{StoreError, Timestamp};
use authkeeper_store::seal::{KEY_CHECK_KIND, KEY_CHECK_NAME, KEY_CHECK_PLAINTEXT};
use authkeeper_store::{Binding, Keyring, RedisStore, SealKey};

use crate::common::{contains, key, now, realistic_storage_state};
use crate::redis_server::RedisServer;

/// The kind browser sessions are stored as (`authkeeper-session`).
const SESSION: RecordKind = RecordKind::new("session");
/// The kind checkpoints are stored as (`authkeeper-client`).
const CHECKPOINT: RecordKind = RecordKind::new("checkpoint");

fn session(site: &str, id: &str) -> RecordKey {
    RecordKey::from_segments(site, Some(id)).expect("valid names")
}

async fn put(
    store: &dyn RecordStore,
    site: &str,
    id: &str,
    expected: u64,
    data: &[u8],
) -> Option<u64> {
    let expect = match expected {
        0 => Expect::Absent,
        version => Expect::Version(version),
    };
    store
        .compare_and_put(SESSION, &session(site, id), expect, data, now())
        .await
        .expect("compare_and_put")
}

async fn get(store: &dyn RecordStore, site: &str, id: &str) -> Result<Option<Record>, StoreError> {
    store.get(SESSION, &session(site, id)).await
}

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
        put(&store, site, id, 0, &realistic_storage_state(site)).await;
    }
    assert_eq!(
        store.record_key(SESSION, &session("shop", "s1")),
        "ak:{r:session:shop}/s1"
    );
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
            "ak:layout",
            "ak:r:session:parts",
            "ak:store-id",
            "ak:{r:session:mail}/s1",
            "ak:{r:session:mail}:items",
            "ak:{r:session:shop}/s1",
            "ak:{r:session:shop}/s2",
            "ak:{r:session:shop}:items",
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
        .arg("ak:{r:session:shop}/s1")
        .arg("sealed")
        .query_async(&mut conn)
        .await
        .expect("hget");
    let ring = Keyring::new(key(1));
    let bound = |name, version| Binding::new(store.store_id(), "session", name, version);
    assert!(ring.open(&bound("shop/s1", 1), &sealed).is_ok());
    assert!(ring.open(&bound("mail/s1", 1), &sealed).is_err());
    assert!(ring.open(&bound("shop/s1", 2), &sealed).is_err());

    // Copied to another site or id, it does not open.
    for target in ["ak:{r:session:mail}/s1", "ak:{r:session:shop}/s2"] {
        let _: () = redis::cmd("HSET")
            .arg(target)
            .arg("sealed")
            .arg(&sealed)
            .query_async(&mut conn)
            .await
            .expect("hset");
    }
    for (site, id) in [("mail", "s1"), ("shop", "s2")] {
        match get(&store, site, id).await {
            Err(StoreError::Decrypt { kind, name, reason }) => {
                assert_eq!((kind, name.as_str()), ("session", &*format!("{site}/{id}")));
                assert!(!reason.contains("PLANTED-SESSION-"));
            }
            other => panic!("{site}/{id}: expected a decrypt error, got {other:?}"),
        }
    }
    assert!(get(&store, "shop", "s1").await.expect("load").is_some());
    // Removing the last record of a site unlists the site (its index set is gone).
    assert!(
        store
            .remove(SESSION, &session("mail", "s1"), Expect::Any)
            .await
            .expect("remove")
    );
    let parts: Vec<String> = store
        .parts(SESSION)
        .await
        .expect("parts")
        .iter()
        .map(RecordKey::to_string)
        .collect();
    assert_eq!(parts, ["shop"]);
}

/// Records written by the layout before the record store (`{sess:SITE}:ID` with a per-site
/// index, `{ckpt:TASK}`, sealing format 1) are moved on connect and upgraded to format 2, and
/// the old keys are gone.
#[tokio::test]
async fn records_of_the_previous_layout_are_moved_on_connect() {
    let server = RedisServer::start();
    let ring = Keyring::new(key(1));
    drop(connect(&server, "ak:").await);
    let mut conn = raw(&server).await;
    let document = realistic_storage_state("legacy");
    let sealed_session = ring.seal_v1("session", "shop/s1", &document).expect("seal");
    let sealed_checkpoint = ring
        .seal_v1("checkpoint", "job", br#"{"done":3}"#)
        .expect("seal");
    let check = ring
        .seal_v1(KEY_CHECK_KIND, KEY_CHECK_NAME, KEY_CHECK_PLAINTEXT)
        .expect("seal");
    let _: () = redis::pipe()
        .cmd("DEL")
        .arg("ak:layout")
        .arg("ak:store-id")
        .ignore()
        .cmd("SET")
        .arg("ak:key-check")
        .arg(&check)
        .ignore()
        .cmd("SADD")
        .arg("ak:session-sites")
        .arg("shop")
        .ignore()
        .cmd("SADD")
        .arg("ak:{sess:shop}")
        .arg("s1")
        .ignore()
        .cmd("HSET")
        .arg("ak:{sess:shop}:s1")
        .arg("version")
        .arg("4")
        .arg("sealed")
        .arg(&sealed_session)
        .ignore()
        .cmd("HSET")
        .arg("ak:{ckpt:job}")
        .arg("version")
        .arg("2")
        .arg("sealed")
        .arg(&sealed_checkpoint)
        .arg("updated_at")
        .arg("1234")
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("plant the old layout");
    let store = connect(&server, "ak:").await;
    let moved = get(&store, "shop", "s1")
        .await
        .expect("load")
        .expect("moved");
    assert_eq!((&moved.data[..], moved.version), (&document[..], 4));
    let job = store
        .get(
            CHECKPOINT,
            &RecordKey::from_segments("job", None).expect("key"),
        )
        .await
        .expect("load")
        .expect("moved");
    assert_eq!(
        (&job.data[..], job.version, job.updated_at),
        (&br#"{"done":3}"#[..], 2, Timestamp::from_millis(1234))
    );
    assert_eq!(put(&store, "shop", "s1", 4, b"{}").await, Some(5));
    for old in [
        "ak:session-sites",
        "ak:{sess:shop}",
        "ak:{sess:shop}:s1",
        "ak:{ckpt:job}",
    ] {
        let exists: i64 = redis::cmd("EXISTS")
            .arg(old)
            .query_async(&mut conn)
            .await
            .expect("exists");
        assert_eq!(exists, 0, "{old} is still there");
    }
}

/// Two replicas (two connections) race read-modify-write increments: none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_lose_no_update() {
    let server = RedisServer::start();
    let a = connect(&server, "ak:").await;
    let b = connect(&server, "ak:").await;
    put(&a, "race", "s", 0, br#"{"counter":0}"#).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store: Arc<dyn RecordStore> = Arc::new(if i % 2 == 0 { a.clone() } else { b.clone() });
        tasks.push(tokio::spawn(async move {
            loop {
                let current = get(&*store, "race", "s")
                    .await
                    .expect("load")
                    .expect("stored");
                let value: serde_json::Value = serde_json::from_slice(&current.data).expect("json");
                let next = serde_json::json!({
                    "counter": value["counter"].as_u64().expect("counter") + 1
                });
                if put(
                    &*store,
                    "race",
                    "s",
                    current.version,
                    next.to_string().as_bytes(),
                )
                .await
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
    let last = get(&b, "race", "s").await.expect("load").expect("stored");
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
        put(&store, site, &id, 0, &document).await;
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
            .arg(store.record_key(SESSION, &session(site, id)))
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await
            .expect("memory usage");
        record_bytes += bytes;
    }
    let index_bytes: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(store.record_items_key(SESSION, site))
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
