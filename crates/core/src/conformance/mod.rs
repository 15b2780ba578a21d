//! The conformance suites every store backend must pass (feature `conformance`): one for
//! [`CredentialStore`](crate::store::CredentialStore) ([`credentials`]) and one for
//! [`RecordStore`](crate::store::RecordStore) ([`records`]).
//!
//! Each check is a `pub async fn` taking a fresh, empty store; they panic with a message saying
//! what the backend got wrong. The macros turn them into one `#[test]` each:
//!
//! ```ignore
//! async fn make() -> (MyStore, tempfile::TempDir) { /* a fresh store, and what must outlive it */ }
//! authkeeper_core::credential_store_conformance_tests!(make);
//! authkeeper_core::record_store_conformance_tests!(make);
//! ```
//!
//! The suites use only the traits. Backend-specific properties (crash release of the lease,
//! encryption at rest, associated data) belong in the backend's own tests.

pub mod credentials;
pub mod records;

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};

use crate::clock::Timestamp;
use crate::secret::{AccessToken, IdToken, RefreshToken};
use crate::store::Store;
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
        access_token: AccessToken::from(format!("access-{tag}-token")),
        token_type: "Bearer".to_owned(),
        refresh_token: Some(RefreshToken::from(format!("refresh-{tag}-token"))),
        id_token: Some(IdToken::from(format!("id-{tag}-token"))),
        scope: Some("api.read api.write".to_owned()),
        issued_at,
        expires_at: issued_at + Duration::from_secs(3600),
        refresh_token_expires_at: Some(issued_at + Duration::from_secs(86_400)),
        extra,
    }
}

/// Asserts two token sets are equal field by field, secrets included.
pub fn assert_same_tokens(actual: &TokenSet, expected: &TokenSet) {
    fn secret<S: ExposeSecret<str>>(s: &Option<S>) -> Option<String> {
        s.as_ref().map(|s| s.expose_secret().to_owned())
    }
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

/// Generates one `#[test]` per [`credentials`] check. `$make` is an async function returning a
/// fresh, empty store and a guard kept alive until the test ends (e.g. its temporary directory).
#[macro_export]
macro_rules! credential_store_conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@tests $make; credentials;
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
            names_at_the_limits_are_stored,
            wait_for_change_returns,
            names_are_independent,
            in_flight_marker_survives_an_abandoned_lease,
            list_pages_in_name_order,
            load_pages_in_name_order,
            begin_refresh_reads_and_marks,
            finish_refresh_writes_and_releases,
        );
    };
}

/// Generates one `#[test]` per [`records`] check (see
/// [`credential_store_conformance_tests!`](crate::credential_store_conformance_tests)).
#[macro_export]
macro_rules! record_store_conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@tests $make; records;
            records_round_trip_with_any_expectation,
            records_compare_and_put_checks_version,
            records_concurrent_updates_lose_nothing,
            records_are_listed_per_part,
            records_remove_checks_version,
            records_kinds_and_credentials_are_independent,
            records_names_at_the_limits_are_stored,
            records_list_in_pages,
        );
    };
}

/// The shared body of the two macros above.
#[doc(hidden)]
#[macro_export]
macro_rules! conformance_tests {
    (@tests $make:path; $suite:ident; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::conformance::run(async {
                    let (store, guard) = $make().await;
                    let store: $crate::conformance::SharedStore = ::std::sync::Arc::new(store);
                    $crate::conformance::$suite::$check(store).await;
                    drop(guard);
                });
            }
        )*
    };
}
