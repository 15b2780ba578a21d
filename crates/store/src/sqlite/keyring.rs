//! The store's keys: the key check written when the store is created, sealing and unsealing
//! with a key file that another process may re-key, and `rekey` with its one re-seal path.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension as _, Transaction, TransactionBehavior, params};
use zeroize::Zeroizing;

use authkeeper_core::StoreError;

use super::Inner;
use super::errors::sql_error;
use crate::key;
use crate::seal::{
    CREDENTIAL_KIND, KEY_CHECK_KIND, KEY_CHECK_NAME, KEY_CHECK_PLAINTEXT, Keyring, SealError,
    SealKey, sealed_key_id,
};

/// The record kind reported for a record whose row could not be re-sealed.
const RECORD_KIND: &str = "record";

/// Verifies that `keyring` opens the store's key-check value, or writes one for a new store.
pub(super) fn check_or_write_key_check(
    conn: &mut Connection,
    keyring: &Keyring,
    path: &Path,
) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    match read_key_check(&tx)? {
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

fn read_key_check(conn: &Connection) -> Result<Option<Vec<u8>>, StoreError> {
    conn.query_row(
        "SELECT value FROM meta WHERE key = 'key_check'",
        [],
        |row| row.get(0),
    )
    .optional()
    .map_err(sql_error)
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

/// A table of sealed values and how to read each row's kind and name (its associated data).
struct SealedTable {
    /// `rowid, kind, name, sealed` of every row.
    select: &'static str,
    /// Sets `sealed = ?2` of row `?1`.
    update: &'static str,
    /// The kind reported when a row cannot be re-sealed.
    what: &'static str,
}

/// Every table holding sealed values.
const SEALED_TABLES: [SealedTable; 2] = [
    SealedTable {
        select: "SELECT rowid, 'credential', name, sealed FROM credentials",
        update: "UPDATE credentials SET sealed = ?2 WHERE rowid = ?1",
        what: CREDENTIAL_KIND,
    },
    SealedTable {
        select: "SELECT rowid, kind, CASE WHEN item = '' THEN part ELSE part || '/' || item END, \
                 sealed FROM records",
        update: "UPDATE records SET sealed = ?2 WHERE rowid = ?1",
        what: RECORD_KIND,
    },
];

/// Re-seals every row of `table` with the primary key of `keyring`; returns how many.
fn reseal_table(
    tx: &Transaction<'_>,
    keyring: &Keyring,
    table: &SealedTable,
) -> Result<usize, StoreError> {
    let rows: Vec<(i64, String, String, Vec<u8>)> = {
        let mut statement = tx.prepare(table.select).map_err(sql_error)?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .map_err(sql_error)?;
        rows.collect::<Result<_, _>>().map_err(sql_error)?
    };
    for (rowid, kind, name, sealed) in &rows {
        let plaintext = keyring
            .open(kind, name, sealed)
            .map_err(|e| e.into_store_error(table.what, name))?;
        let resealed = keyring
            .seal(kind, name, &plaintext)
            .map_err(|e| e.into_store_error(table.what, name))?;
        tx.execute(table.update, params![rowid, resealed])
            .map_err(sql_error)?;
    }
    Ok(rows.len())
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

    /// Opens a value sealed as `kind`/`name`, re-reading the key file once if its key is
    /// unknown (another process re-keyed).
    pub(super) fn unseal(
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

    /// Seals `plaintext` as `kind`/`name` inside write transaction `tx`, with a key the store's
    /// key check was sealed by (re-reading the key file once if another process re-keyed).
    pub(super) fn seal(
        &self,
        tx: &Transaction<'_>,
        kind: &'static str,
        name: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        self.sealing_keyring(tx)?
            .seal(kind, name, plaintext)
            .map_err(|e| e.into_store_error(kind, name))
    }

    fn sealing_keyring(&self, tx: &Transaction<'_>) -> Result<Keyring, StoreError> {
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
                "the store was re-keyed to key id {id}, which this process does not have: restart with the new key"
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
        // Step 2: re-seal every sealed value in one transaction.
        let credentials = self.write(|tx| {
            let mut counts = Vec::with_capacity(SEALED_TABLES.len());
            for table in &SEALED_TABLES {
                counts.push(reseal_table(tx, &transitional, table)?);
            }
            write_key_check(tx, &transitional)?;
            Ok(counts[0])
        })?;
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
