//! The conformance suite every [`Store`] backend must pass (feature `conformance`).
//!
//! Each check is a `pub async fn` taking a fresh, empty store; they panic with a message saying
//! what the backend got wrong. [`store_conformance_tests!`](crate::store_conformance_tests)
//! turns them into one `#[test]` each:
//!
//! ```ignore
//! async fn make() -> (MyStore, tempfile::TempDir) { /* a fresh store, and what must outlive it */ }
//! authkeeper_core::store_conformance_tests!(make);
//! ```
//!
//! The suite only uses the [`Store`] trait. Backend-specific properties (crash release of the
//! lease, encryption at rest, associated data) belong in the backend's own tests.

use std::collections::HashSet;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use crate::clock::Timestamp;
use crate::store::{
    CredentialState, CredentialStatus, Lease, LeaseAttempt, Store, StoreError, StoredSession,
    WriteOutcome,
};
use crate::token::TokenSet;

/// A fixed "now" for the checks.
pub const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

/// A shared store under test.
pub type SharedStore = Arc<dyn Store>;

/// Runs `test` on a fresh multi-threaded runtime (used by the generated tests).
pub fn run<F: Future<Output = ()>>(test: F) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot start a tokio runtime: {e}"));
    runtime.block_on(test);
}

fn ok<T, E: Debug>(result: Result<T, E>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("{what} failed: {err:?}"),
    }
}

/// A token set with every field filled in; `tag` makes its secrets unique.
pub fn sample_tokens(tag: &str, issued_at: Timestamp) -> TokenSet {
    let mut extra = Map::new();
    extra.insert(
        "x_extra_secret".to_owned(),
        Value::String(format!("extra-{tag}-value")),
    );
    extra.insert(
        "nested".to_owned(),
        json!({ "list": [1, 2.5, null, true], "text": "é✓" }),
    );
    TokenSet {
        access_token: SecretString::from(format!("access-{tag}-token")),
        token_type: "Bearer".to_owned(),
        refresh_token: Some(SecretString::from(format!("refresh-{tag}-token"))),
        id_token: Some(SecretString::from(format!("id-{tag}-token"))),
        scope: Some("api.read api.write".to_owned()),
        issued_at,
        expires_at: issued_at + Duration::from_secs(3600),
        refresh_token_expires_at: Some(issued_at + Duration::from_secs(86_400)),
        extra,
    }
}

/// Asserts two token sets are equal field by field, secrets included.
pub fn assert_same_tokens(actual: &TokenSet, expected: &TokenSet) {
    let secret = |s: &Option<SecretString>| s.as_ref().map(|s| s.expose_secret().to_owned());
    assert_eq!(
        actual.access_token.expose_secret(),
        expected.access_token.expose_secret(),
        "access_token"
    );
    assert_eq!(actual.token_type, expected.token_type, "token_type");
    assert_eq!(
        secret(&actual.refresh_token),
        secret(&expected.refresh_token),
        "refresh_token"
    );
    assert_eq!(
        secret(&actual.id_token),
        secret(&expected.id_token),
        "id_token"
    );
    assert_eq!(actual.scope, expected.scope, "scope");
    assert_eq!(actual.issued_at, expected.issued_at, "issued_at");
    assert_eq!(actual.expires_at, expected.expires_at, "expires_at");
    assert_eq!(
        actual.refresh_token_expires_at, expected.refresh_token_expires_at,
        "refresh_token_expires_at"
    );
    assert_eq!(actual.extra, expected.extra, "extra");
}

async fn acquire(
    store: &SharedStore,
    name: &str,
    owner: &str,
    now: Timestamp,
    ttl: Duration,
) -> Lease {
    match ok(
        store.try_acquire_lease(name, owner, now, ttl).await,
        "try_acquire_lease",
    ) {
        LeaseAttempt::Acquired(lease) => lease,
        LeaseAttempt::Busy { held_until } => {
            panic!("{owner} expected to acquire `{name}`, but it is busy until {held_until}")
        }
    }
}

async fn expect_busy(store: &SharedStore, name: &str, owner: &str, now: Timestamp) -> Timestamp {
    match ok(
        store
            .try_acquire_lease(name, owner, now, Duration::from_secs(30))
            .await,
        "try_acquire_lease",
    ) {
        LeaseAttempt::Busy { held_until } => held_until,
        LeaseAttempt::Acquired(lease) => {
            panic!("{owner} acquired `{name}` while it should be held: {lease:?}")
        }
    }
}

/// Loading a name that was never stored gives `None`; so does listing an empty store.
pub async fn load_missing_is_none(store: SharedStore) {
    assert!(ok(store.load("missing").await, "load").is_none());
    assert!(ok(store.list().await, "list").is_empty());
}

