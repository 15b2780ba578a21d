//! The shared conformance suites (credential store and record store), run on SqliteStore.

use authkeeper_store::{Keyring, SealKey, SqliteStore};
use tempfile::TempDir;

async fn make() -> (SqliteStore, TempDir) {
    let dir = authkeeper_testkit::temp_dir();
    let store = SqliteStore::open(
        dir.path().join("store.db"),
        Keyring::new(SealKey::generate()),
    )
    .expect("open");
    (store, dir)
}

authkeeper_core::credential_store_conformance_tests!(make);
authkeeper_core::record_store_conformance_tests!(make);
