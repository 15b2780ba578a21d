//! Browser-session records in the embedded store beyond the conformance suite: sealed at rest
//! (no plaintext in any file), bound to their site and id (associated data), re-sealed by a
//! rekey, added to an existing store by its migration, exclusive across two store instances on
//! one file, and their size on disk.

use std::sync::Arc;

use authkeeper_core::store::SESSION_KIND;
use authkeeper_core::{Store, StoreError};
use authkeeper_store::sqlite::session_name;
use authkeeper_store::{Keyring, SealKey, SqliteStore};
use rusqlite::Connection;

use crate::common::{
    all_files, contains, fixture, key, open, realistic_storage_state, with_suffix,
};

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
    assert_eq!(
        store
            .compare_and_put_session("shop", "s1", 0, &document)
            .await
            .expect("create"),
        Some(1)
    );
    assert_eq!(
        store
            .compare_and_put_session("shop", "s1", 1, &realistic_storage_state("disk2"))
            .await
            .expect("update"),
        Some(2)
    );
    assert!(with_suffix(&fx.db, "-wal").exists());
    // In the WAL while the store is open, and in the database once it is closed.
    assert_no_plaintext_on_disk(fx.dir.path());
    drop(store);
    assert_no_plaintext_on_disk(fx.dir.path());

    // The sealed value is bound to kind `session` and name `SITE/ID`.
    let sealed: Vec<u8> = Connection::open(&fx.db)
        .expect("raw")
        .query_row(
            "SELECT sealed FROM sessions WHERE site = 'shop' AND id = 's1'",
            [],
            |row| row.get(0),
        )
        .expect("row");
    let ring = Keyring::new(key(1));
    assert_eq!(session_name("shop", "s1"), "shop/s1");
    assert!(ring.open(SESSION_KIND, "shop/s1", &sealed).is_ok());
    assert!(ring.open(SESSION_KIND, "mail/s1", &sealed).is_err());
    assert!(ring.open(SESSION_KIND, "shop/s2", &sealed).is_err());
    assert!(ring.open("checkpoint", "shop/s1", &sealed).is_err());
}

#[tokio::test]
async fn a_session_copied_to_another_site_or_id_does_not_open() {
    let fx = fixture();
    let store = open(&fx.db, &key(1));
    for (site, id) in [("shop", "s1"), ("mail", "s1"), ("shop", "s2")] {
        store
            .compare_and_put_session(site, id, 0, &realistic_storage_state(site))
            .await
            .expect("create");
    }
    {
        let raw = Connection::open(&fx.db).expect("raw");
        for (site, id) in [("mail", "s1"), ("shop", "s2")] {
            raw.execute(
                "UPDATE sessions SET sealed = (SELECT sealed FROM sessions WHERE site = 'shop' AND id = 's1')
                 WHERE site = ?1 AND id = ?2",
                [site, id],
            )
            .expect("swap");
        }
    }
    for (site, id) in [("mail", "s1"), ("shop", "s2")] {
        match store.load_session(site, id).await {
            Err(StoreError::Decrypt { kind, name, reason }) => {
                assert_eq!(
                    (kind, name.as_str()),
                    (SESSION_KIND, &*format!("{site}/{id}"))
                );
                assert!(reason.contains("authentication failed"), "{reason}");
                assert!(!reason.contains(NEEDLE));
            }
            other => panic!("{site}/{id}: expected a decrypt error, got {other:?}"),
        }
    }
    // Listing a site with a bad record fails as a whole with the same clear error.
    assert!(matches!(
        store.list_sessions("mail").await,
        Err(StoreError::Decrypt { .. })
    ));
    assert!(
        store
            .load_session("shop", "s1")
            .await
            .expect("s1")
            .is_some()
    );
}

#[tokio::test]
async fn rekey_reseals_session_records() {
    let fx = fixture();
    let store = open(&fx.db, &key(1));
    let document = realistic_storage_state("rekey");
    store
        .compare_and_put_session("shop", "s1", 0, &document)
        .await
        .expect("create");
    store.rekey(key(2)).await.expect("rekey");
    let loaded = store
        .load_session("shop", "s1")
        .await
        .expect("load")
        .expect("kept");
    assert_eq!((&loaded.data[..], loaded.version), (&document[..], 1));
    drop(store);
    let store = SqliteStore::open(&fx.db, Keyring::new(key(2))).expect("new key alone");
    let loaded = store
        .load_session("shop", "s1")
        .await
        .expect("sessions are re-sealed with the new key")
        .expect("kept");
    assert_eq!(&loaded.data[..], &document[..]);
}

#[tokio::test]
async fn a_store_from_before_sessions_gets_the_table() {
    let fx = fixture();
    drop(open(&fx.db, &key(1)));
    {
        let raw = Connection::open(&fx.db).expect("raw");
        raw.execute_batch("DROP TABLE sessions; PRAGMA user_version = 3;")
            .expect("downgrade to schema 3");
    }
    let store = open(&fx.db, &key(1));
    assert_eq!(
        store
            .compare_and_put_session("shop", "s1", 0, b"{}")
            .await
            .expect("create after migration"),
        Some(1)
    );
    let version: i64 = Connection::open(&fx.db)
        .expect("raw")
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("version");
    assert!(version >= 4, "{version}");
}

/// Two store instances on one file (two connections, as two processes would have) race
/// read-modify-write increments: none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_file_lose_no_update() {
    let fx = fixture();
    let a = open(&fx.db, &key(1));
    let b = open(&fx.db, &key(1));
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
                let next = serde_json::json!({ "counter": value["counter"].as_u64().expect("counter") + 1 });
                let written = store
                    .compare_and_put_session(
                        "race",
                        "s",
                        current.version,
                        next.to_string().as_bytes(),
                    )
                    .await
                    .expect("cas");
                if written.is_some() {
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
        store
            .compare_and_put_session(
                "example-shop.com",
                &format!("acct-{i:04}-proxy-de"),
                0,
                &document,
            )
            .await
            .expect("create");
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