/// `put` then `load` gives back every field of the token set, and a fresh valid status.
pub async fn put_then_load_round_trips(store: SharedStore) {
    let tokens = sample_tokens("rt", T0);
    assert_eq!(ok(store.put("crm", &tokens, T0).await, "put"), 1);
    let stored =
        ok(store.load("crm").await, "load").unwrap_or_else(|| panic!("nothing loaded after put"));
    assert_eq!(stored.name, "crm");
    assert_eq!(stored.generation, 1);
    assert_same_tokens(&stored.tokens, &tokens);
    assert_eq!(stored.status.state, CredentialState::Valid);
    assert_eq!(stored.status.failures, 0);
    assert_eq!(stored.status.reason, None);
    assert_eq!(stored.status.next_attempt_at, None);

    let minimal = TokenSet {
        access_token: SecretString::from("only-access"),
        token_type: "Bearer".to_owned(),
        refresh_token: None,
        id_token: None,
        scope: None,
        issued_at: T0,
        expires_at: T0 + Duration::from_secs(60),
        refresh_token_expires_at: None,
        extra: Map::new(),
    };
    assert_eq!(ok(store.put("minimal", &minimal, T0).await, "put"), 1);
    let stored =
        ok(store.load("minimal").await, "load").unwrap_or_else(|| panic!("nothing loaded"));
    assert_same_tokens(&stored.tokens, &minimal);
}

/// Generations start at 1 and every write bumps them; `put` resets the status to valid.
pub async fn generations_increment(store: SharedStore) {
    assert_eq!(
        ok(store.put("g", &sample_tokens("1", T0), T0).await, "put"),
        1
    );
    assert_eq!(
        ok(store.put("g", &sample_tokens("2", T0), T0).await, "put"),
        2
    );
    let failing = CredentialStatus {
        state: CredentialState::BackingOff,
        failures: 3,
        reason: Some("timeout".to_owned()),
        next_attempt_at: Some(T0 + Duration::from_secs(5)),
        ..CredentialStatus::default()
    };
    assert!(ok(store.set_status("g", 2, &failing).await, "set_status"));
    assert_eq!(
        ok(store.put("g", &sample_tokens("3", T0), T0).await, "put"),
        3
    );
    let stored = ok(store.load("g").await, "load").unwrap_or_else(|| panic!("nothing loaded"));
    assert_eq!(stored.generation, 3);
    assert_eq!(stored.tokens.access_token.expose_secret(), "access-3-token");
    assert_eq!(stored.status.state, CredentialState::Valid);
    assert_eq!(stored.status.failures, 0);
    assert_eq!(stored.status.reason, None);
    assert_eq!(stored.status.next_attempt_at, None);
}

/// `compare_and_put` writes only over the expected generation (0: nothing stored), and resets
/// the status with `last_refresh_at = now`.
pub async fn compare_and_put_checks_generation(store: SharedStore) {
    let first = sample_tokens("a", T0);
    assert_eq!(
        ok(
            store.compare_and_put("c", 1, None, &first, T0).await,
            "compare_and_put"
        ),
        WriteOutcome::Conflict {
            current_generation: 0
        }
    );
    assert!(
        ok(store.load("c").await, "load").is_none(),
        "a conflicting write stored something"
    );
    assert_eq!(
        ok(
            store.compare_and_put("c", 0, None, &first, T0).await,
            "compare_and_put"
        ),
        WriteOutcome::Written { generation: 1 }
    );
    let failing = CredentialStatus {
        state: CredentialState::BackingOff,
        failures: 2,
        reason: Some("HTTP 503".to_owned()),
        next_attempt_at: Some(T0 + Duration::from_secs(9)),
        ..CredentialStatus::default()
    };
    assert!(ok(store.set_status("c", 1, &failing).await, "set_status"));
    let later = T0 + Duration::from_secs(60);
    let second = sample_tokens("b", later);
    assert_eq!(
        ok(
            store.compare_and_put("c", 0, None, &second, later).await,
            "compare_and_put"
        ),
        WriteOutcome::Conflict {
            current_generation: 1
        }
    );
    assert_eq!(
        ok(
            store.compare_and_put("c", 2, None, &second, later).await,
            "compare_and_put"
        ),
        WriteOutcome::Conflict {
            current_generation: 1
        }
    );
    assert_eq!(
        ok(
            store.compare_and_put("c", 1, None, &second, later).await,
            "compare_and_put"
        ),
        WriteOutcome::Written { generation: 2 }
    );
    assert_eq!(
        ok(
            store.compare_and_put("c", 1, None, &first, later).await,
            "compare_and_put"
        ),
        WriteOutcome::Conflict {
            current_generation: 2
        }
    );
    let stored = ok(store.load("c").await, "load").unwrap_or_else(|| panic!("nothing loaded"));
    assert_eq!(stored.generation, 2);
    assert_same_tokens(&stored.tokens, &second);
    assert_eq!(
        stored.status,
        CredentialStatus {
            state: CredentialState::Valid,
            last_refresh_at: Some(later),
            failures: 0,
            reason: None,
            next_attempt_at: None,
        }
    );
}

