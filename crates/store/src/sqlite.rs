//! [`SqliteStore`]: the embedded store, one SQLite file (WAL, `synchronous=FULL`) shared by every
//! process on the machine.
//!
//! Secrets live only in sealed blobs (see [`crate::seal`]); names, generations, expiry and status
//! are plaintext columns. Checkpoints and browser-session records (table `sessions`: site, id,
//! version, sealed document with kind `session` and name `SITE/ID`) are sealed the same way. The refresh lease combines an OS lock per credential (released by the
//! kernel when its holder dies, see [`crate::lock`]) with a lease row carrying a monotonic fence
//! that conditional writes check. Every database call runs on the blocking pool, and no
//! transaction is ever held across an `await`.

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension as _, Transaction, TransactionBehavior,
    params,
};
use zeroize::Zeroizing;

use authkeeper_core::store::{
    CHECKPOINT_KIND, SESSION_KIND, StoredCheckpoint, StoredSession, validate_name,
};
use authkeeper_core::{
    CredentialState, CredentialStatus, CredentialSummary, Lease, LeaseAttempt, Store, StoreError,
    StoredCredential, Timestamp, TokenSet, WriteOutcome,
};

use crate::key::{self, KeyOrigin, KeySettings};
use crate::lock::LockDir;
use crate::migrations;
use crate::seal::{KeyId, Keyring, SealError, SealKey, sealed_key_id};

/// The record kind of a sealed token set (part of its associated data).
pub const CREDENTIAL_KIND: &str = "credential";
/// The record kind of the value that checks the key when the store is opened.
pub const KEY_CHECK_KIND: &str = "key check";
/// How long a write waits for another process's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// What `Busy::held_until` says when the OS lock is held but its holder has not written its
/// lease row yet.
pub const PENDING_HOLDER_RETRY: Duration = Duration::from_millis(50);
/// How often [`Store::wait_for_change`] polls the generation.
pub const CHANGE_POLL_INTERVAL: Duration = Duration::from_millis(15);

const KEY_CHECK_NAME: &str = "store";
const KEY_CHECK_PLAINTEXT: &[u8] = b"authkeeper key check v1";

/// The embedded store. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
    keyring: RwLock<Keyring>,
    key_file: Option<PathBuf>,
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
        check_or_write_key_check(&mut conn, &keyring, path)?;
        let locks = LockDir::open(path)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                conn: Mutex::new(conn),
                keyring: RwLock::new(keyring),
                key_file,
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

    /// Re-seals every stored value (credentials, checkpoints, session records, the key check)
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

/// Re-seals every checkpoint with the primary key of `keyring` (part of a rekey).
fn reseal_checkpoints(tx: &Transaction<'_>, keyring: &Keyring) -> Result<(), StoreError> {
    let rows: Vec<(String, Vec<u8>)> = {
        let mut statement = tx
            .prepare("SELECT task, sealed FROM checkpoints")
            .map_err(sql_error)?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(sql_error)?;
        rows.collect::<Result<_, _>>().map_err(sql_error)?
    };
    for (task, sealed) in &rows {
        let plaintext = keyring
            .open(CHECKPOINT_KIND, task, sealed)
            .map_err(|e| e.into_store_error(CHECKPOINT_KIND, task))?;
        let resealed = keyring
            .seal(CHECKPOINT_KIND, task, &plaintext)
            .map_err(|e| e.into_store_error(CHECKPOINT_KIND, task))?;
        tx.execute(
            "UPDATE checkpoints SET sealed = ?2 WHERE task = ?1",
            params![task, resealed],
        )
        .map_err(sql_error)?;
    }
    Ok(())
}

/// The name a session record is sealed under (its associated data): `SITE/ID`. Sites and ids
/// are validated names, which never contain `/`, so the pair is unambiguous.
pub fn session_name(site: &str, id: &str) -> String {
    format!("{site}/{id}")
}

