//! The conformance checks of [`CredentialStore`]: token sets, generations, statuses, leases,
//! fencing and in-flight markers.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::Map;

use super::{SharedStore, T0, assert_same_tokens, ok, sample_tokens};
use crate::clock::Timestamp;
use crate::name::CredentialName;
use crate::secret::AccessToken;
use crate::store::{
    CredentialState, CredentialStatus, CredentialStore, Lease, LeaseAttempt, Precondition,
    WriteOutcome,
};
use crate::token::TokenSet;

/// A credential name the checks know to be valid.
fn n(name: &str) -> CredentialName {
    CredentialName::new(name).unwrap_or_else(|e| panic!("{e}"))
}

fn generation(outcome: WriteOutcome) -> u64 {
    match outcome {
        WriteOutcome::Written { generation } => generation,
        WriteOutcome::Conflict { current_generation } => {
            panic!("an unconditional put conflicted (stored: {current_generation})")
        }
    }
}

/// An unconditional put (an import); returns the new generation.
async fn put(store: &SharedStore, name: &str, tokens: &TokenSet) -> u64 {
    generation(ok(
        CredentialStore::put(&**store, &n(name), Precondition::None, tokens, T0).await,
        "put",
    ))
}

/// The precondition of a conditional write: the generation, and the fence when under a lease.
fn precondition(generation: u64, fence: Option<u64>) -> Precondition {
    match fence {
        Some(fence) => Precondition::Fenced { generation, fence },
        None => Precondition::Generation(generation),
    }
}

/// A copy of `lease` whose fence is one lower: a holder that lost the lease.
fn stale_copy(lease: &Lease) -> Lease {
    let mut stale = lease.detached();
    stale.fence -= 1;
    stale
}