/// A lease is exclusive until released; the next holder gets a larger fence.
pub async fn leases_are_exclusive(store: SharedStore) {
    let ttl = Duration::from_secs(30);
    let first = acquire(&store, "l", "owner-a", T0, ttl).await;
    assert!(
        !first.took_over_abandoned,
        "first lease reported a takeover"
    );
    assert_eq!(first.name, "l");
    assert_eq!(first.owner, "owner-a");
    assert_eq!(first.expires_at, T0 + ttl);
    let held_until = expect_busy(&store, "l", "owner-b", T0 + Duration::from_secs(1)).await;
    assert!(
        held_until > T0 + Duration::from_secs(1),
        "busy until {held_until}, which has passed"
    );
    // Other credentials are independent.
    let other = acquire(&store, "other", "owner-b", T0, ttl).await;
    ok(store.release_lease(other).await, "release_lease");

    let first_fence = first.fence;
    ok(store.release_lease(first).await, "release_lease");
    let second = acquire(&store, "l", "owner-b", T0 + Duration::from_secs(2), ttl).await;
    assert!(
        !second.took_over_abandoned,
        "a released lease was reported abandoned"
    );
    assert!(
        second.fence > first_fence,
        "fence did not grow: {} then {}",
        first_fence,
        second.fence
    );
    ok(store.release_lease(second).await, "release_lease");
}

/// A lease whose holder hangs past its TTL is taken over with a larger fence; the stale holder's
/// fenced write is then rejected, and its late release does not free the new holder's lease.
pub async fn fencing_rejects_stale_holder(store: SharedStore) {
    assert_eq!(
        ok(store.put("f", &sample_tokens("0", T0), T0).await, "put"),
        1
    );
    let ttl = Duration::from_secs(10);
    let stale = acquire(&store, "f", "stale", T0, ttl).await;
    let later = T0 + Duration::from_secs(11);
    let fresh = acquire(&store, "f", "fresh", later, ttl).await;
    assert!(
        fresh.took_over_abandoned,
        "taking over an expired lease must report it"
    );
    assert!(fresh.fence > stale.fence, "fence did not grow on takeover");

    assert_eq!(
        ok(
            store
                .compare_and_put(
                    "f",
                    1,
                    Some(stale.fence),
                    &sample_tokens("stale", later),
                    later
                )
                .await,
            "compare_and_put"
        ),
        WriteOutcome::Conflict {
            current_generation: 1
        },
        "a write fenced by a taken-over lease must conflict"
    );
    assert_eq!(
        ok(
            store
                .compare_and_put(
                    "f",
                    1,
                    Some(fresh.fence),
                    &sample_tokens("fresh", later),
                    later
                )
                .await,
            "compare_and_put"
        ),
        WriteOutcome::Written { generation: 2 }
    );
    ok(
        store.release_lease(stale).await,
        "release of a taken-over lease",
    );
    expect_busy(&store, "f", "third", later + Duration::from_secs(1)).await;
    ok(store.release_lease(fresh).await, "release_lease");
    let third = acquire(&store, "f", "third", later + Duration::from_secs(2), ttl).await;
    assert!(!third.took_over_abandoned);
    ok(store.release_lease(third).await, "release_lease");
    let stored = ok(store.load("f").await, "load").unwrap_or_else(|| panic!("nothing loaded"));
    assert_eq!(
        stored.tokens.access_token.expose_secret(),
        "access-fresh-token"
    );
}

/// A fenced write needs a lease carrying that fence.
pub async fn fenced_write_without_lease_conflicts(store: SharedStore) {
    assert_eq!(
        ok(
            store
                .compare_and_put("nolease", 0, Some(1), &sample_tokens("x", T0), T0)
                .await,
            "compare_and_put"
        ),
        WriteOutcome::Conflict {
            current_generation: 0
        }
    );
    let lease = acquire(&store, "nolease", "me", T0, Duration::from_secs(30)).await;
    assert_eq!(
        ok(
            store
                .compare_and_put(
                    "nolease",
                    0,
                    Some(lease.fence + 1),
                    &sample_tokens("x", T0),
                    T0
                )
                .await,
            "compare_and_put"
        ),
        WriteOutcome::Conflict {
            current_generation: 0
        }
    );
    assert_eq!(
        ok(
            store
                .compare_and_put("nolease", 0, Some(lease.fence), &sample_tokens("x", T0), T0)
                .await,
            "compare_and_put"
        ),
        WriteOutcome::Written { generation: 1 }
    );
    ok(store.release_lease(lease).await, "release_lease");
}

/// Many tasks racing for one lease: at most one holder at any time, and fences strictly grow in
/// the order the lease was held.
pub async fn concurrent_acquirers_are_exclusive(store: SharedStore) {
    const TASKS: usize = 50;
    const ROUNDS: usize = 3;
    let held = Arc::new(AtomicBool::new(false));
    let fences = Arc::new(std::sync::Mutex::new(Vec::new()));
    let acquisitions = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (store, held, fences, acquisitions) = (
            Arc::clone(&store),
            Arc::clone(&held),
            Arc::clone(&fences),
            Arc::clone(&acquisitions),
        );
        tasks.push(tokio::spawn(async move {
            let owner = format!("task-{task}");
            let mut done = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while done < ROUNDS {
                assert!(tokio::time::Instant::now() < deadline, "{owner} starved");
                let attempt = ok(
                    store
                        .try_acquire_lease("storm", &owner, T0, Duration::from_secs(3600))
                        .await,
                    "try_acquire_lease",
                );
                match attempt {
                    LeaseAttempt::Acquired(lease) => {
                        assert!(
                            !held.swap(true, Ordering::SeqCst),
                            "two holders at once ({owner})"
                        );
                        assert!(!lease.took_over_abandoned, "{owner} took over a live lease");
                        fences
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(lease.fence);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        held.store(false, Ordering::SeqCst);
                        ok(store.release_lease(lease).await, "release_lease");
                        acquisitions.fetch_add(1, Ordering::SeqCst);
                        done += 1;
                    }
                    LeaseAttempt::Busy { .. } => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
        }));
    }
    for task in tasks {
        if let Err(err) = task.await {
            std::panic::resume_unwind(err.into_panic());
        }
    }
    assert_eq!(acquisitions.load(Ordering::SeqCst), TASKS * ROUNDS);
    let fences = fences.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fences not strictly increasing: {fences:?}"
    );
}