/// Re-seals every session record with the primary key of `keyring` (part of a rekey).
fn reseal_sessions(tx: &Transaction<'_>, keyring: &Keyring) -> Result<(), StoreError> {
    let rows: Vec<(String, String, Vec<u8>)> = {
        let mut statement = tx
            .prepare("SELECT site, id, sealed FROM sessions")
            .map_err(sql_error)?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .map_err(sql_error)?;
        rows.collect::<Result<_, _>>().map_err(sql_error)?
    };
    for (site, id, sealed) in &rows {
        let name = session_name(site, id);
        let plaintext = keyring
            .open(SESSION_KIND, &name, sealed)
            .map_err(|e| e.into_store_error(SESSION_KIND, &name))?;
        let resealed = keyring
            .seal(SESSION_KIND, &name, &plaintext)
            .map_err(|e| e.into_store_error(SESSION_KIND, &name))?;
        tx.execute(
            "UPDATE sessions SET sealed = ?3 WHERE site = ?1 AND id = ?2",
            params![site, id, resealed],
        )
        .map_err(sql_error)?;
    }
    Ok(())
}

/// The version of a session row as a `u64`.
fn session_version(name: &str, version: i64) -> Result<u64, StoreError> {
    u64::try_from(version)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| StoreError::Corrupt(format!("session `{name}`: invalid version")))
}

/// Creates an empty store file with mode 0600 unless it exists (SQLite treats an empty file as
/// an empty database).
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::unavailable(
            format!("cannot create the store {}", path.display()),
            e,
        )),
    }
}

/// Removes group and other permissions from `path` when it exists.
fn restrict_permissions(path: &Path) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0
        && let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot restrict the store file to its owner");
    }
}

fn quick_check(conn: &Connection) -> Result<(), StoreError> {
    let result: String = conn
        .query_row("PRAGMA quick_check(1)", [], |row| row.get(0))
        .map_err(sql_error)?;
    if result == "ok" {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "the database file is damaged (integrity check: {result})"
        )))
    }
}

/// Verifies that `keyring` opens the store's key-check value, or writes one for a new store.
fn check_or_write_key_check(
    conn: &mut Connection,
    keyring: &Keyring,
    path: &Path,
) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    let existing: Option<Vec<u8>> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'key_check'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(sql_error)?;
    match existing {
        Some(sealed) => {
            keyring
                .open(KEY_CHECK_KIND, KEY_CHECK_NAME, &sealed)
                .map_err(|e| e.into_store_error(KEY_CHECK_KIND, &path.display().to_string()))?;
            Ok(())
        }
        None => {
            write_key_check(&tx, keyring)?;
            tx.commit().map_err(sql_error)
        }
    }
}

fn write_key_check(tx: &Transaction<'_>, keyring: &Keyring) -> Result<(), StoreError> {
    let sealed = keyring
        .seal(KEY_CHECK_KIND, KEY_CHECK_NAME, KEY_CHECK_PLAINTEXT)
        .map_err(|e| e.into_store_error(KEY_CHECK_KIND, KEY_CHECK_NAME))?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('key_check', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![sealed],
    )
    .map_err(sql_error)?;
    Ok(())
}

/// Maps a SQLite error to a [`StoreError`] that says what to do.
pub(crate) fn sql_error(err: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    match &err {
        E::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::NotADatabase => {
                StoreError::Corrupt("the file is not a SQLite database".to_owned())
            }
            ErrorCode::DatabaseCorrupt => StoreError::Corrupt(
                "the database file is damaged (SQLite reports it malformed)".to_owned(),
            ),
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::unavailable(
                "the store is busy: another process held its write lock for too long",
                err,
            ),
            ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::NoLargeFileSupport => {
                StoreError::unavailable("cannot use the store file", err)
            }
            _ => StoreError::Other {
                message: "store database error".to_owned(),
                source: Some(Box::new(err)),
            },
        },
        E::InvalidColumnType(..)
        | E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..) => {
            StoreError::Corrupt(format!("unexpected value in the database: {err}"))
        }
        _ => StoreError::Other {
            message: "store database error".to_owned(),
            source: Some(Box::new(err)),
        },
    }
}

fn corrupt_row(name: &str, what: &str) -> StoreError {
    StoreError::Corrupt(format!("credential `{name}`: {what}"))
}

fn to_u64(name: &str, column: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt_row(name, &format!("negative {column}")))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The plaintext status columns of a credential row.
struct StatusColumns {
    state: String,
    last_refresh_at: Option<i64>,
    failures: i64,
    reason: Option<String>,
    next_attempt_at: Option<i64>,
}

