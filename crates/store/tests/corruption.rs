//! Damaged, foreign or newer files: a clear error, no panic, and the file left as it was.

use authkeeper_core::{CredentialStore as _, Precondition, StoreError};
use authkeeper_store::{Binding, Keyring, SqliteStore};
use rusqlite::Connection;

use crate::common::{fixture, key, now, open, planted_tokens, with_suffix};
use crate::cred;

fn assert_refused_untouched(db: &std::path::Path, expect: &str) {
    let before = std::fs::read(db).expect("bytes");
    let err = SqliteStore::open(db, Keyring::new(key(1))).expect_err("must refuse");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains(expect), "{err}");
    assert_eq!(
        std::fs::read(db).expect("bytes"),
        before,
        "the file was modified"
    );
    assert!(!with_suffix(db, "-wal").exists());
}

#[test]
fn random_bytes_are_not_a_store() {
    let fx = fixture();
    let mut seed = 0x2545_F491_4F6C_DD1D_u64;
    let bytes: Vec<u8> = (0..8192)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    std::fs::write(&fx.db, &bytes).expect("write");
    assert_refused_untouched(&fx.db, "not a SQLite database");
    std::fs::write(&fx.db, b"short").expect("write");
    assert_refused_untouched(&fx.db, "not a SQLite database");
}

#[tokio::test]
async fn a_truncated_store_is_refused() {
    let fx = fixture();
    let store = open(&fx.db, &key(1));
    for i in 0..50 {
        store
            .put(
                &cred(format!("c{i}")),
                Precondition::None,
                &planted_tokens(&"x".repeat(200)),
                now(),
            )
            .await
            .expect("put");
    }
    drop(store);
    let full = std::fs::read(&fx.db).expect("bytes");
    assert!(full.len() > 8192, "{}", full.len());
    for cut in [full.len() / 2, 4096 + 17, 100] {
        std::fs::write(&fx.db, &full[..cut]).expect("truncate");
        let before = std::fs::read(&fx.db).expect("bytes");
        match SqliteStore::open(&fx.db, Keyring::new(key(1))) {
            Err(err) => assert!(matches!(err, StoreError::Corrupt(_)), "cut {cut}: {err:?}"),
            Ok(store) => {
                // Damage SQLite cannot see at open shows up as a clear error on use.
                let err = store.list().await.expect_err("damaged store listed");
                assert!(matches!(err, StoreError::Corrupt(_)), "cut {cut}: {err:?}");
            }
        }
        assert_eq!(
            std::fs::read(&fx.db).expect("bytes"),
            before,
            "cut {cut}: file modified"
        );
    }
}

#[test]
fn a_newer_schema_is_refused_untouched() {
    let fx = fixture();
    drop(open(&fx.db, &key(1)));
    Connection::open(&fx.db)
        .expect("raw")
        .pragma_update(None, "user_version", 99)
        .expect("bump");
    assert_refused_untouched(&fx.db, "upgrade authkeeper");
}

#[test]
fn a_foreign_sqlite_database_is_refused() {
    let fx = fixture();
    {
        let raw = Connection::open(&fx.db).expect("raw");
        raw.pragma_update(None, "journal_mode", "DELETE")
            .expect("journal");
        raw.execute_batch(
            "CREATE TABLE photos (id INTEGER PRIMARY KEY); INSERT INTO photos VALUES (1);",
        )
        .expect("create");
    }
    assert_refused_untouched(&fx.db, "not an authkeeper store");
}

#[tokio::test]
async fn garbage_rows_are_clear_errors() {
    let fx = fixture();
    let store = open(&fx.db, &key(1));
    store
        .put(&cred("a"), Precondition::None, &planted_tokens("a"), now())
        .await
        .expect("put");
    // The plaintext status columns are copies for operators: tampering with them changes
    // nothing that is read back.
    Connection::open(&fx.db)
        .expect("raw")
        .execute(
            "UPDATE credentials SET state = 'exploded', expires_at = 0 WHERE name = 'a'",
            [],
        )
        .expect("garbage");
    let loaded = store.load(&cred("a")).await.expect("load").expect("stored");
    assert_eq!(loaded.status.state, authkeeper_core::CredentialState::Valid);
    assert_eq!(
        store.list().await.expect("list")[0].expires_at,
        planted_tokens("a").expires_at
    );
    // A damaged sealed status is a clear error.
    Connection::open(&fx.db)
        .expect("raw")
        .execute(
            "UPDATE credentials SET sealed_status = x'00' WHERE name = 'a'",
            [],
        )
        .expect("garbage");
    let err = store.load(&cred("a")).await.expect_err("bad status");
    assert!(matches!(err, StoreError::Decrypt { .. }), "{err:?}");
    assert!(store.list().await.is_err());
    store
        .put(&cred("a"), Precondition::None, &planted_tokens("a"), now())
        .await
        .expect("put");

    // A blob that opens but is not a token set: a clear error that quotes nothing.
    let sealed = Keyring::new(key(1))
        .seal(
            &Binding::new(store.store_id(), "credential", "a", 2),
            b"{\"access_token\": 5, \"secret\": \"PLANTED\"}",
        )
        .expect("seal");
    Connection::open(&fx.db)
        .expect("raw")
        .execute(
            "UPDATE credentials SET sealed = ?1 WHERE name = 'a'",
            [sealed],
        )
        .expect("plant");
    let err = store.load(&cred("a")).await.expect_err("bad json");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(!err.to_string().contains("PLANTED"), "{err}");
}