/// `set_status` replaces the whole status of the given generation; it does nothing for a
/// missing credential or another generation.
pub async fn set_status_round_trips(store: SharedStore) {
    ok(store.put("s", &sample_tokens("s", T0), T0).await, "put");
    let status = CredentialStatus {
        state: CredentialState::NeedsReauth,
        last_refresh_at: Some(T0 - Duration::from_secs(30)),
        failures: 7,
        reason: Some("invalid_grant: refresh token revoked".to_owned()),
        next_attempt_at: Some(T0 + Duration::from_millis(1234)),
    };
    assert!(ok(store.set_status("s", 1, &status).await, "set_status"));
    let stored = ok(store.load("s").await, "load").unwrap_or_else(|| panic!("nothing loaded"));
    assert_eq!(stored.status, status);
    assert!(
        !ok(
            store.set_status("s", 2, &CredentialStatus::default()).await,
            "set_status"
        ),
        "a status for another generation must not be written"
    );
    assert_eq!(
        ok(store.load("s").await, "load").map(|c| c.status),
        Some(status.clone()),
        "the status of a stale generation was written"
    );
    assert_eq!(
        stored.generation, 1,
        "set_status must not bump the generation"
    );
    for state in [
        CredentialState::Refreshing,
        CredentialState::BackingOff,
        CredentialState::Disabled,
        CredentialState::Valid,
    ] {
        let status = CredentialStatus {
            state,
            ..CredentialStatus::default()
        };
        assert!(ok(store.set_status("s", 1, &status).await, "set_status"));
        let stored = ok(store.load("s").await, "load").unwrap_or_else(|| panic!("nothing loaded"));
        assert_eq!(stored.status, status);
    }
    assert!(!ok(
        store.set_status("ghost", 1, &status).await,
        "set_status on a missing credential",
    ));
    assert!(
        ok(store.load("ghost").await, "load").is_none(),
        "set_status created a credential"
    );
}

/// `list` shows every credential with its generation, expiry and status, and no secret.
pub async fn list_shows_summaries_without_secrets(store: SharedStore) {
    let a = sample_tokens("list-a", T0);
    let b = sample_tokens("list-b", T0 + Duration::from_secs(100));
    ok(store.put("b", &b, T0).await, "put");
    ok(store.put("a", &a, T0).await, "put");
    ok(store.put("b", &b, T0).await, "put");
    let status = CredentialStatus {
        state: CredentialState::Disabled,
        reason: Some("switched off".to_owned()),
        ..CredentialStatus::default()
    };
    assert!(ok(store.set_status("a", 1, &status).await, "set_status"));
    let mut list = ok(store.list().await, "list");
    list.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(list.len(), 2);
    assert_eq!(
        (
            list[0].name.as_str(),
            list[0].generation,
            list[0].expires_at
        ),
        ("a", 1, a.expires_at)
    );
    assert_eq!(list[0].status, status);
    assert_eq!(
        (
            list[1].name.as_str(),
            list[1].generation,
            list[1].expires_at
        ),
        ("b", 2, b.expires_at)
    );
    let shown = format!("{list:?}");
    for secret in ["access-list-", "refresh-list-", "id-list-", "extra-list-"] {
        assert!(!shown.contains(secret), "list shows a secret: {shown}");
    }
}

/// `delete` removes a credential and says whether there was one.
pub async fn delete_removes(store: SharedStore) {
    ok(store.put("d", &sample_tokens("d", T0), T0).await, "put");
    ok(store.put("keep", &sample_tokens("k", T0), T0).await, "put");
    assert!(ok(store.delete("d").await, "delete"));
    assert!(
        !ok(store.delete("d").await, "delete"),
        "second delete reported a deletion"
    );
    assert!(ok(store.load("d").await, "load").is_none());
    let names: Vec<String> = ok(store.list().await, "list")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["keep".to_owned()]);
    assert!(ok(store.load("keep").await, "load").is_some());
}

/// A lease survives the deletion of its credential with its fence, which never goes back.
pub async fn fences_survive_delete(store: SharedStore) {
    ok(store.put("fd", &sample_tokens("fd", T0), T0).await, "put");
    let lease = acquire(&store, "fd", "a", T0, Duration::from_secs(30)).await;
    let fence = lease.fence;
    ok(store.release_lease(lease).await, "release_lease");
    assert!(ok(store.delete("fd").await, "delete"));
    let lease = acquire(&store, "fd", "b", T0, Duration::from_secs(30)).await;
    assert!(
        lease.fence > fence,
        "fence went back after delete: {fence} then {}",
        lease.fence
    );
    ok(store.release_lease(lease).await, "release_lease");
}

