//! [`SqliteStore`]: the embedded store, one SQLite file (WAL, `synchronous=FULL`) shared by every
//! process on the machine.
//!
//! Secrets live only in sealed blobs (see [`crate::seal`]), each bound to the store's id and its
//! row's generation or version. Names and generations are plaintext columns; a credential's
//! status and expiry are sealed too (`sealed_status`), with plaintext copies for operators that
//! are never read back. Records of every kind (table `records`: kind, part, item, version,
//! sealed document) are sealed the same way. The refresh lease combines an OS lock per credential
//! (released by the kernel when its holder dies, see [`crate::lock`]) with a lease row carrying a
//! monotonic fence that conditional writes check. Every database call runs on the blocking pool,
//! and no transaction is ever held across an `await`.
//!
//! Files: [`credentials`](self) rows, [`leases`](self), [`records`](self), the [`keyring`](self)
//! (key check, sealing, rekey), the file itself, schema migrations and error mapping.

mod credentials;
mod errors;
mod file;
mod group_commit;
mod keyring;
mod leases;
mod migrations;
mod records;
mod refresh;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use authkeeper_core::StoreError;

use self::errors::sql_error;
use self::file::{create_private_file, quick_check, restrict_permissions};
use self::keyring::open_store_keys;
use crate::key::{self, KeyOrigin, KeySettings};
use crate::lock::LockDir;
use crate::seal::{KeyId, Keyring, SealKey, StoreId};

/// How long a write waits for another process's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// What `Busy::held_until` says when the OS lock is held but its holder has not written its
/// lease row yet.
pub const PENDING_HOLDER_RETRY: Duration = Duration::from_millis(50);
/// How often [`authkeeper_core::CredentialStore::wait_for_change`] polls the generation.
pub const CHANGE_POLL_INTERVAL: Duration = Duration::from_millis(15);

/// The embedded store. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The write connection, shared by group commit.
    writes: group_commit::GroupCommit,
    /// A second connection for reads: they see committed data only and never wait for a
    /// batch's `fsync`.
    reader: Mutex<Connection>,
    keyring: RwLock<Keyring>,
    key_file: Option<PathBuf>,
    /// Bound into every sealed value (see [`crate::seal::Binding`]).
    store_id: StoreId,
    locks: LockDir,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("key_id", &self.key_id())
            .field("key_file", &self.inner.key_file)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating when missing, mode 0600) the store at `path` with `keyring`, applying
    /// schema migrations. Blocks briefly; call it at startup or from the blocking pool.
    ///
    /// Fails with [`StoreError::Corrupt`] for a file that is not an authkeeper store or comes from
    /// a newer version (left untouched), and with [`StoreError::Decrypt`] when the store was
    /// sealed with another key.
    pub fn open(path: impl AsRef<Path>, keyring: Keyring) -> Result<Self, StoreError> {
        Self::open_inner(path.as_ref(), keyring, None)
    }

    /// Opens the store with the keys of `key_file`. The file is re-read when another process
    /// re-keys the store, and [`SqliteStore::rekey`] rewrites it.
    pub fn open_with_key_file(
        path: impl AsRef<Path>,
        key_file: impl AsRef<Path>,
    ) -> Result<Self, StoreError> {
        let key_file = key_file.as_ref();
        let keyring = key::read_key_file(key_file)?;
        Self::open_inner(path.as_ref(), keyring, Some(key_file.to_owned()))
    }

    /// Finds the key as [`key::resolve_key`] does (`AUTHKEEPER_KEY`, the configured key file, or
    /// `<path>.key`, generated for a new store) and opens the store. The [`KeyOrigin`] tells
    /// whether a key was just generated, so the caller can tell the user to back it up.
    pub fn open_with_settings(
        path: impl AsRef<Path>,
        settings: &KeySettings,
    ) -> Result<(Self, KeyOrigin), StoreError> {
        let path = path.as_ref();
        let resolved = key::resolve_key(settings, path)?;
        let key_file = resolved.origin.key_file().map(Path::to_owned);
        let store = Self::open_inner(path, resolved.keyring, key_file)?;
        Ok((store, resolved.origin))
    }

    fn open_inner(
        path: &Path,
        keyring: Keyring,
        key_file: Option<PathBuf>,
    ) -> Result<Self, StoreError> {
        let in_file = |err: StoreError| match err {
            StoreError::Corrupt(message) => {
                StoreError::Corrupt(format!("{}: {message}", path.display()))
            }
            other => other,
        };
        create_private_file(path)?;
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| {
            StoreError::unavailable(format!("cannot open the store {}", path.display()), e)
        })?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
        // Read-only checks first: a foreign, damaged or newer file is refused before any write.
        let version = migrations::check_version(&conn).map_err(in_file)?;
        if version > 0 {
            quick_check(&conn).map_err(in_file)?;
        }
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| in_file(sql_error(e)))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), journal_mode = %mode, "the store could not switch to WAL mode");
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql_error)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(sql_error)?;
        migrations::migrate(&mut conn).map_err(in_file)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            restrict_permissions(Path::new(&file));
        }
        let store_id = open_store_keys(&mut conn, &keyring, path)?;
        let locks = LockDir::open(path)?;
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| {
            StoreError::unavailable(format!("cannot open the store {}", path.display()), e)
        })?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(sql_error)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writes: group_commit::GroupCommit::new(conn),
                reader: Mutex::new(reader),
                keyring: RwLock::new(keyring),
                key_file,
                store_id,
                locks,
            }),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The key file in use, unless the key came from the environment or the caller.
    pub fn key_file(&self) -> Option<&Path> {
        self.inner.key_file.as_deref()
    }

    /// The id of the key that seals new values.
    pub fn key_id(&self) -> KeyId {
        self.inner.keyring().primary().id()
    }

    /// The store's identity, bound into every sealed value: a value copied in from another
    /// store does not open.
    pub fn store_id(&self) -> StoreId {
        self.inner.store_id
    }

    /// Re-seals every stored value (credentials, records of every kind, the key check)
    /// with `new_key` and returns how many credentials were re-sealed. Crash-safe order when the store has a key file:
    ///
    /// 1. the key file is replaced atomically by `new_key` followed by the old keys;
    /// 2. every row is re-sealed in one transaction;
    /// 3. the key file is replaced by `new_key` alone.
    ///
    /// A crash between any two steps leaves every value readable with the key file as it is.
    /// Other processes pick up the new key file on their own. Without a key file (the key came
    /// from `AUTHKEEPER_KEY` or the caller), step 2 is the whole rekey and the caller must switch
    /// `AUTHKEEPER_KEY` to the new key (e.g. [`SealKey::to_base64`]) before the next start, and
    /// restart other processes using the store. Run one rekey at a time.
    pub async fn rekey(&self, new_key: SealKey) -> Result<usize, StoreError> {
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.rekey(new_key)).await
    }

    async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(move || work(&inner)).await
    }
}

async fn blocking<T, F>(work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Other {
            message: "a store task failed".to_owned(),
            source: Some(Box::new(e)),
        })?
}

impl Inner {
    /// The read connection.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction open (reads autocommit).
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `work` as one atomic write, durable when this returns `Ok` (see [`group_commit`]).
    /// Nothing of it is written when it fails.
    fn write<T>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.writes.write(work)
    }
}
