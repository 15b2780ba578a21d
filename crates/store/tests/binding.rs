//! Sealed values are bound to their store, kind, name and version: someone with write access to
//! the database cannot put back an older sealed refresh token, status or record, nor copy one in
//! from another store sealed with the same key. A store sealed in format 1 is upgraded on open.
//! A re-key waits for refreshes in flight, and a process whose key was rotated away refuses to
//! refresh instead of losing the provider's answer.

use std::sync::Arc;
use std::time::Duration;

use authkeeper_core::store::{Expect, RecordKey, RecordKind, RecordStore as _};
use authkeeper_core::{
    CredentialState, CredentialStatus, CredentialStore as _, ExpiryDefaults, ExposeSecret as _,
    Keeper, KeeperError, Precondition, StoreError, SystemClock, TokenResponse,
};
use authkeeper_mock::{Knobs, MockConfig, MockIdp};
use authkeeper_store::{Keyring, SqliteStore};
use rusqlite::{Connection, params};

use crate::common::{
    all_files, contains, fixture, key, make_format_1, mock_credential, now, open, planted_tokens,
};
use crate::cred;

const SESSION: RecordKind = RecordKind::new("session");

fn raw_blob(db: &std::path::Path, column: &str) -> Vec<u8> {
    Connection::open(db)
        .expect("raw")
        .query_row(
            &format!("SELECT {column} FROM credentials WHERE name = 'crm'"),
            [],
            |row| row.get(0),
        )
        .expect("row")
}

fn set_blob(db: &std::path::Path, column: &str, value: &[u8]) {
    Connection::open(db)
        .expect("raw")
        .execute(
            &format!("UPDATE credentials SET {column} = ?1 WHERE name = 'crm'"),
            params![value],
        )
        .expect("plant");
}