/// Every operation refuses names outside `[A-Za-z0-9._-]{1,128}`.
pub async fn invalid_names_are_rejected(store: SharedStore) {
    let long = "x".repeat(129);
    let tokens = sample_tokens("bad", T0);
    for name in [
        "",
        "a/b",
        "../etc",
        "with space",
        "nul\0",
        "é",
        long.as_str(),
    ] {
        let invalid = |result: Result<(), StoreError>, op: &str| match result {
            Err(StoreError::InvalidName(_)) => {}
            other => panic!("{op}({name:?}) gave {other:?}, expected InvalidName"),
        };
        invalid(store.load(name).await.map(|_| ()), "load");
        invalid(store.put(name, &tokens, T0).await.map(|_| ()), "put");
        invalid(
            store
                .compare_and_put(name, 0, None, &tokens, T0)
                .await
                .map(|_| ()),
            "compare_and_put",
        );
        invalid(
            store
                .set_status(name, 1, &CredentialStatus::default())
                .await
                .map(|_| ()),
            "set_status",
        );
        invalid(store.delete(name).await.map(|_| ()), "delete");
        invalid(
            store
                .try_acquire_lease(name, "me", T0, Duration::from_secs(1))
                .await
                .map(|_| ()),
            "try_acquire_lease",
        );
    }
    assert!(ok(store.list().await, "list").is_empty());
    let longest = "y".repeat(128);
    ok(
        store.put(&longest, &tokens, T0).await,
        "put with a 128-character name",
    );
    ok(
        store.put("A.b_c-9", &tokens, T0).await,
        "put with every allowed character",
    );
}

/// `wait_for_change` returns by its timeout, and returns once the generation has moved.
pub async fn wait_for_change_returns(store: SharedStore) {
    let started = tokio::time::Instant::now();
    store
        .wait_for_change("w", 0, Duration::from_millis(100))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "wait_for_change overran its timeout"
    );
    ok(store.put("w", &sample_tokens("w", T0), T0).await, "put");
    let started = tokio::time::Instant::now();
    store.wait_for_change("w", 0, Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "wait_for_change missed a change that had happened"
    );
}

/// Distinct names hold distinct values.
pub async fn names_are_independent(store: SharedStore) {
    let mut names = HashSet::new();
    for i in 0..10 {
        let name = format!("cred-{i}");
        ok(store.put(&name, &sample_tokens(&name, T0), T0).await, "put");
        names.insert(name);
    }
    for name in &names {
        let stored = ok(store.load(name).await, "load").unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(
            stored.tokens.access_token.expose_secret(),
            &format!("access-{name}-token")
        );
    }
}

