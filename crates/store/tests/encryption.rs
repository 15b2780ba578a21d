//! Secrets at rest: nothing secret in any file, private file modes, associated data, wrong keys.

use std::time::Duration;

use authkeeper_core::{
    CredentialStore as _, ExposeSecret as _, LeaseAttempt, Precondition, StoreError,
};
use authkeeper_store::{Binding, KeySettings, Keyring, SqliteStore};
use rusqlite::Connection;

use crate::common::{
    all_files, contains, fixture, key, mode, now, open, planted_tokens, with_suffix,
};
use crate::cred;

const NEEDLES: [&str; 4] = [
    "PLANTED-ACCESS-",
    "PLANTED-REFRESH-",
    "PLANTED-EXTRA-",
    "PLANTED-ID-",
];

fn assert_no_secret_on_disk(dir: &std::path::Path) {
    let files = all_files(dir);
    assert!(!files.is_empty());
    for (path, bytes) in &files {
        for needle in NEEDLES {
            assert!(
                !contains(bytes, needle.as_bytes()),
                "{needle} found in {}",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn generated_key_and_store_files_are_private_and_hold_no_secret() {
    let fx = fixture();
    let (store, origin) =
        SqliteStore::open_with_settings(&fx.db, &KeySettings::default()).expect("open");
    assert!(origin.was_generated());
    let key_file = with_suffix(&fx.db, ".key");
    assert_eq!(origin.key_file(), Some(key_file.as_path()));
    assert_eq!(store.key_file(), Some(key_file.as_path()));

    store
        .put(
            &cred("crm"),
            Precondition::None,
            &planted_tokens("1"),
            now(),
        )
        .await
        .expect("put");
    store
        .put(
            &cred("crm"),
            Precondition::Generation(1),
            &planted_tokens("2"),
            now(),
        )
        .await
        .expect("cas");
    store
        .put(
            &cred("other"),
            Precondition::None,
            &planted_tokens("3"),
            now(),
        )
        .await
        .expect("put");
    let LeaseAttempt::Acquired(lease) = store
        .try_acquire_lease(&cred("crm"), "me", now(), Duration::from_secs(30))
        .await
        .expect("lease")
    else {
        panic!("lease busy")
    };

    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(mode(&fx.db), 0o600);
    let wal = with_suffix(&fx.db, "-wal");
    assert!(wal.exists(), "the store should run in WAL mode");
    assert_eq!(mode(&wal), 0o600);
    let locks = with_suffix(&fx.db, ".locks");
    assert_eq!(mode(&locks), 0o700);
    for entry in std::fs::read_dir(&locks).expect("lock dir") {
        let path = entry.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(file_name.len(), 32);
        assert!(!file_name.contains("crm"));
    }
    // While the process runs (data in the WAL) and after it closed (checkpointed into the db).
    assert_no_secret_on_disk(fx.dir.path());
    store.release_lease(lease).await.expect("release");
    drop(store);
    assert_no_secret_on_disk(fx.dir.path());

    // The next start finds the key file instead of generating one.
    let (store, origin) =
        SqliteStore::open_with_settings(&fx.db, &KeySettings::default()).expect("reopen");
    assert!(!origin.was_generated());
    let loaded = store
        .load(&cred("crm"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(
        loaded.tokens.access_token.expose_secret(),
        "PLANTED-ACCESS-2"
    );
    assert_eq!(loaded.generation, 2);
}

#[tokio::test]
async fn a_value_sealed_for_one_name_does_not_open_as_another() {
    let fx = fixture();
    let store = open(&fx.db, &key(1));
    store
        .put(
            &cred("alice"),
            Precondition::None,
            &planted_tokens("a"),
            now(),
        )
        .await
        .expect("put");
    store
        .put(
            &cred("bob"),
            Precondition::None,
            &planted_tokens("b"),
            now(),
        )
        .await
        .expect("put");
    {
        let raw = Connection::open(&fx.db).expect("raw");
        raw.execute("UPDATE credentials SET sealed = (SELECT sealed FROM credentials WHERE name = 'alice') WHERE name = 'bob'", [])
            .expect("swap");
    }
    match store.load(&cred("bob")).await {
        Err(StoreError::Decrypt { kind, name, reason }) => {
            assert_eq!((kind, name.as_str()), ("credential", "bob"));
            assert!(reason.contains("authentication failed"), "{reason}");
        }
        other => panic!("expected a decrypt error, got {other:?}"),
    }
    assert!(store.load(&cred("alice")).await.expect("alice").is_some());
}

#[tokio::test]
async fn tampered_or_garbage_blobs_are_decrypt_errors() {
    let fx = fixture();
    let store = open(&fx.db, &key(1));
    store
        .put(&cred("t"), Precondition::None, &planted_tokens("t"), now())
        .await
        .expect("put");
    store
        .put(&cred("g"), Precondition::None, &planted_tokens("g"), now())
        .await
        .expect("put");
    {
        let raw = Connection::open(&fx.db).expect("raw");
        let mut sealed: Vec<u8> = raw
            .query_row(
                "SELECT sealed FROM credentials WHERE name = 't'",
                [],
                |row| row.get(0),
            )
            .expect("read");
        let last = sealed.len() - 1;
        sealed[last] ^= 0x01;
        raw.execute(
            "UPDATE credentials SET sealed = ?1 WHERE name = 't'",
            [sealed],
        )
        .expect("tamper");
        raw.execute(
            "UPDATE credentials SET sealed = x'0102' WHERE name = 'g'",
            [],
        )
        .expect("garbage");
    }
    let err = store.load(&cred("t")).await.expect_err("tampered");
    assert!(matches!(err, StoreError::Decrypt { .. }), "{err:?}");
    let err = store.load(&cred("g")).await.expect_err("garbage");
    assert!(err.to_string().contains("not a sealed value"), "{err}");
    // Listing needs no unsealing.
    assert_eq!(store.list().await.expect("list").len(), 2);
}

#[tokio::test]
async fn wrong_key_is_a_clear_error_and_leaves_the_data_intact() {
    let fx = fixture();
    let store = open(&fx.db, &key(1));
    store
        .put(
            &cred("crm"),
            Precondition::None,
            &planted_tokens("k"),
            now(),
        )
        .await
        .expect("put");
    drop(store);
    let before = std::fs::read(&fx.db).expect("db bytes");

    let err = SqliteStore::open(&fx.db, Keyring::new(key(2))).expect_err("wrong key must fail");
    match &err {
        StoreError::Decrypt { reason, .. } => assert!(reason.contains("wrong key"), "{reason}"),
        other => panic!("expected Decrypt, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        !text.contains(key(2).to_base64().as_str()) && !text.contains(key(1).to_base64().as_str())
    );
    assert_eq!(
        std::fs::read(&fx.db).expect("db bytes"),
        before,
        "a wrong key modified the store"
    );

    // A row sealed by a key the store does not know reports the key id.
    let store = open(&fx.db, &key(1));
    let generation = store
        .load(&cred("crm"))
        .await
        .expect("load")
        .expect("stored")
        .generation;
    let foreign = Keyring::new(key(3))
        .seal(
            &Binding::new(store.store_id(), "credential", "crm", generation),
            b"{}",
        )
        .expect("seal");
    Connection::open(&fx.db)
        .expect("raw")
        .execute(
            "UPDATE credentials SET sealed = ?1 WHERE name = 'crm'",
            [foreign],
        )
        .expect("plant");
    let err = store.load(&cred("crm")).await.expect_err("unknown key id");
    assert!(
        err.to_string()
            .contains(&format!("no key with id {}", key(3).id())),
        "{err}"
    );
    drop(store);

    let fx2 = fixture();
    let store = open(&fx2.db, &key(1));
    store
        .put(
            &cred("crm"),
            Precondition::None,
            &planted_tokens("k"),
            now(),
        )
        .await
        .expect("put");
    drop(store);
    assert!(SqliteStore::open(&fx2.db, Keyring::new(key(2))).is_err());
    let store = open(&fx2.db, &key(1));
    let loaded = store
        .load(&cred("crm"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(
        loaded.tokens.access_token.expose_secret(),
        "PLANTED-ACCESS-k"
    );
}
