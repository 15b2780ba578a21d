//! Records (browser sessions, checkpoints) in the embedded store beyond the conformance suite:
//! sealed at rest (no plaintext in any file), bound to their kind and key (associated data),
//! re-sealed by a rekey, moved unchanged from the tables of schema 4 by the migration,
//! exclusive across two store instances on one file, and their size on disk.

use std::sync::Arc;

use authkeeper_core::store::{Expect, Record, RecordKey, RecordKind, RecordStore};
use authkeeper_core::{StoreError, Timestamp};
use authkeeper_store::{Binding, Keyring, SealKey, SqliteStore, StoreId};
use rusqlite::Connection;

use crate::common::{
    all_files, contains, fixture, key, make_format_1, now, open, realistic_storage_state,
    with_suffix,
};

/// The kind browser sessions are stored as (`authkeeper-session`).
const SESSION: RecordKind = RecordKind::new("session");
/// The kind checkpoints are stored as (`authkeeper-client`).
const CHECKPOINT: RecordKind = RecordKind::new("checkpoint");

/// The key of session `id` of `site`.
fn session(site: &str, id: &str) -> RecordKey {
    RecordKey::from_segments(site, Some(id)).expect("valid names")
}

/// Writes session `site`/`id` over `expected` (0: new).
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

const NEEDLE: &str = "PLANTED-SESSION-";

fn assert_no_plaintext_on_disk(dir: &std::path::Path) {
    let files = all_files(dir);
    assert!(!files.is_empty());
    for (path, bytes) in &files {
        assert!(
            !contains(bytes, NEEDLE.as_bytes()),
            "session plaintext found in {}",
            path.display()
        );
    }
}

#[tokio::test]
async fn session_records_are_sealed_on_disk() {
    let fx = fixture();
    let store = open(&fx.db, &key(1));
    let document = realistic_storage_state("disk");
    assert_eq!(put(&store, "shop", "s1", 0, &document).await, Some(1));
    assert_eq!(
        put(&store, "shop", "s1", 1, &realistic_storage_state("disk2")).await,
        Some(2)
    );
    assert!(with_suffix(&fx.db, "-wal").exists());
    // In the WAL while the store is open, and in the database once it is closed.
    assert_no_plaintext_on_disk(fx.dir.path());
    let store_id = store.store_id();
    drop(store);
    assert_no_plaintext_on_disk(fx.dir.path());

    // The sealed value is bound to the store, kind `session`, name `SITE/ID` and version.
    let sealed: Vec<u8> = Connection::open(&fx.db)
        .expect("raw")
        .query_row(
            "SELECT sealed FROM records WHERE kind = 'session' AND part = 'shop' AND item = 's1'",
            [],
            |row| row.get(0),
        )
        .expect("row");
    let ring = Keyring::new(key(1));
    assert_eq!(session("shop", "s1").to_string(), "shop/s1");
    let bound = |kind, name, version| Binding::new(store_id, kind, name, version);
    assert!(ring.open(&bound("session", "shop/s1", 2), &sealed).is_ok());
    for other in [
        bound("session", "mail/s1", 2),
        bound("session", "shop/s2", 2),
        bound("checkpoint", "shop/s1", 2),
        bound("session", "shop/s1", 1),
        Binding::new(StoreId::generate(), "session", "shop/s1", 2),
    ] {
        assert!(ring.open(&other, &sealed).is_err(), "{other:?}");
    }
}

#[tokio::test]
async fn a_session_copied_to_another_site_or_id_does_not_open() {
    let fx = fixture();
    let store = open(&fx.db, &key(1));
    for (site, id) in [("shop", "s1"), ("mail", "s1"), ("shop", "s2")] {
        put(&store, site, id, 0, &realistic_storage_state(site)).await;
    }
    {
        let raw = Connection::open(&fx.db).expect("raw");
        for (site, id) in [("mail", "s1"), ("shop", "s2")] {
            raw.execute(
                "UPDATE records SET sealed = (SELECT sealed FROM records
                     WHERE kind = 'session' AND part = 'shop' AND item = 's1')
                 WHERE kind = 'session' AND part = ?1 AND item = ?2",
                [site, id],
            )
            .expect("swap");
        }
    }
    for (site, id) in [("mail", "s1"), ("shop", "s2")] {
        match get(&store, site, id).await {
            Err(StoreError::Decrypt { kind, name, reason }) => {
                assert_eq!((kind, name.as_str()), ("session", &*format!("{site}/{id}")));
                assert!(reason.contains("authentication failed"), "{reason}");
                assert!(!reason.contains(NEEDLE));
            }
            other => panic!("{site}/{id}: expected a decrypt error, got {other:?}"),
        }
    }
    // Listing a site with a bad record fails as a whole with the same clear error.
    assert!(matches!(
        store
            .list_children(
                SESSION,
                &RecordKey::from_segments("mail", None).expect("key")
            )
            .await,
        Err(StoreError::Decrypt { .. })
    ));
    assert!(get(&store, "shop", "s1").await.expect("s1").is_some());
}