/// Checkpoints round-trip, get new versions, are independent of credentials of the same name,
/// are deleted, and refuse invalid task names.
pub async fn checkpoints_round_trip(store: SharedStore) {
    assert!(
        ok(store.get_checkpoint("job").await, "get_checkpoint").is_none(),
        "a checkpoint nobody saved was found"
    );
    let first = br#"{"done":75,"cursor":"p-75"}"#;
    let v1 = ok(
        store.put_checkpoint("job", first, T0).await,
        "put_checkpoint",
    );
    let saved = ok(store.get_checkpoint("job").await, "get_checkpoint")
        .unwrap_or_else(|| panic!("the saved checkpoint is missing"));
    assert_eq!(saved.task, "job");
    assert_eq!(&saved.data[..], &first[..]);
    assert_eq!(saved.version, v1);
    assert_eq!(saved.updated_at, T0);
    let later = T0 + Duration::from_secs(5);
    let v2 = ok(
        store.put_checkpoint("job", br#"{"done":80}"#, later).await,
        "put_checkpoint",
    );
    assert!(v2 > v1, "the version did not move: {v1} then {v2}");
    let saved = ok(store.get_checkpoint("job").await, "get_checkpoint")
        .unwrap_or_else(|| panic!("the saved checkpoint is missing"));
    assert_eq!(&saved.data[..], br#"{"done":80}"#);
    assert_eq!(saved.updated_at, later);
    // A credential of the same name is another record.
    ok(store.put("job", &sample_tokens("job", T0), T0).await, "put");
    assert!(ok(store.delete("job").await, "delete"));
    assert!(
        ok(store.get_checkpoint("job").await, "get_checkpoint").is_some(),
        "deleting a credential deleted the checkpoint of the same name"
    );
    assert!(
        ok(store.list().await, "list").is_empty(),
        "a checkpoint is listed as a credential"
    );
    assert!(ok(
        store.delete_checkpoint("job").await,
        "delete_checkpoint"
    ));
    assert!(!ok(
        store.delete_checkpoint("job").await,
        "delete_checkpoint"
    ));
    assert!(ok(store.get_checkpoint("job").await, "get_checkpoint").is_none());
    for name in ["", "a/b", "../x", "with space"] {
        assert!(
            matches!(
                store.put_checkpoint(name, b"{}", T0).await,
                Err(StoreError::InvalidName(_))
            ),
            "put_checkpoint({name:?}) accepted an invalid task name"
        );
        assert!(matches!(
            store.get_checkpoint(name).await,
            Err(StoreError::InvalidName(_))
        ));
        assert!(matches!(
            store.delete_checkpoint(name).await,
            Err(StoreError::InvalidName(_))
        ));
    }
}

/// A holder's in-flight marker outlives it when it never releases its lease (it was killed
/// while calling the token endpoint), only the current holder sets it, and a release clears it.
pub async fn in_flight_marker_survives_an_abandoned_lease(store: SharedStore) {
    assert_eq!(
        ok(store.put("m", &sample_tokens("0", T0), T0).await, "put"),
        1
    );
    let ttl = Duration::from_secs(10);
    let first = acquire(&store, "m", "first", T0, ttl).await;
    assert_eq!(
        ok(
            store.mark_in_flight("m", first.fence, 1).await,
            "mark_in_flight"
        ),
        None,
        "a fresh lease has no marker"
    );
    // The holder dies without releasing (its OS resources go away with it).
    drop(first);
    let later = T0 + Duration::from_secs(11);
    let second = acquire(&store, "m", "second", later, ttl).await;
    assert!(second.took_over_abandoned);
    assert_eq!(
        ok(
            store.mark_in_flight("m", second.fence, 1).await,
            "mark_in_flight"
        ),
        Some(1),
        "the next holder must find the dead holder's in-flight marker"
    );
    assert_eq!(
        ok(
            store.mark_in_flight("m", second.fence - 1, 7).await,
            "mark_in_flight"
        ),
        Some(1),
        "a stale fence reads the marker but must not set it"
    );
    ok(store.release_lease(second).await, "release_lease");
    let third = acquire(&store, "m", "third", later + Duration::from_secs(1), ttl).await;
    assert!(!third.took_over_abandoned);
    assert_eq!(
        ok(
            store.mark_in_flight("m", third.fence, 1).await,
            "mark_in_flight"
        ),
        None,
        "a release clears the marker"
    );
    ok(store.release_lease(third).await, "release_lease");
}

/// A session document like the ones `authkeeper-session` stores: a JSON object with a counter
/// and a secret-looking cookie value.
pub fn session_document(counter: u64, tag: &str) -> Vec<u8> {
    json!({
        "counter": counter,
        "storage_state": {
            "cookies": [{
                "name": "sid",
                "value": format!("cookie-{tag}-secret"),
                "domain": ".example.com",
                "path": "/",
                "expires": -1,
                "httpOnly": true,
                "secure": true,
                "sameSite": "Lax"
            }],
            "origins": []
        }
    })
    .to_string()
    .into_bytes()
}

fn session_counter(session: &StoredSession) -> u64 {
    let document: Value = serde_json::from_slice(&session.data).unwrap_or_else(|e| {
        panic!(
            "session {}/{} does not hold the JSON that was written: {e}",
            session.site, session.id
        )
    });
    document
        .get("counter")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("session {}/{} lost its counter", session.site, session.id))
}

async fn load_session_or_panic(store: &SharedStore, site: &str, id: &str) -> StoredSession {
    ok(store.load_session(site, id).await, "load_session")
        .unwrap_or_else(|| panic!("session {site}/{id} is missing"))
}

/// Session records: created with expected version 0 as version 1, every compare-and-put over the
/// stored version bumps it, and a write over any other version (0 included, on an existing
/// record) is refused with `None` and changes nothing.
pub async fn sessions_compare_and_put_checks_version(store: SharedStore) {
    assert!(
        ok(store.load_session("shop", "s1").await, "load_session").is_none(),
        "a session nobody wrote was found"
    );
    let first = session_document(1, "first");
    assert_eq!(
        ok(
            store.compare_and_put_session("shop", "s1", 0, &first).await,
            "compare_and_put_session"
        ),
        Some(1),
        "creating a session (expected version 0) must give version 1"
    );
    let loaded = load_session_or_panic(&store, "shop", "s1").await;
    assert_eq!(
        (loaded.site.as_str(), loaded.id.as_str(), loaded.version),
        ("shop", "s1", 1)
    );
    assert_eq!(
        &loaded.data[..],
        &first[..],
        "the document did not round-trip"
    );
    assert!(
        !format!("{loaded:?}").contains("cookie-first-secret"),
        "Debug of a session shows its document"
    );

    let second = session_document(2, "second");
    assert_eq!(
        ok(
            store
                .compare_and_put_session("shop", "s1", 1, &second)
                .await,
            "compare_and_put_session"
        ),
        Some(2),
        "a write over the stored version must bump it"
    );
    for (expected, what) in [(1, "a stale version"), (7, "a future version"), (0, "0")] {
        assert_eq!(
            ok(
                store
                    .compare_and_put_session("shop", "s1", expected, &session_document(99, "lost"))
                    .await,
                "compare_and_put_session"
            ),
            None,
            "a write over {what} (stored: 2) was accepted"
        );
        let loaded = load_session_or_panic(&store, "shop", "s1").await;
        assert_eq!(loaded.version, 2, "a refused write moved the version");
        assert_eq!(
            &loaded.data[..],
            &second[..],
            "a refused write changed the document"
        );
    }
    assert_eq!(
        ok(
            store
                .compare_and_put_session("shop", "ghost", 3, b"{}")
                .await,
            "compare_and_put_session"
        ),
        None,
        "a write over version 3 of a missing session was accepted"
    );
    assert!(
        ok(store.load_session("shop", "ghost").await, "load_session").is_none(),
        "a refused write created a session"
    );
    // An empty document is a document.
    assert_eq!(
        ok(
            store.compare_and_put_session("shop", "empty", 0, b"").await,
            "compare_and_put_session"
        ),
        Some(1)
    );
    assert!(
        load_session_or_panic(&store, "shop", "empty")
            .await
            .data
            .is_empty()
    );
}

/// Twenty tasks each read a session, increment the counter in its JSON and compare-and-put it,
/// retrying until their write lands: the counter ends at 20 (no lost update) and the version
/// moved once per successful write.
pub async fn sessions_concurrent_updates_lose_nothing(store: SharedStore) {
    const TASKS: u64 = 20;
    assert_eq!(
        ok(
            store
                .compare_and_put_session("race", "shared", 0, &session_document(0, "race"))
                .await,
            "compare_and_put_session"
        ),
        Some(1)
    );
    let conflicts = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        let conflicts = Arc::clone(&conflicts);
        tasks.push(tokio::spawn(async move {
            let mut attempts = 0u32;
            loop {
                attempts += 1;
                assert!(attempts < 10_000, "task {task} never got its write in");
                let current = load_session_or_panic(&store, "race", "shared").await;
                let next = session_document(session_counter(&current) + 1, "race");
                match ok(
                    store
                        .compare_and_put_session("race", "shared", current.version, &next)
                        .await,
                    "compare_and_put_session",
                ) {
                    Some(version) => {
                        assert_eq!(
                            version,
                            current.version + 1,
                            "a successful write must bump the version by one"
                        );
                        return;
                    }
                    None => {
                        conflicts.fetch_add(1, Ordering::Relaxed);
                        tokio::task::yield_now().await;
                    }
                }
            }
        }));
    }
    for task in tasks {
        if let Err(err) = task.await {
            std::panic::resume_unwind(err.into_panic());
        }
    }
    let last = load_session_or_panic(&store, "race", "shared").await;
    assert_eq!(
        session_counter(&last),
        TASKS,
        "lost updates: {} increments landed out of {TASKS} ({} conflicts retried)",
        session_counter(&last),
        conflicts.load(Ordering::Relaxed)
    );
    assert_eq!(last.version, TASKS + 1);
}

