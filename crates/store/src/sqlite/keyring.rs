//! The store's keys and identity: the key check and store id written when the store is created,
//! the one-time upgrade to sealing format 2, sealing and unsealing with a key file that another
//! process may re-key, and `rekey` with its one re-seal path.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use zeroize::Zeroizing;

use authkeeper_core::StoreError;

use super::Inner;
use super::errors::{sql_error, to_u64};
use crate::key;
use crate::record::encode_status;
use crate::seal::{
    Binding, CREDENTIAL_KIND, CREDENTIAL_STATUS_KIND, KEY_CHECK_KIND, KEY_CHECK_NAME,
    KEY_CHECK_PLAINTEXT, Keyring, SealError, SealKey, StoreId, is_v1, sealed_key_id,
};

/// How long `rekey` waits for refreshes in flight to be stored.
const REKEY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// How often `rekey` looks again.
const REKEY_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Live leases whose holder is between sending a refresh token and storing the answer.
fn refreshes_in_flight(tx: &Connection) -> Result<i64, StoreError> {
    let now = authkeeper_core::Timestamp::from_system_time(std::time::SystemTime::now());
    tx.query_row(
        "SELECT count(*) FROM leases WHERE released = 0 AND in_flight IS NOT NULL AND expires_at > ?1",
        params![now.as_millis()],
        |row| row.get(0),
    )
    .map_err(sql_error)
}

/// The record kind reported for a record whose row could not be re-sealed.
const RECORD_KIND: &str = "record";

/// Verifies that `keyring` opens the store's key-check value and returns the store's id. A new
/// store gets an id and a key check; a store sealed in format 1 is upgraded to format 2 (every
/// value re-sealed, bound to its version and the new store id) in one transaction.
pub(super) fn open_store_keys(
    conn: &mut Connection,
    keyring: &Keyring,
    path: &Path,
) -> Result<StoreId, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    let wrong_key = |e: SealError| e.into_store_error(KEY_CHECK_KIND, &path.display().to_string());
    let store_id = read_store_id(&tx)?;
    match (read_key_check(&tx)?, store_id) {
        (Some(check), _) if is_v1(&check) => {
            keyring
                .open_v1(KEY_CHECK_KIND, KEY_CHECK_NAME, &check)
                .map_err(wrong_key)?;
            let store = store_id.unwrap_or_else(StoreId::generate);
            let (credentials, records) = upgrade_to_format_2(&tx, keyring, store)?;
            tx.commit().map_err(sql_error)?;
            tracing::info!(store = %path.display(), credentials, records, "upgraded the store to sealing format 2 (values bound to their version and this store)");
            Ok(store)
        }
        (Some(check), Some(store)) => {
            keyring
                .open(&key_check_binding(store), &check)
                .map_err(wrong_key)?;
            Ok(store)
        }
        (Some(_), None) => Err(StoreError::Corrupt(
            "the store has a key check but no store id".to_owned(),
        )),
        (None, _) => {
            let store = store_id.unwrap_or_else(StoreId::generate);
            write_store_id(&tx, store)?;
            write_key_check(&tx, keyring, store)?;
            tx.commit().map_err(sql_error)?;
            Ok(store)
        }
    }
}

fn key_check_binding(store: StoreId) -> Binding<'static> {
    Binding::new(store, KEY_CHECK_KIND, KEY_CHECK_NAME, 0)
}

fn read_meta(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    conn.query_row(
        "SELECT value FROM meta WHERE key = ?1",
        params![key],
        |row| row.get(0),
    )
    .optional()
    .map_err(sql_error)
}

fn write_meta(tx: &Connection, key: &str, value: &[u8]) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )
    .map_err(sql_error)?;
    Ok(())
}

fn read_key_check(conn: &Connection) -> Result<Option<Vec<u8>>, StoreError> {
    read_meta(conn, "key_check")
}

fn read_store_id(conn: &Connection) -> Result<Option<StoreId>, StoreError> {
    read_meta(conn, "store_id")?
        .map(|bytes| {
            StoreId::from_slice(&bytes)
                .ok_or_else(|| StoreError::Corrupt("the store id is malformed".to_owned()))
        })
        .transpose()
}

fn write_store_id(tx: &Connection, store: StoreId) -> Result<(), StoreError> {
    write_meta(tx, "store_id", store.as_bytes())
}

