//! Sealed records of every kind (`records`: kind, part, item — `''` for one-segment keys —,
//! version, sealed document, updated_at) and the [`RecordStore`] implementation of
//! [`SqliteStore`]. A record's associated data is the store id, its kind, its key `PART[/ITEM]`
//! and its version.

use async_trait::async_trait;
use rusqlite::{OptionalExtension as _, params};
use zeroize::Zeroizing;

use authkeeper_core::store::{Expect, Record, RecordKey, RecordKind, RecordStore};
use authkeeper_core::{StoreError, Timestamp};

use super::errors::{corrupt_row, sql_error, to_i64, to_u64};
use super::{Inner, SqliteStore};

/// The `item` column of `key`.
fn item(key: &RecordKey) -> &str {
    key.item().unwrap_or("")
}

impl Inner {
    /// Unseals one row into a [`Record`].
    fn open_record(
        &self,
        kind: RecordKind,
        key: RecordKey,
        version: i64,
        sealed: &[u8],
        updated_at: i64,
    ) -> Result<Record, StoreError> {
        let name = key.to_string();
        let version = to_u64(kind.as_str(), &name, "version", version)?;
        if version == 0 {
            return Err(corrupt_row(kind.as_str(), &name, "version 0"));
        }
        let data = self.unseal(kind.as_str(), &name, version, sealed)?;
        Ok(Record {
            key,
            version,
            updated_at: Timestamp::from_millis(updated_at),
            data,
        })
    }