/// `list_sessions` gives exactly the records of one site, unsealed; `list_session_sites` the
/// sites that have records. A site is its own namespace: the same id in two sites are two
/// records, and a record is never found under another site. Sessions are not credentials or
/// checkpoints of the same name.
pub async fn sessions_are_listed_per_site(store: SharedStore) {
    assert!(ok(store.list_session_sites().await, "list_session_sites").is_empty());
    assert!(ok(store.list_sessions("a").await, "list_sessions").is_empty());
    for (site, id) in [("a", "one"), ("a", "two"), ("b", "one")] {
        let document = session_document(0, &format!("{site}-{id}"));
        assert_eq!(
            ok(
                store.compare_and_put_session(site, id, 0, &document).await,
                "compare_and_put_session"
            ),
            Some(1)
        );
    }
    assert_eq!(
        ok(
            store
                .compare_and_put_session("a", "two", 1, &session_document(1, "a-two"))
                .await,
            "compare_and_put_session"
        ),
        Some(2)
    );
    let mut listed = ok(store.list_sessions("a").await, "list_sessions");
    listed.sort_by(|x, y| x.id.cmp(&y.id));
    let seen: Vec<(&str, &str, u64)> = listed
        .iter()
        .map(|s| (s.site.as_str(), s.id.as_str(), s.version))
        .collect();
    assert_eq!(seen, [("a", "one", 1), ("a", "two", 2)]);
    assert_eq!(&listed[0].data[..], &session_document(0, "a-one")[..]);
    assert_eq!(&listed[1].data[..], &session_document(1, "a-two")[..]);
    let listed = ok(store.list_sessions("b").await, "list_sessions");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].site.as_str(), listed[0].id.as_str()),
        ("b", "one")
    );
    assert_eq!(&listed[0].data[..], &session_document(0, "b-one")[..]);
    assert!(ok(store.list_sessions("c").await, "list_sessions").is_empty());
    let mut sites = ok(store.list_session_sites().await, "list_session_sites");
    sites.sort();
    assert_eq!(sites, ["a", "b"]);

    // A record of one site is not another site's.
    assert!(
        ok(store.load_session("b", "two").await, "load_session").is_none(),
        "a/two was found as b/two"
    );
    let b_one = load_session_or_panic(&store, "b", "one").await;
    assert_eq!(&b_one.data[..], &session_document(0, "b-one")[..]);

    // Other record kinds of the same names are independent.
    ok(store.put("a", &sample_tokens("a", T0), T0).await, "put");
    ok(store.put_checkpoint("a", b"{}", T0).await, "put_checkpoint");
    assert!(ok(store.delete("a").await, "delete"));
    assert!(ok(store.delete_checkpoint("a").await, "delete_checkpoint"));
    assert_eq!(
        ok(store.list_sessions("a").await, "list_sessions").len(),
        2,
        "deleting a credential or checkpoint touched the sessions of the same name"
    );
    assert!(
        ok(store.list().await, "list").is_empty(),
        "a session is listed as a credential"
    );

    // A site whose last record is deleted is no longer listed.
    assert!(ok(
        store.delete_session("b", "one", 0).await,
        "delete_session"
    ));
    let sites = ok(store.list_session_sites().await, "list_session_sites");
    assert_eq!(sites, ["a"], "a site without records is still listed");
    assert!(ok(store.list_sessions("b").await, "list_sessions").is_empty());
}