async fn acquire(
    store: &SharedStore,
    name: &str,
    owner: &str,
    now: Timestamp,
    ttl: Duration,
) -> Lease {
    match ok(
        store.try_acquire_lease(&n(name), owner, now, ttl).await,
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
            .try_acquire_lease(&n(name), owner, now, Duration::from_secs(30))
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
    assert!(ok(store.load(&n("missing")).await, "load").is_none());
    assert!(ok(store.list().await, "list").is_empty());
}

/// `put` then `load` gives back every field of the token set, and a fresh valid status.
pub async fn put_then_load_round_trips(store: SharedStore) {
    let tokens = sample_tokens("rt", T0);
    assert_eq!(
        ok(
            store
                .put(&n("crm"), Precondition::None, &tokens, T0)
                .await
                .map(generation),
            "put"
        ),
        1
    );
    let stored = ok(store.load(&n("crm")).await, "load")
        .unwrap_or_else(|| panic!("nothing loaded after put"));
    assert_eq!(stored.name, "crm");
    assert_eq!(stored.generation, 1);
    assert_same_tokens(&stored.tokens, &tokens);
    assert_eq!(stored.status.state, CredentialState::Valid);
    assert_eq!(stored.status.failures, 0);
    assert_eq!(stored.status.reason, None);
    assert_eq!(stored.status.next_attempt_at, None);

    let minimal = TokenSet {
        access_token: AccessToken::from("only-access"),
        token_type: "Bearer".to_owned(),
        refresh_token: None,
        id_token: None,
        scope: None,
        issued_at: T0,
        expires_at: T0 + Duration::from_secs(60),
        refresh_token_expires_at: None,
        extra: Map::new(),
    };
    assert_eq!(
        ok(
            store
                .put(&n("minimal"), Precondition::None, &minimal, T0)
                .await
                .map(generation),
            "put"
        ),
        1
    );
    let stored =
        ok(store.load(&n("minimal")).await, "load").unwrap_or_else(|| panic!("nothing loaded"));
    assert_same_tokens(&stored.tokens, &minimal);
}

/// Generations start at 1 and every write bumps them; `put` resets the status to valid.
pub async fn generations_increment(store: SharedStore) {
    assert_eq!(put(&store, "g", &sample_tokens("1", T0)).await, 1);
    assert_eq!(put(&store, "g", &sample_tokens("2", T0)).await, 2);
    let failing = CredentialStatus {
        state: CredentialState::BackingOff,
        failures: 3,
        reason: Some("timeout".to_owned()),
        next_attempt_at: Some(T0 + Duration::from_secs(5)),
        ..CredentialStatus::default()
    };
    assert!(ok(
        store.set_status(&n("g"), 2, &failing).await,
        "set_status"
    ));
    assert_eq!(put(&store, "g", &sample_tokens("3", T0)).await, 3);
    let stored = ok(store.load(&n("g")).await, "load").unwrap_or_else(|| panic!("nothing loaded"));
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
            store.put(&n("c"), precondition(1, None), &first, T0).await,
            "compare_and_put"
        ),
        WriteOutcome::Conflict {
            current_generation: 0
        }
    );
    assert!(
        ok(store.load(&n("c")).await, "load").is_none(),
        "a conflicting write stored something"
    );
    assert_eq!(
        ok(
            store.put(&n("c"), precondition(0, None), &first, T0).await,
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
    assert!(ok(
        store.set_status(&n("c"), 1, &failing).await,
        "set_status"
    ));
    let later = T0 + Duration::from_secs(60);
    let second = sample_tokens("b", later);
    assert_eq!(
        ok(
            store
                .put(&n("c"), precondition(0, None), &second, later)
                .await,
            "compare_and_put"
        ),
        WriteOutcome::Conflict {
            current_generation: 1
        }
    );
    assert_eq!(
        ok(
            store
                .put(&n("c"), precondition(2, None), &second, later)
                .await,
            "compare_and_put"
        ),
        WriteOutcome::Conflict {
            current_generation: 1
        }
    );
    assert_eq!(
        ok(
            store
                .put(&n("c"), precondition(1, None), &second, later)
                .await,
            "compare_and_put"
        ),
        WriteOutcome::Written { generation: 2 }
    );
    assert_eq!(
        ok(
            store
                .put(&n("c"), precondition(1, None), &first, later)
                .await,
            "compare_and_put"
        ),
        WriteOutcome::Conflict {
            current_generation: 2
        }
    );
    let stored = ok(store.load(&n("c")).await, "load").unwrap_or_else(|| panic!("nothing loaded"));
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
    assert_eq!(put(&store, "f", &sample_tokens("0", T0)).await, 1);
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
                .put(
                    &n("f"),
                    precondition(1, Some(stale.fence)),
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
                .put(
                    &n("f"),
                    precondition(1, Some(fresh.fence)),
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
    let stored = ok(store.load(&n("f")).await, "load").unwrap_or_else(|| panic!("nothing loaded"));
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
                .put(
                    &n("nolease"),
                    precondition(0, Some(1)),
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
    let lease = acquire(&store, "nolease", "me", T0, Duration::from_secs(30)).await;
    assert_eq!(
        ok(
            store
                .put(
                    &n("nolease"),
                    precondition(0, Some(lease.fence + 1)),
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
                .put(
                    &n("nolease"),
                    precondition(0, Some(lease.fence)),
                    &sample_tokens("x", T0),
                    T0
                )
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
                        .try_acquire_lease(&n("storm"), &owner, T0, Duration::from_secs(3600))
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
    put(&store, "s", &sample_tokens("s", T0)).await;
    let status = CredentialStatus {
        state: CredentialState::NeedsReauth,
        last_refresh_at: Some(T0 - Duration::from_secs(30)),
        failures: 7,
        reason: Some("invalid_grant: refresh token revoked".to_owned()),
        next_attempt_at: Some(T0 + Duration::from_millis(1234)),
    };
    assert!(ok(
        store.set_status(&n("s"), 1, &status).await,
        "set_status"
    ));
    let stored = ok(store.load(&n("s")).await, "load").unwrap_or_else(|| panic!("nothing loaded"));
    assert_eq!(stored.status, status);
    assert!(
        !ok(
            store
                .set_status(&n("s"), 2, &CredentialStatus::default())
                .await,
            "set_status"
        ),
        "a status for another generation must not be written"
    );
    assert_eq!(
        ok(store.load(&n("s")).await, "load").map(|c| c.status),
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
        assert!(ok(
            store.set_status(&n("s"), 1, &status).await,
            "set_status"
        ));
        let stored =
            ok(store.load(&n("s")).await, "load").unwrap_or_else(|| panic!("nothing loaded"));
        assert_eq!(stored.status, status);
    }
    assert!(!ok(
        store.set_status(&n("ghost"), 1, &status).await,
        "set_status on a missing credential",
    ));
    assert!(
        ok(store.load(&n("ghost")).await, "load").is_none(),
        "set_status created a credential"
    );
}

/// `list` shows every credential with its generation, expiry and status, and no secret.
pub async fn list_shows_summaries_without_secrets(store: SharedStore) {
    let a = sample_tokens("list-a", T0);
    let b = sample_tokens("list-b", T0 + Duration::from_secs(100));
    ok(
        store
            .put(&n("b"), Precondition::None, &b, T0)
            .await
            .map(generation),
        "put",
    );
    ok(
        store
            .put(&n("a"), Precondition::None, &a, T0)
            .await
            .map(generation),
        "put",
    );
    ok(
        store
            .put(&n("b"), Precondition::None, &b, T0)
            .await
            .map(generation),
        "put",
    );
    let status = CredentialStatus {
        state: CredentialState::Disabled,
        reason: Some("switched off".to_owned()),
        ..CredentialStatus::default()
    };
    assert!(ok(
        store.set_status(&n("a"), 1, &status).await,
        "set_status"
    ));
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
    put(&store, "d", &sample_tokens("d", T0)).await;
    put(&store, "keep", &sample_tokens("k", T0)).await;
    assert!(ok(store.delete(&n("d")).await, "delete"));
    assert!(
        !ok(store.delete(&n("d")).await, "delete"),
        "second delete reported a deletion"
    );
    assert!(ok(store.load(&n("d")).await, "load").is_none());
    let names: Vec<String> = ok(store.list().await, "list")
        .into_iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(names, vec!["keep".to_owned()]);
    assert!(ok(store.load(&n("keep")).await, "load").is_some());
}

/// A lease survives the deletion of its credential with its fence, which never goes back.
pub async fn fences_survive_delete(store: SharedStore) {
    put(&store, "fd", &sample_tokens("fd", T0)).await;
    let lease = acquire(&store, "fd", "a", T0, Duration::from_secs(30)).await;
    let fence = lease.fence;
    ok(store.release_lease(lease).await, "release_lease");
    assert!(ok(store.delete(&n("fd")).await, "delete"));
    let lease = acquire(&store, "fd", "b", T0, Duration::from_secs(30)).await;
    assert!(
        lease.fence > fence,
        "fence went back after delete: {fence} then {}",
        lease.fence
    );
    ok(store.release_lease(lease).await, "release_lease");
}

/// Names at the limits of the naming rule (128 characters, every allowed character) are stored
/// like any other. (Invalid names cannot reach a store: see [`crate::name`].)
pub async fn names_at_the_limits_are_stored(store: SharedStore) {
    let tokens = sample_tokens("limits", T0);
    let longest = "y".repeat(128);
    for name in [longest.as_str(), "A.b_c-9"] {
        assert_eq!(put(&store, name, &tokens).await, 1, "put {name:?}");
        assert!(
            ok(store.load(&n(name)).await, "load").is_some(),
            "{name:?} was not stored"
        );
    }
}

/// `wait_for_change` returns by its timeout, and returns once the generation has moved.
pub async fn wait_for_change_returns(store: SharedStore) {
    let started = tokio::time::Instant::now();
    store
        .wait_for_change(&n("w"), 0, Duration::from_millis(100))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "wait_for_change overran its timeout"
    );
    put(&store, "w", &sample_tokens("w", T0)).await;
    let started = tokio::time::Instant::now();
    store
        .wait_for_change(&n("w"), 0, Duration::from_secs(10))
        .await;
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
        put(&store, &name, &sample_tokens(&name, T0)).await;
        names.insert(name);
    }
    for name in &names {
        let stored =
            ok(store.load(&n(name)).await, "load").unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(
            stored.tokens.access_token.expose_secret(),
            &format!("access-{name}-token")
        );
    }
}

/// A holder's in-flight marker outlives it when it never releases its lease (it was killed
/// while calling the token endpoint), only the current holder sets it, and a release clears it.
pub async fn in_flight_marker_survives_an_abandoned_lease(store: SharedStore) {
    assert_eq!(put(&store, "m", &sample_tokens("0", T0)).await, 1);
    let ttl = Duration::from_secs(10);
    let first = acquire(&store, "m", "first", T0, ttl).await;
    assert_eq!(
        ok(store.mark_in_flight(&first, 1).await, "mark_in_flight"),
        None,
        "a fresh lease has no marker"
    );
    // The holder dies without releasing (its OS resources go away with it).
    drop(first);
    let later = T0 + Duration::from_secs(11);
    let second = acquire(&store, "m", "second", later, ttl).await;
    assert!(second.took_over_abandoned);
    assert_eq!(
        ok(store.mark_in_flight(&second, 1).await, "mark_in_flight"),
        Some(1),
        "the next holder must find the dead holder's in-flight marker"
    );
    assert_eq!(
        ok(
            store.mark_in_flight(&stale_copy(&second), 7).await,
            "mark_in_flight"
        ),
        Some(1),
        "a stale fence reads the marker but must not set it"
    );
    ok(store.release_lease(second).await, "release_lease");
    let third = acquire(&store, "m", "third", later + Duration::from_secs(1), ttl).await;
    assert!(!third.took_over_abandoned);
    assert_eq!(
        ok(store.mark_in_flight(&third, 1).await, "mark_in_flight"),
        None,
        "a release clears the marker"
    );
    ok(store.release_lease(third).await, "release_lease");
}

/// `list_page` pages through every credential in name order, each exactly once.
pub async fn list_pages_in_name_order(store: SharedStore) {
    let names = ["d", "a", "e", "c", "b", "a.1", "b-2"];
    for name in names {
        put(&store, name, &sample_tokens(name, T0)).await;
    }
    let mut seen = Vec::new();
    let mut after: Option<CredentialName> = None;
    loop {
        let page = ok(store.list_page(after.as_ref(), 3).await, "list_page");
        assert!(page.len() <= 3, "a page holds at most `limit` summaries");
        let Some(last) = page.last() else { break };
        after = Some(last.name.clone());
        seen.extend(page.iter().map(|s| s.name.to_string()));
    }
    let mut expected: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(seen, expected, "pages in name order, each credential once");
    let tail = ok(store.list_page(Some(&n("c")), 10).await, "list_page");
    let tail: Vec<&str> = tail.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(tail, ["d", "e"], "after a name that is stored");
    let tail = ok(store.list_page(Some(&n("bz")), 1).await, "list_page");
    assert_eq!(
        tail[0].name.as_str(),
        "c",
        "after a name that is not stored"
    );
}

/// `load_page` returns whole credentials (tokens included) in name order, a page at a time.
pub async fn load_pages_in_name_order(store: SharedStore) {
    let names = ["lp-d", "lp-a", "lp-c", "lp-b", "lp-a.1"];
    for name in names {
        put(&store, name, &sample_tokens(name, T0)).await;
    }
    let mut seen = Vec::new();
    let mut after: Option<CredentialName> = None;
    loop {
        let page = ok(store.load_page(after.as_ref(), 2).await, "load_page");
        assert!(page.len() <= 2, "a page holds at most `limit` credentials");
        let Some(last) = page.last() else { break };
        after = Some(last.name.clone());
        for credential in &page {
            assert_eq!(
                credential.tokens.access_token.expose_secret(),
                format!("access-{}-token", credential.name),
                "the page carries the tokens"
            );
            assert_eq!(credential.generation, 1);
        }
        seen.extend(page.iter().map(|c| c.name.to_string()));
    }
    let mut expected: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(seen, expected, "pages in name order, each credential once");
}

/// `begin_refresh` takes the lease, reads under it and marks the generation in flight in one
/// call; it says when a previous holder died sending that generation's refresh token.
pub async fn begin_refresh_reads_and_marks(store: SharedStore) {
    use crate::store::RefreshStart;
    let ttl = Duration::from_secs(10);
    let begin = |owner: &'static str, now: Timestamp, mark: bool| {
        let store = Arc::clone(&store);
        async move {
            ok(
                store.begin_refresh(&n("br"), owner, now, ttl, mark).await,
                "begin_refresh",
            )
        }
    };
    // Nothing stored: the lease, no record, nothing marked.
    match begin("first", T0, true).await {
        RefreshStart::Acquired {
            lease,
            stored,
            interrupted,
        } => {
            assert!(stored.is_none() && !interrupted);
            ok(store.release_lease(lease).await, "release_lease");
        }
        RefreshStart::Busy { .. } => panic!("a free lease must be acquired"),
    }
    let tokens = sample_tokens("br", T0);
    put(&store, "br", &tokens).await;
    let first = match begin("first", T0, true).await {
        RefreshStart::Acquired {
            lease,
            stored,
            interrupted,
        } => {
            let stored =
                stored.unwrap_or_else(|| panic!("the record must be read under the lease"));
            assert_eq!(stored.generation, 1);
            assert_same_tokens(&stored.tokens, &tokens);
            assert!(!interrupted, "nobody was interrupted");
            lease
        }
        RefreshStart::Busy { .. } => panic!("a free lease must be acquired"),
    };
    match begin("second", T0 + Duration::from_secs(1), true).await {
        RefreshStart::Busy { held_until } => assert_eq!(held_until, first.expires_at),
        RefreshStart::Acquired { .. } => panic!("a held lease must be busy"),
    }
    // The holder dies without releasing: the next one finds its marker.
    drop(first);
    let later = T0 + Duration::from_secs(11);
    let second = match begin("second", later, true).await {
        RefreshStart::Acquired {
            lease, interrupted, ..
        } => {
            assert!(lease.took_over_abandoned);
            assert!(
                interrupted,
                "the dead holder was sending generation 1's refresh token"
            );
            lease
        }
        RefreshStart::Busy { .. } => panic!("an expired lease must be taken over"),
    };
    ok(store.release_lease(second).await, "release_lease");
    // Without marking, nothing is reported and nothing left behind.
    match begin("third", later, false).await {
        RefreshStart::Acquired {
            lease, interrupted, ..
        } => {
            assert!(!interrupted, "a release clears the marker");
            drop(lease);
        }
        RefreshStart::Busy { .. } => panic!("a released lease must be acquired"),
    }
    match begin("fourth", later + ttl + Duration::from_secs(1), true).await {
        RefreshStart::Acquired {
            lease, interrupted, ..
        } => {
            assert!(!interrupted, "a holder that did not mark leaves no marker");
            ok(store.release_lease(lease).await, "release_lease");
        }
        RefreshStart::Busy { .. } => panic!("an expired lease must be taken over"),
    }
}

/// `finish_refresh` stores the next generation and releases the lease in one call; a holder
/// whose lease was taken over writes nothing.
pub async fn finish_refresh_writes_and_releases(store: SharedStore) {
    use crate::store::RefreshStart;
    let ttl = Duration::from_secs(10);
    put(&store, "fr", &sample_tokens("fr-1", T0)).await;
    let lease = match ok(
        store.begin_refresh(&n("fr"), "first", T0, ttl, true).await,
        "begin_refresh",
    ) {
        RefreshStart::Acquired { lease, .. } => lease,
        RefreshStart::Busy { .. } => panic!("a free lease must be acquired"),
    };
    let next = sample_tokens("fr-2", T0 + Duration::from_secs(1));
    let outcome = store
        .finish_refresh(lease, 1, &next, T0 + Duration::from_secs(1))
        .await
        .unwrap_or_else(|unfinished| panic!("finish_refresh failed: {}", unfinished.error));
    assert_eq!(outcome, WriteOutcome::Written { generation: 2 });
    let stored = ok(store.load(&n("fr")).await, "load").unwrap_or_else(|| panic!("stored"));
    assert_eq!(stored.generation, 2);
    assert_same_tokens(&stored.tokens, &next);
    assert_eq!(stored.status.state, CredentialState::Valid);
    // Released: another owner takes the lease at once, and finds no marker.
    let second = match ok(
        store
            .begin_refresh(&n("fr"), "second", T0 + Duration::from_secs(2), ttl, true)
            .await,
        "begin_refresh",
    ) {
        RefreshStart::Acquired {
            lease, interrupted, ..
        } => {
            assert!(!interrupted && !lease.took_over_abandoned);
            lease
        }
        RefreshStart::Busy { .. } => panic!("finish_refresh must release the lease"),
    };
    // `second` hangs; `third` takes over; `second`'s late write is fenced out.
    let stale = second.detached();
    drop(second);
    let third = acquire(&store, "fr", "third", T0 + Duration::from_secs(13), ttl).await;
    let outcome = store
        .finish_refresh(
            stale,
            2,
            &sample_tokens("fr-stale", T0),
            T0 + Duration::from_secs(14),
        )
        .await
        .unwrap_or_else(|unfinished| panic!("finish_refresh failed: {}", unfinished.error));
    assert_eq!(
        outcome,
        WriteOutcome::Conflict {
            current_generation: 2
        }
    );
    let stored = ok(store.load(&n("fr")).await, "load").unwrap_or_else(|| panic!("stored"));
    assert_eq!(stored.generation, 2, "a fenced-out write changes nothing");
    assert_same_tokens(&stored.tokens, &next);
    match ok(
        store
            .try_acquire_lease(&n("fr"), "fourth", T0 + Duration::from_secs(14), ttl)
            .await,
        "try_acquire_lease",
    ) {
        LeaseAttempt::Busy { .. } => {}
        LeaseAttempt::Acquired(_) => {
            panic!("a stale finish must not release the new holder's lease")
        }
    }
    ok(store.release_lease(third).await, "release_lease");
}