fn write_key_check(tx: &Connection, keyring: &Keyring, store: StoreId) -> Result<(), StoreError> {
    let sealed = keyring
        .seal(&key_check_binding(store), KEY_CHECK_PLAINTEXT)
        .map_err(|e| e.into_store_error(KEY_CHECK_KIND, KEY_CHECK_NAME))?;
    write_meta(tx, "key_check", &sealed)
}

/// A column of sealed values and how to read each row's binding.
struct SealedColumn {
    /// `rowid, kind, name, version, sealed` of every row.
    select: &'static str,
    /// Sets the sealed value of row `?1` to `?2`.
    update: &'static str,
    /// The kind reported when a row cannot be re-sealed.
    what: &'static str,
}

/// Every column holding sealed values.
const SEALED_COLUMNS: [SealedColumn; 3] = [
    SealedColumn {
        select: "SELECT rowid, 'credential', name, generation, sealed FROM credentials",
        update: "UPDATE credentials SET sealed = ?2 WHERE rowid = ?1",
        what: CREDENTIAL_KIND,
    },
    SealedColumn {
        select: "SELECT rowid, 'credential status', name, generation, sealed_status FROM credentials",
        update: "UPDATE credentials SET sealed_status = ?2 WHERE rowid = ?1",
        what: CREDENTIAL_STATUS_KIND,
    },
    SealedColumn {
        select: "SELECT rowid, kind, CASE WHEN item = '' THEN part ELSE part || '/' || item END, \
                 version, sealed FROM records",
        update: "UPDATE records SET sealed = ?2 WHERE rowid = ?1",
        what: RECORD_KIND,
    },
];

/// `rowid, kind, name, version, sealed` of one row of a [`SealedColumn`].
type SealedRow = (i64, String, String, i64, Option<Vec<u8>>);

/// Which format the values of a column are read in.
#[derive(Clone, Copy)]
enum From {
    V1,
    V2(StoreId),
}

/// Re-seals every value of `column` with the primary key of `keyring`, bound to `store`;
/// returns how many (rows without a value are skipped).
fn reseal_column(
    tx: &Connection,
    keyring: &Keyring,
    column: &SealedColumn,
    from: From,
    store: StoreId,
) -> Result<usize, StoreError> {
    let rows: Vec<SealedRow> = {
        let mut statement = tx.prepare(column.select).map_err(sql_error)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
            .map_err(sql_error)?;
        rows.collect::<Result<_, _>>().map_err(sql_error)?
    };
    let mut count = 0;
    for (rowid, kind, name, version, sealed) in &rows {
        let Some(sealed) = sealed else { continue };
        let version = to_u64(column.what, name, "version", *version)?;
        let fail = |e: SealError| e.into_store_error(column.what, name);
        let plaintext = match from {
            From::V1 => keyring.open_v1(kind, name, sealed),
            From::V2(old_store) => {
                keyring.open(&Binding::new(old_store, kind, name, version), sealed)
            }
        }
        .map_err(fail)?;
        let resealed = keyring
            .seal(&Binding::new(store, kind, name, version), &plaintext)
            .map_err(fail)?;
        tx.execute(column.update, params![rowid, resealed])
            .map_err(sql_error)?;
        count += 1;
    }
    Ok(count)
}

/// Re-seals a format-1 store in format 2 and seals each credential's status (trusting the
/// plaintext columns this once); returns how many credentials and records.
fn upgrade_to_format_2(
    tx: &Connection,
    keyring: &Keyring,
    store: StoreId,
) -> Result<(usize, usize), StoreError> {
    let [credentials, _, records] = &SEALED_COLUMNS;
    let credential_count = reseal_column(tx, keyring, credentials, From::V1, store)?;
    let record_count = reseal_column(tx, keyring, records, From::V1, store)?;
    let statuses: Vec<(String, i64, i64, super::credentials::StatusColumns)> = {
        let mut statement = tx
            .prepare(&format!(
                "SELECT name, generation, expires_at, {} FROM credentials",
                super::credentials::STATUS_COLUMNS
            ))
            .map_err(sql_error)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    super::credentials::StatusColumns::read(row, 3)?,
                ))
            })
            .map_err(sql_error)?;
        rows.collect::<Result<_, _>>().map_err(sql_error)?
    };
    for (name, generation, expires_at, columns) in statuses {
        let status = columns.into_status(&name)?;
        let version = to_u64(CREDENTIAL_STATUS_KIND, &name, "generation", generation)?;
        let sealed = keyring
            .seal(
                &Binding::new(store, CREDENTIAL_STATUS_KIND, &name, version),
                &encode_status(&status, authkeeper_core::Timestamp::from_millis(expires_at)),
            )
            .map_err(|e| e.into_store_error(CREDENTIAL_STATUS_KIND, &name))?;
        tx.execute(
            "UPDATE credentials SET sealed_status = ?2 WHERE name = ?1",
            params![name, sealed],
        )
        .map_err(sql_error)?;
    }
    write_store_id(tx, store)?;
    write_key_check(tx, keyring, store)?;
    Ok((credential_count, record_count))
}