/// `delete_session` deletes only over the stored version (any version with 0) and says whether
/// it deleted something.
pub async fn sessions_delete_checks_version(store: SharedStore) {
    let document = session_document(0, "del");
    assert_eq!(
        ok(
            store
                .compare_and_put_session("del", "s", 0, &document)
                .await,
            "compare_and_put_session"
        ),
        Some(1)
    );
    assert_eq!(
        ok(
            store
                .compare_and_put_session("del", "s", 1, &document)
                .await,
            "compare_and_put_session"
        ),
        Some(2)
    );
    for wrong in [1, 3] {
        assert!(
            !ok(
                store.delete_session("del", "s", wrong).await,
                "delete_session"
            ),
            "a delete over version {wrong} (stored: 2) reported a deletion"
        );
        let kept = load_session_or_panic(&store, "del", "s").await;
        assert_eq!(
            (kept.version, &kept.data[..]),
            (2, &document[..]),
            "a refused delete changed the record"
        );
    }
    assert!(ok(
        store.delete_session("del", "s", 2).await,
        "delete_session"
    ));
    assert!(ok(store.load_session("del", "s").await, "load_session").is_none());
    assert!(
        !ok(store.delete_session("del", "s", 0).await, "delete_session"),
        "deleting a missing session reported a deletion"
    );
    // Re-created after a delete, it starts again at version 1.
    assert_eq!(
        ok(
            store
                .compare_and_put_session("del", "s", 0, &document)
                .await,
            "compare_and_put_session"
        ),
        Some(1)
    );
    assert_eq!(
        ok(
            store
                .compare_and_put_session("del", "s", 1, &document)
                .await,
            "compare_and_put_session"
        ),
        Some(2)
    );
    assert!(
        ok(store.delete_session("del", "s", 0).await, "delete_session"),
        "a delete with version 0 must delete whatever version is stored"
    );
    assert!(ok(store.load_session("del", "s").await, "load_session").is_none());
    assert!(ok(store.list_sessions("del").await, "list_sessions").is_empty());
}

/// Every session operation refuses a site or id outside `[A-Za-z0-9._-]{1,128}`.
pub async fn sessions_reject_invalid_names(store: SharedStore) {
    let long = "x".repeat(129);
    for bad in [
        "",
        "a/b",
        "../etc",
        "with space",
        "nul\0",
        "é",
        "a:b",
        "{x}",
        long.as_str(),
    ] {
        let invalid = |result: Result<(), StoreError>, op: &str| match result {
            Err(StoreError::InvalidName(_)) => {}
            other => panic!("{op} with {bad:?} gave {other:?}, expected InvalidName"),
        };
        invalid(store.list_sessions(bad).await.map(|_| ()), "list_sessions");
        for (site, id) in [(bad, "ok"), ("ok", bad)] {
            invalid(
                store.load_session(site, id).await.map(|_| ()),
                "load_session",
            );
            invalid(
                store
                    .compare_and_put_session(site, id, 0, b"{}")
                    .await
                    .map(|_| ()),
                "compare_and_put_session",
            );
            invalid(
                store.delete_session(site, id, 0).await.map(|_| ()),
                "delete_session",
            );
        }
    }
    assert!(
        ok(store.list_session_sites().await, "list_session_sites").is_empty(),
        "an invalid name created a site"
    );
    let longest = "y".repeat(128);
    assert_eq!(
        ok(
            store
                .compare_and_put_session(&longest, "A.b_c-9", 0, b"{}")
                .await,
            "compare_and_put_session with a 128-character site"
        ),
        Some(1)
    );
    assert!(
        ok(
            store.load_session(&longest, "A.b_c-9").await,
            "load_session"
        )
        .is_some()
    );
}

/// Generates one `#[test]` per conformance check. `$make` is an async function returning a fresh,
/// empty store and a guard kept alive until the test ends (e.g. its temporary directory).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:path) => {
        $crate::store_conformance_tests!(@tests $make;
            load_missing_is_none,
            put_then_load_round_trips,
            generations_increment,
            compare_and_put_checks_generation,
            leases_are_exclusive,
            fencing_rejects_stale_holder,
            fenced_write_without_lease_conflicts,
            concurrent_acquirers_are_exclusive,
            set_status_round_trips,
            list_shows_summaries_without_secrets,
            delete_removes,
            fences_survive_delete,
            invalid_names_are_rejected,
            wait_for_change_returns,
            names_are_independent,
            checkpoints_round_trip,
            in_flight_marker_survives_an_abandoned_lease,
            sessions_compare_and_put_checks_version,
            sessions_concurrent_updates_lose_nothing,
            sessions_are_listed_per_site,
            sessions_delete_checks_version,
            sessions_reject_invalid_names,
        );
    };
    (@tests $make:path; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::conformance::run(async {
                    let (store, guard) = $make().await;
                    let store: $crate::conformance::SharedStore = ::std::sync::Arc::new(store);
                    $crate::conformance::$check(store).await;
                    drop(guard);
                });
            }
        )*
    };
}