    fn get(&self, kind: RecordKind, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        let row: Option<(i64, Vec<u8>, i64)> = self
            .conn()
            .query_row(
                "SELECT version, sealed, updated_at FROM records
                 WHERE kind = ?1 AND part = ?2 AND item = ?3",
                params![kind.as_str(), key.part(), item(key)],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(sql_error)?;
        row.map(|(version, sealed, updated_at)| {
            self.open_record(kind, key.clone(), version, &sealed, updated_at)
        })
        .transpose()
    }

    fn compare_and_put(
        &self,
        kind: RecordKind,
        key: &RecordKey,
        expect: Expect,
        data: &[u8],
        now: Timestamp,
    ) -> Result<Option<u64>, StoreError> {
        let name = key.to_string();
        self.write(|tx| {
            let current: Option<i64> = tx
                .query_row(
                    "SELECT version FROM records WHERE kind = ?1 AND part = ?2 AND item = ?3",
                    params![kind.as_str(), key.part(), item(key)],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sql_error)?;
            let current = match current {
                Some(version) => to_u64(kind.as_str(), &name, "version", version)?,
                None => 0,
            };
            if !expect.matches(current) {
                return Ok(None);
            }
            let version = current
                .checked_add(1)
                .ok_or_else(|| corrupt_row(kind.as_str(), &name, "version overflow"))?;
            let sealed = self.seal(tx, kind.as_str(), &name, version, data)?;
            tx.execute(
                "INSERT INTO records (kind, part, item, version, sealed, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(kind, part, item) DO UPDATE SET version = excluded.version,
                     sealed = excluded.sealed, updated_at = excluded.updated_at",
                params![
                    kind.as_str(),
                    key.part(),
                    item(key),
                    to_i64(version),
                    sealed,
                    now.as_millis()
                ],
            )
            .map_err(sql_error)?;
            Ok(Some(version))
        })
    }

    fn remove(
        &self,
        kind: RecordKind,
        key: &RecordKey,
        expect: Expect,
    ) -> Result<bool, StoreError> {
        let version = match expect {
            Expect::Absent => return Ok(false),
            Expect::Any => 0,
            Expect::Version(0) => return Ok(false),
            Expect::Version(version) => to_i64(version),
        };
        // One statement: the version check and the delete are atomic, and durable on return.
        let deleted = self.write(|tx| {
            tx.execute(
                "DELETE FROM records WHERE kind = ?1 AND part = ?2 AND item = ?3
                     AND (?4 = 0 OR version = ?4)",
                params![kind.as_str(), key.part(), item(key), version],
            )
            .map_err(sql_error)
        })?;
        Ok(deleted > 0)
    }

    fn list_children(
        &self,
        kind: RecordKind,
        parent: &RecordKey,
    ) -> Result<Vec<Record>, StoreError> {
        if parent.item().is_some() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, i64, Vec<u8>, i64)> = {
            let conn = self.conn();
            let mut statement = conn
                .prepare(
                    "SELECT item, version, sealed, updated_at FROM records
                     WHERE kind = ?1 AND part = ?2 AND item != '' ORDER BY item",
                )
                .map_err(sql_error)?;
            let rows = statement
                .query_map(params![kind.as_str(), parent.part()], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .map_err(sql_error)?;
            rows.collect::<Result<_, _>>().map_err(sql_error)?
        };
        rows.into_iter()
            .map(|(item, version, sealed, updated_at)| {
                let key = RecordKey::from_segments(parent.part(), Some(&item)).map_err(|_| {
                    corrupt_row(
                        kind.as_str(),
                        parent.part(),
                        "a stored item is not a valid name",
                    )
                })?;
                self.open_record(kind, key, version, &sealed, updated_at)
            })
            .collect()
    }

    fn list_kind(
        &self,
        kind: RecordKind,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        // `item = ''` for a one-segment key sorts before every item of its part, exactly as
        // `RecordKey`'s order; an absent `after` starts before every key (part > '' always).
        let (after_part, after_item) = after.map_or(("", ""), |key| (key.part(), item(key)));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(String, String, i64, Vec<u8>, i64)> = {
            let conn = self.conn();
            let mut statement = conn
                .prepare_cached(
                    "SELECT part, item, version, sealed, updated_at FROM records
                     WHERE kind = ?1 AND (part, item) > (?2, ?3)
                     ORDER BY part, item LIMIT ?4",
                )
                .map_err(sql_error)?;
            let rows = statement
                .query_map(
                    params![kind.as_str(), after_part, after_item, limit],
                    |row| {
                        Ok((
                            row.get(0)?,
                            row.get(1)?,
                            row.get(2)?,
                            row.get(3)?,
                            row.get(4)?,
                        ))
                    },
                )
                .map_err(sql_error)?;
            rows.collect::<Result<_, _>>().map_err(sql_error)?
        };
        rows.into_iter()
            .map(|(part, item, version, sealed, updated_at)| {
                let item = (!item.is_empty()).then_some(item.as_str());
                let key = RecordKey::from_segments(&part, item)
                    .map_err(|_| corrupt_row(kind.as_str(), &part, "not a valid key"))?;
                self.open_record(kind, key, version, &sealed, updated_at)
            })
            .collect()
    }

    fn parts(&self, kind: RecordKind) -> Result<Vec<RecordKey>, StoreError> {
        let parts: Vec<String> = {
            let conn = self.conn();
            let mut statement = conn
                .prepare("SELECT DISTINCT part FROM records WHERE kind = ?1 ORDER BY part")
                .map_err(sql_error)?;
            let rows = statement
                .query_map(params![kind.as_str()], |row| row.get(0))
                .map_err(sql_error)?;
            rows.collect::<Result<_, _>>().map_err(sql_error)?
        };
        parts
            .iter()
            .map(|part| {
                RecordKey::from_segments(part, None)
                    .map_err(|_| corrupt_row(kind.as_str(), part, "not a valid name"))
            })
            .collect()
    }
}

#[async_trait]
impl RecordStore for SqliteStore {
    async fn get(&self, kind: RecordKind, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        let key = key.clone();
        self.run(move |inner| inner.get(kind, &key)).await
    }

    async fn compare_and_put(
        &self,
        kind: RecordKind,
        key: &RecordKey,
        expect: Expect,
        data: &[u8],
        now: Timestamp,
    ) -> Result<Option<u64>, StoreError> {
        let (key, data) = (key.clone(), Zeroizing::new(data.to_vec()));
        self.run(move |inner| inner.compare_and_put(kind, &key, expect, &data, now))
            .await
    }

    async fn remove(
        &self,
        kind: RecordKind,
        key: &RecordKey,
        expect: Expect,
    ) -> Result<bool, StoreError> {
        let key = key.clone();
        self.run(move |inner| inner.remove(kind, &key, expect))
            .await
    }

    async fn list_children(
        &self,
        kind: RecordKind,
        parent: &RecordKey,
    ) -> Result<Vec<Record>, StoreError> {
        let parent = parent.clone();
        self.run(move |inner| inner.list_children(kind, &parent))
            .await
    }

    async fn list_kind(
        &self,
        kind: RecordKind,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let after = after.cloned();
        self.run(move |inner| inner.list_kind(kind, after.as_ref(), limit))
            .await
    }

    async fn parts(&self, kind: RecordKind) -> Result<Vec<RecordKey>, StoreError> {
        self.run(move |inner| inner.parts(kind)).await
    }
}