impl Inner {
    pub(super) fn keyring(&self) -> Keyring {
        self.keyring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_keyring(&self, keyring: Keyring) {
        *self
            .keyring
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keyring;
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

    /// Opens a value sealed as `kind`/`name` at `version`, re-reading the key file once if its
    /// key is unknown (another process re-keyed).
    pub(super) fn unseal(
        &self,
        kind: &'static str,
        name: &str,
        version: u64,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let binding = Binding::new(self.store_id, kind, name, version);
        let opened = match self.keyring().open(&binding, sealed) {
            Err(SealError::UnknownKeyId(_)) if self.reload_keyring()? => {
                self.keyring().open(&binding, sealed)
            }
            other => other,
        };
        opened.map_err(|e| e.into_store_error(kind, name))
    }

    /// Seals `plaintext` as `kind`/`name` at `version` inside write transaction `tx`, with a key
    /// the store's key check was sealed by (re-reading the key file once if another process
    /// re-keyed).
    pub(super) fn seal(
        &self,
        tx: &Connection,
        kind: &'static str,
        name: &str,
        version: u64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        self.sealing_keyring(tx)?
            .seal(&Binding::new(self.store_id, kind, name, version), plaintext)
            .map_err(|e| e.into_store_error(kind, name))
    }

    /// The keyring to seal with inside `tx`: one holding the key the store's key check is
    /// sealed by. Fails when the store was re-keyed to a key this process cannot get (a key
    /// from the environment): callers check this before asking a provider for tokens they
    /// could not store.
    pub(super) fn sealing_keyring(&self, tx: &Connection) -> Result<Keyring, StoreError> {
        let Some(check) = read_key_check(tx)? else {
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
                "the store was re-keyed to key id {id}, which this process does not have: restart it with the new key"
            ),
        })
    }

    /// See [`super::SqliteStore::rekey`]; returns how many credentials were re-sealed.
    pub(super) fn rekey(&self, new_key: SealKey) -> Result<usize, StoreError> {
        let old = self.keyring();
        let mut keys = vec![old.primary().clone()];
        keys.extend(old.previous().iter().cloned());
        let transitional = Keyring::with_previous(new_key.clone(), keys);
        // Step 1: the new key seals from now on; the old ones still open.
        if let Some(path) = &self.key_file {
            key::write_key_file(path, &transitional)?;
        }
        self.set_keyring(transitional.clone());
        // Step 2: re-seal every sealed value in one transaction, once no refresh is in flight: a
        // holder between the provider's answer and its write must still be able to seal it
        // (after this transaction, a process without the new key refuses to start a refresh).
        let store = self.store_id;
        let deadline = std::time::Instant::now() + REKEY_WAIT;
        let credentials = loop {
            let resealed = self.write(|tx| {
                if refreshes_in_flight(tx)? > 0 {
                    return Ok(None);
                }
                let mut counts = Vec::with_capacity(SEALED_COLUMNS.len());
                for column in &SEALED_COLUMNS {
                    counts.push(reseal_column(
                        tx,
                        &transitional,
                        column,
                        From::V2(store),
                        store,
                    )?);
                }
                write_key_check(tx, &transitional, store)?;
                Ok(Some(counts[0]))
            })?;
            match resealed {
                Some(count) => break count,
                None if std::time::Instant::now() < deadline => std::thread::sleep(REKEY_POLL),
                None => {
                    return Err(StoreError::Other {
                        message: format!(
                            "a refresh stayed in flight for {} s: re-key again when it is done (the new key seals new values meanwhile)",
                            REKEY_WAIT.as_secs()
                        ),
                        source: None,
                    });
                }
            }
        };
        // Step 3: forget the old keys.
        let final_keyring = Keyring::new(new_key);
        if let Some(path) = &self.key_file {
            key::write_key_file(path, &final_keyring)?;
        }
        self.set_keyring(final_keyring);
        tracing::info!(store = %self.path.display(), key_id = %self.keyring().primary().id(), credentials, "re-keyed the store");
        Ok(credentials)
    }
}
