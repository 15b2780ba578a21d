//! authkeeper-store: the encrypted stores of authkeeper.
//!
//! - [`seal`]: XChaCha20-Poly1305 sealing of secrets, bound to their record kind and name, with
//!   a [`Keyring`] for key rotation.
//! - [`key`]: where the key comes from (`AUTHKEEPER_KEY`, a key file, or one generated beside
//!   the store).
//! - [`sqlite`]: [`SqliteStore`], the embedded store for one machine (both
//!   [`authkeeper_core::CredentialStore`] and [`authkeeper_core::RecordStore`]).
//! - [`lock`]: the per-credential OS locks behind the SQLite refresh lease.
//! - [`redis`] (feature `redis`, on by default): [`RedisStore`], the shared store for several
//!   broker replicas, with a fenced refresh lease and pub/sub change propagation.
//!
//! ```no_run
//! # fn main() -> Result<(), authkeeper_core::StoreError> {
//! use authkeeper_store::{KeySettings, SqliteStore};
//!
//! let (store, origin) = SqliteStore::open_with_settings("authkeeper.db", &KeySettings::from_env(None))?;
//! if origin.was_generated() {
//!     eprintln!("generated a new store key in {:?}: back it up", origin.key_file());
//! }
//! # let _ = store;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod key;
pub mod lock;
mod record;
#[cfg(feature = "redis")]
pub mod redis;
pub mod seal;
pub mod sqlite;

#[cfg(feature = "redis")]
pub use self::redis::{ChangeEvent, LeaseClock, RedisHealth, RedisOptions, RedisStore, RedisUrl};
pub use key::{KeyError, KeyOrigin, KeySettings, ResolvedKey};
pub use seal::{Binding, KeyId, Keyring, SealError, SealKey, StoreId};
pub use sqlite::SqliteStore;

impl From<KeyError> for authkeeper_core::StoreError {
    fn from(err: KeyError) -> Self {
        authkeeper_core::StoreError::Other {
            message: "cannot use the store key".to_owned(),
            source: Some(Box::new(err)),
        }
    }
}