impl StatusColumns {
    /// Reads the five status columns starting at `first`.
    fn read(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Self> {
        Ok(StatusColumns {
            state: row.get(first)?,
            last_refresh_at: row.get(first + 1)?,
            failures: row.get(first + 2)?,
            reason: row.get(first + 3)?,
            next_attempt_at: row.get(first + 4)?,
        })
    }

    fn into_status(self, name: &str) -> Result<CredentialStatus, StoreError> {
        Ok(CredentialStatus {
            state: CredentialState::parse(&self.state)
                .ok_or_else(|| corrupt_row(name, "unknown state"))?,
            last_refresh_at: self.last_refresh_at.map(Timestamp::from_millis),
            failures: u32::try_from(self.failures)
                .map_err(|_| corrupt_row(name, "failures out of range"))?,
            reason: self.reason,
            next_attempt_at: self.next_attempt_at.map(Timestamp::from_millis),
        })
    }
}

const STATUS_COLUMNS: &str = "state, last_refresh_at, failures, reason, next_attempt_at";

/// A lease row.
struct LeaseRow {
    owner: String,
    fence: i64,
    expires_at: i64,
    via_flock: bool,
    released: bool,
}

fn read_lease(tx: &Transaction<'_>, name: &str) -> Result<Option<LeaseRow>, StoreError> {
    tx.query_row(
        "SELECT owner, fence, expires_at, via_flock, released FROM leases WHERE name = ?1",
        params![name],
        |row| {
            Ok(LeaseRow {
                owner: row.get(0)?,
                fence: row.get(1)?,
                expires_at: row.get(2)?,
                via_flock: row.get::<_, i64>(3)? != 0,
                released: row.get::<_, i64>(4)? != 0,
            })
        },
    )
    .optional()
    .map_err(sql_error)
}

fn write_lease(
    tx: &Transaction<'_>,
    name: &str,
    owner: &str,
    fence: i64,
    expires_at: Timestamp,
    via_flock: bool,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO leases (name, owner, fence, expires_at, via_flock, released) VALUES (?1, ?2, ?3, ?4, ?5, 0)
         ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, fence = excluded.fence,
             expires_at = excluded.expires_at, via_flock = excluded.via_flock, released = 0",
        params![name, owner, fence, expires_at.as_millis(), i64::from(via_flock)],
    )
    .map_err(sql_error)?;
    Ok(())
}

fn stored_generation(tx: &Transaction<'_>, name: &str) -> Result<u64, StoreError> {
    let generation: Option<i64> = tx
        .query_row(
            "SELECT generation FROM credentials WHERE name = ?1",
            params![name],
            |row| row.get(0),
        )
        .optional()
        .map_err(sql_error)?;
    to_u64(name, "generation", generation.unwrap_or(0))
}