#[tokio::test]
async fn rekey_reseals_session_records() {
    let fx = fixture();
    let store = open(&fx.db, &key(1));
    let document = realistic_storage_state("rekey");
    put(&store, "shop", "s1", 0, &document).await;
    store.rekey(key(2)).await.expect("rekey");
    let loaded = get(&store, "shop", "s1")
        .await
        .expect("load")
        .expect("kept");
    assert_eq!((&loaded.data[..], loaded.version), (&document[..], 1));
    drop(store);
    let store = SqliteStore::open(&fx.db, Keyring::new(key(2))).expect("new key alone");
    let loaded = get(&store, "shop", "s1")
        .await
        .expect("sessions are re-sealed with the new key")
        .expect("kept");
    assert_eq!(&loaded.data[..], &document[..]);
}

/// A store of schema 4 (before the record store: tables `checkpoints` and `sessions`) is
/// migrated on open, its sealed values moved and upgraded to format 2, and new records work.
#[tokio::test]
async fn a_store_of_schema_4_moves_its_checkpoints_and_sessions_to_records() {
    let fx = fixture();
    let seal_key = key(1);
    drop(open(&fx.db, &seal_key));
    let ring = Keyring::new(seal_key.clone());
    let document = realistic_storage_state("migrated");
    let checkpoint = br#"{"done":75}"#;
    {
        let raw = Connection::open(&fx.db).expect("raw");
        make_format_1(&raw, &ring);
        raw.execute_batch(
            "DROP TABLE records;
             CREATE TABLE checkpoints (task TEXT PRIMARY KEY NOT NULL,
                 version INTEGER NOT NULL CHECK (version > 0), sealed BLOB NOT NULL,
                 updated_at INTEGER NOT NULL) STRICT;
             CREATE TABLE sessions (site TEXT NOT NULL, id TEXT NOT NULL,
                 version INTEGER NOT NULL CHECK (version > 0), sealed BLOB NOT NULL,
                 PRIMARY KEY (site, id)) STRICT;
             PRAGMA user_version = 4;",
        )
        .expect("downgrade to schema 4");
        let sealed_session = ring.seal_v1("session", "shop/s1", &document).expect("seal");
        let sealed_checkpoint = ring.seal_v1("checkpoint", "job", checkpoint).expect("seal");
        raw.execute(
            "INSERT INTO sessions (site, id, version, sealed) VALUES ('shop', 's1', 3, ?1)",
            [&sealed_session],
        )
        .expect("legacy session");
        raw.execute(
            "INSERT INTO checkpoints (task, version, sealed, updated_at) VALUES ('job', 2, ?1, 1234)",
            [&sealed_checkpoint],
        )
        .expect("legacy checkpoint");
    }
    let store = open(&fx.db, &seal_key);
    let moved = get(&store, "shop", "s1")
        .await
        .expect("load")
        .expect("moved");
    assert_eq!((&moved.data[..], moved.version), (&document[..], 3));
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
        (&checkpoint[..], 2, Timestamp::from_millis(1234))
    );
    assert_eq!(put(&store, "shop", "s1", 3, b"{}").await, Some(4));
    let raw = Connection::open(&fx.db).expect("raw");
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("version");
    assert!(version >= 5, "{version}");
    let old_tables: i64 = raw
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('sessions', 'checkpoints')",
            [],
            |row| row.get(0),
        )
        .expect("tables");
    assert_eq!(old_tables, 0, "the old tables are gone");
}

/// Two store instances on one file (two connections, as two processes would have) race
/// read-modify-write increments: none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_file_lose_no_update() {
    let fx = fixture();
    let a = open(&fx.db, &key(1));
    let b = open(&fx.db, &key(1));
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
                let next = serde_json::json!({ "counter": value["counter"].as_u64().expect("counter") + 1 });
                let written =
                    put(&*store, "race", "s", current.version, next.to_string().as_bytes()).await;
                if written.is_some() {
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

/// Bytes per stored session: the growth of the closed database file over 1 000 realistic
/// records (~2 KB of storageState JSON each), divided by 1 000. Run with `--nocapture`.
#[tokio::test]
async fn measure_bytes_per_session_in_sqlite() {
    const RECORDS: usize = 1_000;
    let fx = fixture();
    let size = || {
        ["", "-wal"]
            .iter()
            .map(|suffix| std::fs::metadata(with_suffix(&fx.db, suffix)).map_or(0, |m| m.len()))
            .sum::<u64>()
    };
    let store_key = SealKey::generate();
    // An empty store: the schema and the key check.
    drop(open(&fx.db, &store_key));
    let before = size();
    let store = open(&fx.db, &store_key);
    let mut json_bytes = 0;
    for i in 0..RECORDS {
        let document = realistic_storage_state("size");
        json_bytes += document.len();
        put(
            &store,
            "example-shop.com",
            &format!("acct-{i:04}-proxy-de"),
            0,
            &document,
        )
        .await;
    }
    // Closing the last connection checkpoints the WAL into the database file.
    drop(store);
    let after = size();
    let page_size: i64 = Connection::open(&fx.db)
        .expect("raw")
        .query_row("PRAGMA page_size", [], |row| row.get(0))
        .expect("page size");
    let per_record = (after - before) as f64 / RECORDS as f64;
    let json = json_bytes as f64 / RECORDS as f64;
    println!(
        "SQLite: {RECORDS} sessions of {json:.0} B JSON (sealed: +52 B) grew the store from {before} to {after} bytes \
         (page size {page_size}): {per_record:.0} bytes per session ({:.2}x the JSON)",
        per_record / json
    );
    assert!(
        per_record > json,
        "a sealed record cannot take less than its JSON"
    );
}