fn assert_refused(result: Result<impl std::fmt::Debug, StoreError>, what: &str) {
    match result {
        Err(StoreError::Decrypt { reason, .. }) => {
            assert!(!reason.contains("PLANTED"), "{what}: {reason}");
        }
        other => panic!("{what}: expected a decrypt error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_older_sealed_refresh_token_status_or_record_put_back_does_not_open() {
    let fx = fixture();
    let store = open(&fx.db, &key(1));
    store
        .put(
            &cred("crm"),
            Precondition::None,
            &planted_tokens("one"),
            now(),
        )
        .await
        .expect("put 1");
    let (old_tokens, old_status) = (
        raw_blob(&fx.db, "sealed"),
        raw_blob(&fx.db, "sealed_status"),
    );
    store
        .put(
            &cred("crm"),
            Precondition::Generation(1),
            &planted_tokens("two"),
            now(),
        )
        .await
        .expect("put 2");
    let current = raw_blob(&fx.db, "sealed");
    set_blob(&fx.db, "sealed", &old_tokens);
    assert_refused(store.load(&cred("crm")).await, "an older token set");
    set_blob(&fx.db, "sealed", &current);
    set_blob(&fx.db, "sealed_status", &old_status);
    assert_refused(store.load(&cred("crm")).await, "an older status");

    let key = RecordKey::from_segments("shop", Some("s1")).expect("key");
    store
        .compare_and_put(
            SESSION,
            &key,
            Expect::Absent,
            b"{\"v\":\"PLANTED-1\"}",
            now(),
        )
        .await
        .expect("record 1");
    let old: Vec<u8> = Connection::open(&fx.db)
        .expect("raw")
        .query_row("SELECT sealed FROM records", [], |row| row.get(0))
        .expect("row");
    store
        .compare_and_put(
            SESSION,
            &key,
            Expect::Version(1),
            b"{\"v\":\"PLANTED-2\"}",
            now(),
        )
        .await
        .expect("record 2");
    Connection::open(&fx.db)
        .expect("raw")
        .execute("UPDATE records SET sealed = ?1", params![old])
        .expect("plant");
    assert_refused(store.get(SESSION, &key).await, "an older record");
}

#[tokio::test]
async fn a_row_copied_from_another_store_with_the_same_key_does_not_open() {
    let (a, b) = (fixture(), fixture());
    let (store_a, store_b) = (open(&a.db, &key(1)), open(&b.db, &key(1)));
    assert_ne!(store_a.store_id(), store_b.store_id());
    for (store, marker) in [(&store_a, "a"), (&store_b, "b")] {
        store
            .put(
                &cred("crm"),
                Precondition::None,
                &planted_tokens(marker),
                now(),
            )
            .await
            .expect("put");
    }
    set_blob(&a.db, "sealed", &raw_blob(&b.db, "sealed"));
    assert_refused(
        store_a.load(&cred("crm")).await,
        "a token set of another store",
    );
}

#[tokio::test]
async fn status_comes_from_the_sealed_copy_only() {
    let fx = fixture();
    let store = open(&fx.db, &key(1));
    store
        .put(
            &cred("crm"),
            Precondition::None,
            &planted_tokens("s"),
            now(),
        )
        .await
        .expect("put");
    let needs_reauth = CredentialStatus {
        state: CredentialState::NeedsReauth,
        reason: Some("invalid_grant".into()),
        ..CredentialStatus::default()
    };
    assert!(
        store
            .set_status(&cred("crm"), 1, &needs_reauth)
            .await
            .expect("status")
    );
    // Flipping the plaintext copy back to valid (and moving the expiry) changes nothing.
    Connection::open(&fx.db)
        .expect("raw")
        .execute(
            "UPDATE credentials SET state = 'valid', reason = NULL, expires_at = 0",
            [],
        )
        .expect("tamper");
    let loaded = store
        .load(&cred("crm"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(loaded.status, needs_reauth);
    let listed = store.list().await.expect("list");
    assert_eq!(listed[0].status, needs_reauth);
    assert_eq!(listed[0].expires_at, planted_tokens("s").expires_at);
}

#[tokio::test]
async fn a_format_1_store_is_upgraded_on_open_and_format_1_values_are_refused_after() {
    let fx = fixture();
    let ring = Keyring::new(key(1));
    drop(open(&fx.db, &key(1)));
    let tokens = planted_tokens("v1");
    {
        let raw = Connection::open(&fx.db).expect("raw");
        make_format_1(&raw, &ring);
        let sealed = ring
            .seal_v1("credential", "crm", &tokens.to_secret_json())
            .expect("seal");
        raw.execute(
            "INSERT INTO credentials (name, generation, sealed, expires_at, state, failures, reason, updated_at)
             VALUES ('crm', 7, ?1, ?2, 'needs_reauth', 2, 'invalid_grant', 0)",
            params![sealed, tokens.expires_at.as_millis()],
        )
        .expect("legacy credential");
        let record = ring
            .seal_v1("checkpoint", "job", b"{\"done\":1}")
            .expect("seal");
        raw.execute(
            "INSERT INTO records (kind, part, item, version, sealed, updated_at)
             VALUES ('checkpoint', 'job', '', 3, ?1, 0)",
            params![record],
        )
        .expect("legacy record");
    }
    let store = open(&fx.db, &key(1));
    let loaded = store
        .load(&cred("crm"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(loaded.generation, 7);
    assert_eq!(
        loaded.tokens.access_token.expose_secret(),
        tokens.access_token.expose_secret()
    );
    assert_eq!(loaded.status.state, CredentialState::NeedsReauth);
    assert_eq!(loaded.status.failures, 2);
    let job = RecordKey::from_segments("job", None).expect("key");
    let record = store
        .get(RecordKind::new("checkpoint"), &job)
        .await
        .expect("get")
        .expect("record");
    assert_eq!(
        (&record.data[..], record.version),
        (&b"{\"done\":1}"[..], 3)
    );
    drop(store);
    for (path, bytes) in all_files(fx.dir.path()) {
        assert!(
            !contains(&bytes, b"AKS1"),
            "a format-1 value is left in {path:?}"
        );
    }
    // Putting a format-1 value back (from an old backup) is refused with a clear reason.
    let store = open(&fx.db, &key(1));
    let old = ring
        .seal_v1("credential", "crm", &tokens.to_secret_json())
        .expect("seal");
    set_blob(&fx.db, "sealed", &old);
    let error = store.load(&cred("crm")).await.expect_err("refused");
    assert!(error.to_string().contains("format 1"), "{error}");
}

/// Two processes share a store through `AUTHKEEPER_KEY` (no key file); one re-keys while the
/// other's refresh is in flight. The re-key waits until the refresh is stored (the other process
/// could not seal the provider's answer afterwards and would lose the rotated refresh token);
/// afterwards the process with the old key refuses to refresh instead of redeeming the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rekey_never_strands_a_refresh_of_a_process_with_the_old_key() {
    let fx = fixture();
    let idp = MockIdp::start(MockConfig::default().with_knobs(Knobs {
        rotate_refresh_tokens: true,
        reuse_revokes_grant: true,
        token_latency_ms: 1_500,
        ..Knobs::default()
    }))
    .await
    .expect("idp");
    let stale = SqliteStore::open(&fx.db, Keyring::new(key(1))).expect("open");
    let rekeyer = SqliteStore::open(&fx.db, Keyring::new(key(1))).expect("open");
    let clock = SystemClock::shared();
    let grant = serde_json::to_vec(&idp.mint_grant(None, None).expect("grant")).expect("json");
    let issued = clock.now() - Duration::from_secs(7_200);
    let tokens = TokenResponse::parse_tokens(&grant)
        .expect("tokens")
        .into_token_set(issued, &ExpiryDefaults::default());
    authkeeper_core::store::import(&stale, &cred("api"), &tokens, issued)
        .await
        .expect("import");
    let keeper = |store: SqliteStore| {
        Keeper::builder(Arc::new(store), SystemClock::shared())
            .credential(cred("api"), mock_credential(&idp))
            .build()
            .expect("keeper")
    };
    let old_key_process = keeper(stale);
    let refresh = {
        let keeper = old_key_process.clone();
        tokio::spawn(async move { keeper.token("api", Duration::ZERO).await })
    };
    // Re-key once the refresh token is on its way to the provider.
    let raw = Connection::open(&fx.db).expect("raw");
    let in_flight = || {
        raw.query_row(
            "SELECT count(*) FROM leases WHERE in_flight IS NOT NULL AND released = 0",
            [],
            |row| row.get::<_, i64>(0),
        )
        .expect("leases")
            > 0
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !in_flight() {
        assert!(std::time::Instant::now() < deadline, "no refresh started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rekeyer.rekey(key(2)).await.expect("rekey");
    let refreshed = refresh
        .await
        .expect("task")
        .expect("the in-flight refresh was stored");
    assert_eq!(refreshed.generation(), 2);
    // The process with the new key reads what the other stored, and refreshes on with it.
    let new_key_process = keeper(rekeyer);
    let token = new_key_process
        .rejected("api", 2)
        .await
        .expect("refreshed with the new key");
    assert_eq!(token.generation(), 3);
    // The process with the old key cannot refresh any more, and never calls the provider.
    let calls = idp.stats().refresh_calls;
    let error = old_key_process
        .rejected("api", 3)
        .await
        .expect_err("the old key cannot store tokens");
    assert!(matches!(error, KeeperError::Store { .. }), "{error}");
    let stats = idp.stats();
    assert_eq!(
        stats.refresh_calls, calls,
        "the old key's process redeemed a token"
    );
    assert_eq!(
        (stats.reuse_detected, stats.grants_revoked),
        (0, 0),
        "{stats:?}"
    );
}