impl Inner {
    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction open (it rolls back on drop).
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn keyring(&self) -> Keyring {
        self.keyring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_keyring(&self, keyring: Keyring) {
        *self.keyring.write().unwrap_or_else(PoisonError::into_inner) = keyring;
    }

    /// Re-reads the key file (another process may have re-keyed the store); `false` without one.
    fn reload_keyring(&self) -> Result<bool, StoreError> {
        let Some(path) = &self.key_file else {
            return Ok(false);
        };
        let keyring = key::read_key_file(path)?;
        tracing::info!(key_file = %path.display(), key_id = %keyring.primary().id(), "reloaded the store key file");
        self.set_keyring(keyring);
        Ok(true)
    }

    fn unseal(
        &self,
        kind: &'static str,
        name: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let opened = match self.keyring().open(kind, name, sealed) {
            Err(SealError::UnknownKeyId(_)) if self.reload_keyring()? => {
                self.keyring().open(kind, name, sealed)
            }
            other => other,
        };
        opened.map_err(|e| e.into_store_error(kind, name))
    }

    /// The keyring to seal with inside write transaction `tx`: makes sure the store's key check
    /// was sealed by one of our keys, re-reading the key file once if another process re-keyed.
    fn sealing_keyring(&self, tx: &Transaction<'_>) -> Result<Keyring, StoreError> {
        let check: Option<Vec<u8>> = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'key_check'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(sql_error)?;
        let Some(check) = check else {
            return Ok(self.keyring());
        };
        let id = sealed_key_id(&check)
            .map_err(|e| e.into_store_error(KEY_CHECK_KIND, KEY_CHECK_NAME))?;
        let keyring = self.keyring();
        if keyring.key(id).is_some() {
            return Ok(keyring);
        }
        if self.reload_keyring()? {
            let keyring = self.keyring();
            if keyring.key(id).is_some() {
                return Ok(keyring);
            }
        }
        Err(StoreError::Decrypt {
            kind: KEY_CHECK_KIND,
            name: self.path.display().to_string(),
            reason: format!(
                "the store was re-keyed to key id {id}, which this process does not have: restart with the new key"
            ),
        })
    }

    fn seal_tokens(
        &self,
        keyring: &Keyring,
        name: &str,
        tokens: &TokenSet,
    ) -> Result<Vec<u8>, StoreError> {
        keyring
            .seal(CREDENTIAL_KIND, name, &tokens.to_secret_json())
            .map_err(|e| e.into_store_error(CREDENTIAL_KIND, name))
    }

    fn load(&self, name: &str) -> Result<Option<StoredCredential>, StoreError> {
        let row = self
            .conn()
            .query_row(
                &format!(
                    "SELECT generation, sealed, {STATUS_COLUMNS} FROM credentials WHERE name = ?1"
                ),
                params![name],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, Vec<u8>>(1)?,
                        StatusColumns::read(row, 2)?,
                    ))
                },
            )
            .optional()
            .map_err(sql_error)?;
        let Some((generation, sealed, status)) = row else {
            return Ok(None);
        };
        let generation = to_u64(name, "generation", generation)?;
        let status = status.into_status(name)?;
        let plaintext = self.unseal(CREDENTIAL_KIND, name, &sealed)?;
        let tokens =
            crate::record::decode_token_set(&plaintext).map_err(|what| corrupt_row(name, &what))?;
        Ok(Some(StoredCredential {
            name: name.to_owned(),
            generation,
            tokens,
            status,
        }))
    }

    fn list(&self) -> Result<Vec<CredentialSummary>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(&format!(
                "SELECT name, generation, expires_at, {STATUS_COLUMNS} FROM credentials ORDER BY name"
            ))
            .map_err(sql_error)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                    StatusColumns::read(row, 3)?,
                ))
            })
            .map_err(sql_error)?;
        let mut summaries = Vec::new();
        for row in rows {
            let (name, generation, expires_at, status) = row.map_err(sql_error)?;
            summaries.push(CredentialSummary {
                generation: to_u64(&name, "generation", generation)?,
                expires_at: Timestamp::from_millis(expires_at),
                status: status.into_status(&name)?,
                name,
            });
        }
        Ok(summaries)
    }

    /// Writes `tokens` as `generation` with a valid status, inside `tx`.
    fn write_tokens(
        &self,
        tx: &Transaction<'_>,
        name: &str,
        generation: u64,
        tokens: &TokenSet,
        last_refresh_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let keyring = self.sealing_keyring(tx)?;
        let sealed = self.seal_tokens(&keyring, name, tokens)?;
        tx.execute(
            "INSERT INTO credentials (name, generation, sealed, expires_at, state, last_refresh_at, failures,
                 reason, next_attempt_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'valid', ?5, 0, NULL, NULL, ?6)
             ON CONFLICT(name) DO UPDATE SET generation = excluded.generation, sealed = excluded.sealed,
                 expires_at = excluded.expires_at, state = 'valid', last_refresh_at = excluded.last_refresh_at,
                 failures = 0, reason = NULL, next_attempt_at = NULL, updated_at = excluded.updated_at",
            params![
                name,
                to_i64(generation),
                sealed,
                tokens.expires_at.as_millis(),
                last_refresh_at.map(Timestamp::as_millis),
                now.as_millis(),
            ],
        )
        .map_err(sql_error)?;
        Ok(())
    }

    fn put(&self, name: &str, tokens: &TokenSet, now: Timestamp) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let generation = stored_generation(&tx, name)?.saturating_add(1);
        self.write_tokens(&tx, name, generation, tokens, None, now)?;
        tx.commit().map_err(sql_error)?;
        Ok(generation)
    }

    fn compare_and_put(
        &self,
        name: &str,
        expected_generation: u64,
        fence: Option<u64>,
        tokens: &TokenSet,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let current = stored_generation(&tx, name)?;
        if current != expected_generation {
            return Ok(WriteOutcome::Conflict {
                current_generation: current,
            });
        }
        if let Some(fence) = fence {
            let lease_fence = read_lease(&tx, name)?.map(|lease| lease.fence);
            if lease_fence != Some(to_i64(fence)) {
                return Ok(WriteOutcome::Conflict {
                    current_generation: current,
                });
            }
        }
        let generation = current.saturating_add(1);
        self.write_tokens(&tx, name, generation, tokens, Some(now), now)?;
        tx.commit().map_err(sql_error)?;
        Ok(WriteOutcome::Written { generation })
    }

    fn set_status(
        &self,
        name: &str,
        generation: u64,
        status: &CredentialStatus,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let updated = tx.execute(
            "UPDATE credentials SET state = ?2, last_refresh_at = ?3, failures = ?4, reason = ?5,
                 next_attempt_at = ?6 WHERE name = ?1 AND generation = ?7",
            params![
                name,
                status.state.as_str(),
                status.last_refresh_at.map(Timestamp::as_millis),
                i64::from(status.failures),
                status.reason,
                status.next_attempt_at.map(Timestamp::as_millis),
                i64::try_from(generation).unwrap_or(i64::MAX),
            ],
        )
        .map_err(sql_error)?;
        tx.commit().map_err(sql_error)?;
        Ok(updated == 1)
    }

    fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        // The lease row stays: its fence must never go back.
        let deleted = tx
            .execute("DELETE FROM credentials WHERE name = ?1", params![name])
            .map_err(sql_error)?;
        tx.commit().map_err(sql_error)?;
        Ok(deleted > 0)
    }

    fn try_acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<LeaseAttempt, StoreError> {
        let expires_at = now + ttl;
        let os_lock = self.locks.try_lock(name)?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let row = read_lease(&tx, name)?;
        let active = |row: &LeaseRow| !row.released && row.expires_at > now.as_millis();
        let via_flock = os_lock.is_some();
        match (&os_lock, &row) {
            // We hold the OS lock, but a live holder took over without it (its predecessor hung).
            (Some(_), Some(row)) if active(row) && !row.via_flock && row.owner != owner => {
                return Ok(LeaseAttempt::Busy {
                    held_until: Timestamp::from_millis(row.expires_at),
                });
            }
            (Some(_), _) => {}
            // The OS lock is held and its holder's row is still valid.
            (None, Some(row)) if active(row) => {
                return Ok(LeaseAttempt::Busy {
                    held_until: Timestamp::from_millis(row.expires_at),
                });
            }
            // The OS lock holder hung past its TTL: take over without the OS lock.
            (None, Some(row)) if !row.released => {}
            // The OS lock holder has not written its row yet (or is releasing).
            (None, _) => {
                return Ok(LeaseAttempt::Busy {
                    held_until: now + PENDING_HOLDER_RETRY,
                });
            }
        }
        let previous_fence = row.as_ref().map_or(0, |row| row.fence);
        let fence = previous_fence
            .checked_add(1)
            .ok_or_else(|| corrupt_row(name, "lease fence overflow"))?;
        write_lease(&tx, name, owner, fence, expires_at, via_flock)?;
        tx.commit().map_err(sql_error)?;
        drop(conn);
        let took_over_abandoned = row.as_ref().is_some_and(|row| !row.released);
        if took_over_abandoned {
            tracing::warn!(
                credential = name,
                previous_owner = row.as_ref().map(|row| row.owner.as_str()),
                via_os_lock = via_flock,
                "took over a refresh lease its holder never released"
            );
        }
        Ok(LeaseAttempt::Acquired(Lease {
            name: name.to_owned(),
            owner: owner.to_owned(),
            fence: to_u64(name, "fence", fence)?,
            expires_at,
            took_over_abandoned,
            guard: os_lock.map(|guard| Box::new(guard) as Box<dyn Send + Sync>),
        }))
    }

    fn release_lease(&self, mut lease: Lease) -> Result<(), StoreError> {
        let guard = lease.guard.take();
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        tx.execute(
            "UPDATE leases SET released = 1, in_flight = NULL WHERE name = ?1 AND owner = ?2 AND fence = ?3 AND released = 0",
            params![lease.name, lease.owner, to_i64(lease.fence)],
        )
        .map_err(sql_error)?;
        tx.commit().map_err(sql_error)?;
        // Only now may the next holder take the OS lock: it must see the row released.
        drop(guard);
        Ok(())
    }

    fn mark_in_flight(
        &self,
        name: &str,
        fence: u64,
        generation: u64,
    ) -> Result<Option<u64>, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let previous: Option<Option<i64>> = tx
            .query_row(
                "SELECT in_flight FROM leases WHERE name = ?1",
                params![name],
                |row| row.get(0),
            )
            .optional()
            .map_err(sql_error)?;
        tx.execute(
            "UPDATE leases SET in_flight = ?3 WHERE name = ?1 AND fence = ?2 AND released = 0",
            params![name, to_i64(fence), to_i64(generation)],
        )
        .map_err(sql_error)?;
        tx.commit().map_err(sql_error)?;
        previous
            .flatten()
            .map(|g| to_u64(name, "in_flight", g))
            .transpose()
    }

    fn put_checkpoint(&self, task: &str, data: &[u8], now: Timestamp) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let keyring = self.sealing_keyring(&tx)?;
        let sealed = keyring
            .seal(CHECKPOINT_KIND, task, data)
            .map_err(|e| e.into_store_error(CHECKPOINT_KIND, task))?;
        let version: i64 = tx
            .query_row(
                "INSERT INTO checkpoints (task, version, sealed, updated_at) VALUES (?1, 1, ?2, ?3)
                 ON CONFLICT(task) DO UPDATE SET version = version + 1, sealed = excluded.sealed,
                     updated_at = excluded.updated_at
                 RETURNING version",
                params![task, sealed, now.as_millis()],
                |row| row.get(0),
            )
            .map_err(sql_error)?;
        tx.commit().map_err(sql_error)?;
        to_u64(task, "version", version)
    }

    fn get_checkpoint(&self, task: &str) -> Result<Option<StoredCheckpoint>, StoreError> {
        let row = self
            .conn()
            .query_row(
                "SELECT version, sealed, updated_at FROM checkpoints WHERE task = ?1",
                params![task],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, Vec<u8>>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(sql_error)?;
        let Some((version, sealed, updated_at)) = row else {
            return Ok(None);
        };
        let data = self.unseal(CHECKPOINT_KIND, task, &sealed)?;
        Ok(Some(StoredCheckpoint {
            task: task.to_owned(),
            data,
            version: to_u64(task, "version", version)?,
            updated_at: Timestamp::from_millis(updated_at),
        }))
    }

    fn delete_checkpoint(&self, task: &str) -> Result<bool, StoreError> {
        let deleted = self
            .conn()
            .execute("DELETE FROM checkpoints WHERE task = ?1", params![task])
            .map_err(sql_error)?;
        Ok(deleted > 0)
    }

    fn load_session(&self, site: &str, id: &str) -> Result<Option<StoredSession>, StoreError> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn()
            .query_row(
                "SELECT version, sealed FROM sessions WHERE site = ?1 AND id = ?2",
                params![site, id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(sql_error)?;
        row.map(|(version, sealed)| {
            self.open_session(site.to_owned(), id.to_owned(), version, &sealed)
        })
        .transpose()
    }

    /// Unseals one session row.
    fn open_session(
        &self,
        site: String,
        id: String,
        version: i64,
        sealed: &[u8],
    ) -> Result<StoredSession, StoreError> {
        let name = session_name(&site, &id);
        let version = session_version(&name, version)?;
        let data = self.unseal(SESSION_KIND, &name, sealed)?;
        Ok(StoredSession {
            site,
            id,
            data,
            version,
        })
    }

    fn list_sessions(&self, site: &str) -> Result<Vec<StoredSession>, StoreError> {
        let rows: Vec<(String, i64, Vec<u8>)> = {
            let conn = self.conn();
            let mut statement = conn
                .prepare("SELECT id, version, sealed FROM sessions WHERE site = ?1 ORDER BY id")
                .map_err(sql_error)?;
            let rows = statement
                .query_map(params![site], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .map_err(sql_error)?;
            rows.collect::<Result<_, _>>().map_err(sql_error)?
        };
        rows.into_iter()
            .map(|(id, version, sealed)| self.open_session(site.to_owned(), id, version, &sealed))
            .collect()
    }

    fn list_session_sites(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT DISTINCT site FROM sessions ORDER BY site")
            .map_err(sql_error)?;
        let rows = statement
            .query_map([], |row| row.get(0))
            .map_err(sql_error)?;
        rows.collect::<Result<_, _>>().map_err(sql_error)
    }

    fn compare_and_put_session(
        &self,
        site: &str,
        id: &str,
        expected_version: u64,
        data: &[u8],
    ) -> Result<Option<u64>, StoreError> {
        let name = session_name(site, id);
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error)?;
        let current: Option<i64> = tx
            .query_row(
                "SELECT version FROM sessions WHERE site = ?1 AND id = ?2",
                params![site, id],
                |row| row.get(0),
            )
            .optional()
            .map_err(sql_error)?;
        let current = current
            .map(|v| session_version(&name, v))
            .transpose()?
            .unwrap_or(0);
        if current != expected_version {
            // Dropping the transaction rolls it back: nothing was written.
            return Ok(None);
        }
        let version = current
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt(format!("session `{name}`: version overflow")))?;
        let keyring = self.sealing_keyring(&tx)?;
        let sealed = keyring
            .seal(SESSION_KIND, &name, data)
            .map_err(|e| e.into_store_error(SESSION_KIND, &name))?;
        tx.execute(
            "INSERT INTO sessions (site, id, version, sealed) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(site, id) DO UPDATE SET version = excluded.version, sealed = excluded.sealed",
            params![site, id, to_i64(version), sealed],
        )
        .map_err(sql_error)?;
        tx.commit().map_err(sql_error)?;
        Ok(Some(version))
    }

    fn delete_session(
        &self,
        site: &str,
        id: &str,
        expected_version: u64,
    ) -> Result<bool, StoreError> {
        // One statement: the version check and the delete are atomic, and durable on return.
        let deleted = self
            .conn()
            .execute(
                "DELETE FROM sessions WHERE site = ?1 AND id = ?2 AND (?3 = 0 OR version = ?3)",
                params![site, id, to_i64(expected_version)],
            )
            .map_err(sql_error)?;
        Ok(deleted > 0)
    }

    fn generation(&self, name: &str) -> Result<u64, StoreError> {
        let generation: Option<i64> = self
            .conn()
            .query_row(
                "SELECT generation FROM credentials WHERE name = ?1",
                params![name],
                |row| row.get(0),
            )
            .optional()
            .map_err(sql_error)?;
        to_u64(name, "generation", generation.unwrap_or(0))
    }

    fn rekey(&self, new_key: SealKey) -> Result<usize, StoreError> {
        let old = self.keyring();
        let mut keys = vec![old.primary().clone()];
        keys.extend(old.previous().iter().cloned());
        let transitional = Keyring::with_previous(new_key.clone(), keys);
        // Step 1: the new key seals from now on; the old ones still open.
        if let Some(path) = &self.key_file {
            key::write_key_file(path, &transitional)?;
        }
        self.set_keyring(transitional.clone());
        // Step 2: re-seal every row in one transaction.
        let count = {
            let mut conn = self.conn();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql_error)?;
            let rows: Vec<(String, Vec<u8>)> = {
                let mut statement = tx
                    .prepare("SELECT name, sealed FROM credentials")
                    .map_err(sql_error)?;
                let rows = statement
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                    .map_err(sql_error)?;
                rows.collect::<Result<_, _>>().map_err(sql_error)?
            };
            for (name, sealed) in &rows {
                let plaintext = transitional
                    .open(CREDENTIAL_KIND, name, sealed)
                    .map_err(|e| e.into_store_error(CREDENTIAL_KIND, name))?;
                let resealed = transitional
                    .seal(CREDENTIAL_KIND, name, &plaintext)
                    .map_err(|e| e.into_store_error(CREDENTIAL_KIND, name))?;
                tx.execute(
                    "UPDATE credentials SET sealed = ?2 WHERE name = ?1",
                    params![name, resealed],
                )
                .map_err(sql_error)?;
            }
            reseal_checkpoints(&tx, &transitional)?;
            reseal_sessions(&tx, &transitional)?;
            write_key_check(&tx, &transitional)?;
            tx.commit().map_err(sql_error)?;
            rows.len()
        };
        // Step 3: forget the old keys.
        let final_keyring = Keyring::new(new_key);
        if let Some(path) = &self.key_file {
            key::write_key_file(path, &final_keyring)?;
        }
        self.set_keyring(final_keyring);
        tracing::info!(store = %self.path.display(), key_id = %self.keyring().primary().id(), credentials = count, "re-keyed the store");
        Ok(count)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self, name: &str) -> Result<Option<StoredCredential>, StoreError> {
        validate_name(name)?;
        let name = name.to_owned();
        self.run(move |inner| inner.load(&name)).await
    }

    async fn list(&self) -> Result<Vec<CredentialSummary>, StoreError> {
        self.run(Inner::list).await
    }

    async fn put(&self, name: &str, tokens: &TokenSet, now: Timestamp) -> Result<u64, StoreError> {
        validate_name(name)?;
        let (name, tokens) = (name.to_owned(), tokens.clone());
        self.run(move |inner| inner.put(&name, &tokens, now)).await
    }

    async fn compare_and_put(
        &self,
        name: &str,
        expected_generation: u64,
        fence: Option<u64>,
        tokens: &TokenSet,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        validate_name(name)?;
        let (name, tokens) = (name.to_owned(), tokens.clone());
        self.run(move |inner| {
            inner.compare_and_put(&name, expected_generation, fence, &tokens, now)
        })
        .await
    }

    async fn set_status(
        &self,
        name: &str,
        generation: u64,
        status: &CredentialStatus,
    ) -> Result<bool, StoreError> {
        validate_name(name)?;
        let (name, status) = (name.to_owned(), status.clone());
        self.run(move |inner| inner.set_status(&name, generation, &status))
            .await
    }

    async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        validate_name(name)?;
        let name = name.to_owned();
        self.run(move |inner| inner.delete(&name)).await
    }

    async fn try_acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<LeaseAttempt, StoreError> {
        validate_name(name)?;
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.run(move |inner| inner.try_acquire_lease(&name, &owner, now, ttl))
            .await
    }

    async fn release_lease(&self, lease: Lease) -> Result<(), StoreError> {
        validate_name(&lease.name)?;
        self.run(move |inner| inner.release_lease(lease)).await
    }

    async fn mark_in_flight(
        &self,
        name: &str,
        fence: u64,
        generation: u64,
    ) -> Result<Option<u64>, StoreError> {
        validate_name(name)?;
        let name = name.to_owned();
        self.run(move |inner| inner.mark_in_flight(&name, fence, generation))
            .await
    }

    async fn put_checkpoint(
        &self,
        task: &str,
        data: &[u8],
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        validate_name(task)?;
        let (task, data) = (task.to_owned(), Zeroizing::new(data.to_vec()));
        self.run(move |inner| inner.put_checkpoint(&task, &data, now))
            .await
    }

    async fn get_checkpoint(&self, task: &str) -> Result<Option<StoredCheckpoint>, StoreError> {
        validate_name(task)?;
        let task = task.to_owned();
        self.run(move |inner| inner.get_checkpoint(&task)).await
    }

    async fn delete_checkpoint(&self, task: &str) -> Result<bool, StoreError> {
        validate_name(task)?;
        let task = task.to_owned();
        self.run(move |inner| inner.delete_checkpoint(&task)).await
    }

    async fn list_sessions(&self, site: &str) -> Result<Vec<StoredSession>, StoreError> {
        validate_name(site)?;
        let site = site.to_owned();
        self.run(move |inner| inner.list_sessions(&site)).await
    }

    async fn list_session_sites(&self) -> Result<Vec<String>, StoreError> {
        self.run(Inner::list_session_sites).await
    }

    async fn load_session(
        &self,
        site: &str,
        id: &str,
    ) -> Result<Option<StoredSession>, StoreError> {
        validate_name(site)?;
        validate_name(id)?;
        let (site, id) = (site.to_owned(), id.to_owned());
        self.run(move |inner| inner.load_session(&site, &id)).await
    }

    async fn compare_and_put_session(
        &self,
        site: &str,
        id: &str,
        expected_version: u64,
        data: &[u8],
    ) -> Result<Option<u64>, StoreError> {
        validate_name(site)?;
        validate_name(id)?;
        let (site, id, data) = (
            site.to_owned(),
            id.to_owned(),
            Zeroizing::new(data.to_vec()),
        );
        self.run(move |inner| inner.compare_and_put_session(&site, &id, expected_version, &data))
            .await
    }

    async fn delete_session(
        &self,
        site: &str,
        id: &str,
        expected_version: u64,
    ) -> Result<bool, StoreError> {
        validate_name(site)?;
        validate_name(id)?;
        let (site, id) = (site.to_owned(), id.to_owned());
        self.run(move |inner| inner.delete_session(&site, &id, expected_version))
            .await
    }

    async fn wait_for_change(&self, name: &str, seen_generation: u64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let name = name.to_owned();
        loop {
            let current = {
                let name = name.clone();
                self.run(move |inner| inner.generation(&name)).await
            };
            match current {
                Ok(generation) if generation != seen_generation => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(credential = %name, error = %e, "polling the generation failed")
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return;
            }
            tokio::time::sleep(CHANGE_POLL_INTERVAL.min(deadline - now)).await;
        }
    }
}
