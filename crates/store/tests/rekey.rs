//! Key rotation: the crash-safe rekey, the environment-key variant, and other processes
//! following a rekey.

use authkeeper_core::store::{Expect, RecordKey, RecordKind, RecordStore as _};
use authkeeper_core::{CredentialStore as _, ExposeSecret as _, Precondition, StoreError};
use authkeeper_store::key::{self, default_key_file, read_key_file};
use authkeeper_store::{KeySettings, Keyring, SealKey, SqliteStore};

use crate::cred;

/// The kind checkpoints are stored as (`authkeeper-client`).
const CHECKPOINT: RecordKind = RecordKind::new("checkpoint");

fn job() -> RecordKey {
    RecordKey::from_segments("job", None).expect("valid key")
}

use crate::common::{fixture, key, now, open, planted_tokens};

async fn assert_readable(store: &SqliteStore, names: &[&str]) {
    for name in names {
        let loaded = store
            .load(&cred(name))
            .await
            .expect("load")
            .expect("stored");
        assert_eq!(
            loaded.tokens.access_token.expose_secret(),
            &format!("PLANTED-ACCESS-{name}")
        );
    }
}

#[tokio::test]
async fn rekey_with_a_key_file_drops_the_old_key() {
    let fx = fixture();
    let (store, _) =
        SqliteStore::open_with_settings(&fx.db, &KeySettings::default()).expect("open");
    let key_file = default_key_file(&fx.db);
    let old = read_key_file(&key_file)
        .expect("key file")
        .primary()
        .clone();
    for name in ["a", "b", "c"] {
        store
            .put(
                &cred(name),
                Precondition::None,
                &planted_tokens(name),
                now(),
            )
            .await
            .expect("put");
    }
    store
        .compare_and_put(CHECKPOINT, &job(), Expect::Any, br#"{"done":75}"#, now())
        .await
        .expect("put a checkpoint");
    let new = SealKey::generate();
    assert_eq!(store.rekey(new.clone()).await.expect("rekey"), 3);
    assert_eq!(store.key_id(), new.id());
    assert_readable(&store, &["a", "b", "c"]).await;
    store
        .put(&cred("d"), Precondition::None, &planted_tokens("d"), now())
        .await
        .expect("put");
    drop(store);

    let ring = read_key_file(&key_file).expect("key file");
    assert_eq!(ring.primary().id(), new.id());
    assert!(
        ring.previous().is_empty(),
        "the old key is still in the key file"
    );
    assert!(matches!(
        SqliteStore::open(&fx.db, Keyring::new(old)),
        Err(StoreError::Decrypt { .. })
    ));
    let store = SqliteStore::open(&fx.db, Keyring::new(new)).expect("new key alone");
    assert_readable(&store, &["a", "b", "c", "d"]).await;
    let checkpoint = store
        .get(CHECKPOINT, &job())
        .await
        .expect("checkpoints are re-sealed with the new key")
        .expect("checkpoint kept");
    assert_eq!(&checkpoint.data[..], br#"{"done":75}"#);
}

#[tokio::test]
async fn a_crash_between_rekey_steps_leaves_everything_readable() {
    let fx = fixture();
    let key_file = fx.dir.path().join("store.key");
    let old = key(1);
    let new = key(2);
    key::write_key_file(&key_file, &Keyring::new(old.clone())).expect("key file");
    let store = SqliteStore::open_with_key_file(&fx.db, &key_file).expect("open");
    store
        .put(&cred("a"), Precondition::None, &planted_tokens("a"), now())
        .await
        .expect("put");
    drop(store);

    // Crash after step 1: the key file has the new key first, the data is still under the old.
    key::write_key_file(
        &key_file,
        &Keyring::with_previous(new.clone(), vec![old.clone()]),
    )
    .expect("step 1");
    let store = SqliteStore::open_with_key_file(&fx.db, &key_file).expect("open after step 1");
    assert_readable(&store, &["a"]).await;
    store
        .put(&cred("b"), Precondition::None, &planted_tokens("b"), now())
        .await
        .expect("put");
    drop(store);

    // Crash after step 2: the data is under the new key, the key file still lists both.
    let resealed = SqliteStore::open(
        &fx.db,
        Keyring::with_previous(new.clone(), vec![old.clone()]),
    )
    .expect("open");
    assert_eq!(resealed.rekey(new.clone()).await.expect("reseal"), 2);
    drop(resealed);
    let store = SqliteStore::open_with_key_file(&fx.db, &key_file).expect("open after step 2");
    assert_readable(&store, &["a", "b"]).await;

    // Finishing the rekey (here: to a third key) leaves only that key needed.
    let third = key(3);
    store.rekey(third.clone()).await.expect("rekey");
    drop(store);
    let store = SqliteStore::open(&fx.db, Keyring::new(third)).expect("third key alone");
    assert_readable(&store, &["a", "b"]).await;
}

#[tokio::test]
async fn rekey_with_an_env_key_reseals_and_leaves_switching_to_the_caller() {
    let fx = fixture();
    let store = open(&fx.db, &key(1));
    store
        .put(&cred("a"), Precondition::None, &planted_tokens("a"), now())
        .await
        .expect("put");
    assert_eq!(store.rekey(key(2)).await.expect("rekey"), 1);
    assert_readable(&store, &["a"]).await;
    drop(store);
    assert!(SqliteStore::open(&fx.db, Keyring::new(key(1))).is_err());
    let store = open(&fx.db, &key(2));
    assert_readable(&store, &["a"]).await;
}

#[tokio::test]
async fn another_process_follows_a_rekey_through_the_key_file() {
    let fx = fixture();
    let (rekeyer, _) =
        SqliteStore::open_with_settings(&fx.db, &KeySettings::default()).expect("open");
    let (other, _) =
        SqliteStore::open_with_settings(&fx.db, &KeySettings::default()).expect("open");
    rekeyer
        .put(&cred("a"), Precondition::None, &planted_tokens("a"), now())
        .await
        .expect("put");
    let new = SealKey::generate();
    rekeyer.rekey(new.clone()).await.expect("rekey");
    // The other instance still has the old key in memory: it reloads the key file on demand.
    assert_readable(&other, &["a"]).await;
    other
        .put(&cred("b"), Precondition::None, &planted_tokens("b"), now())
        .await
        .expect("put");
    assert_eq!(other.key_id(), new.id());
    drop((rekeyer, other));
    let store = SqliteStore::open(&fx.db, Keyring::new(new)).expect("new key alone");
    assert_readable(&store, &["a", "b"]).await;
}
