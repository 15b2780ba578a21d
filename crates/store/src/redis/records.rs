//! Records in Redis: one hash per record (`version`, `sealed`, `updated_at`; store id, kind,
//! key `PART[/ITEM]` and version as associated data) and a set of items per part, under the `{r:KIND:PART}`
//! hash tag; a write or delete is one Lua script checking the version and maintaining the set.

use async_trait::async_trait;

use authkeeper_core::store::{Expect, Record, RecordKey, RecordKind, RecordStore};
use authkeeper_core::{StoreError, Timestamp};

use super::credentials::{parse_millis, parse_u64};
use super::{RedisStore, error};

/// A record hash as read: version, sealed, updated_at.
pub(super) type RawRecord = (Option<String>, Option<Vec<u8>>, Option<String>);

/// How often a write without a version expectation re-reads the version after losing a race.
const UNCONDITIONAL_ATTEMPTS: usize = 16;

impl RedisStore {
    /// The stored version of a record (0: absent).
    async fn record_version(&self, kind: RecordKind, key: &RecordKey) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let version: Option<String> = self
            .timed(
                "reading a record version",
                ::redis::cmd("HGET")
                    .arg(self.inner.keys.record(kind, key))
                    .arg("version")
                    .query_async(&mut conn),
            )
            .await?;
        parse_u64(
            &key.to_string(),
            "version",
            version.as_deref().unwrap_or("0"),
        )
    }

    /// One conditional write of `data` as version `expected + 1` (`expected` 0: absent).
    async fn put_over(
        &self,
        kind: RecordKind,
        key: &RecordKey,
        expected: u64,
        data: &[u8],
        now: Timestamp,
    ) -> Result<Option<u64>, StoreError> {
        let name = key.to_string();
        let version = expected
            .checked_add(1)
            .ok_or_else(|| error::corrupt_record(kind, &name, "version overflow"))?;
        let sealed = self
            .inner
            .keyring
            .seal(&self.binding(kind.as_str(), &name, version), data)
            .map_err(|e| e.into_store_error(kind.as_str(), &name))?;
        let mut conn = self.conn();
        let mut call = self.inner.scripts.put_record.prepare_invoke();
        call.key(self.inner.keys.record(kind, key))
            .key(self.inner.keys.record_items(kind, key.part()))
            .arg(expected.to_string())
            .arg(sealed.as_slice())
            .arg(now.as_millis().to_string())
            .arg(key.item().unwrap_or(""));
        let reply: Vec<String> = self
            .timed("writing a record", call.invoke_async(&mut conn))
            .await?;
        match reply.as_slice() {
            [written, version] if written == "1" => parse_u64(&name, "version", version).map(Some),
            [written, _] if written == "0" => Ok(None),
            _ => Err(error::corrupt_record(
                kind,
                &name,
                "unexpected reply from the record write script",
            )),
        }
    }

    /// Unseals a record hash; `None` when it does not exist.
    fn open_record(
        &self,
        kind: RecordKind,
        key: RecordKey,
        (version, sealed, updated_at): RawRecord,
    ) -> Result<Option<Record>, StoreError> {
        let name = key.to_string();
        let (version, sealed) = match (version, sealed) {
            (None, _) => return Ok(None),
            (Some(version), Some(sealed)) => (version, sealed),
            (Some(_), None) => {
                return Err(error::corrupt_record(kind, &name, "no sealed document"));
            }
        };
        let version = version
            .parse::<u64>()
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| {
                error::corrupt_record(kind, &name, "version is not a positive number")
            })?;
        let updated_at = parse_millis(&name, "updated_at", updated_at.as_deref())?
            .unwrap_or(Timestamp::from_millis(0));
        let data = self
            .inner
            .keyring
            .open(&self.binding(kind.as_str(), &name, version), &sealed)
            .map_err(|e| e.into_store_error(kind.as_str(), &name))?;
        Ok(Some(Record {
            key,
            version,
            updated_at,
            data,
        }))
    }

    /// Reads record hashes in one pipeline.
    pub(super) async fn read_records(
        &self,
        kind: RecordKind,
        keys: &[RecordKey],
    ) -> Result<Vec<RawRecord>, StoreError> {
        let mut pipe = ::redis::pipe();
        for key in keys {
            pipe.cmd("HMGET")
                .arg(self.inner.keys.record(kind, key))
                .arg("version")
                .arg("sealed")
                .arg("updated_at");
        }
        let mut conn = self.conn();
        self.timed("reading records", pipe.query_async(&mut conn))
            .await
    }

    /// The members of set `key` that are valid names, sorted.
    pub(super) async fn valid_members(
        &self,
        what: &str,
        key: String,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn();
        let mut members: Vec<String> = self
            .timed(
                what,
                ::redis::cmd("SMEMBERS").arg(key).query_async(&mut conn),
            )
            .await?;
        members.retain(|member| {
            let valid = authkeeper_core::name::is_valid(member);
            if !valid {
                tracing::warn!(redis = %self.inner.url, "ignoring an invalid name in a Redis record index");
            }
            valid
        });
        members.sort();
        Ok(members)
    }
}

#[async_trait]
impl RecordStore for RedisStore {
    async fn get(&self, kind: RecordKind, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        let raw = self
            .read_records(kind, std::slice::from_ref(key))
            .await?
            .pop()
            .ok_or_else(|| error::corrupt_record(kind, &key.to_string(), "no reply"))?;
        self.open_record(kind, key.clone(), raw)
    }

    async fn compare_and_put(
        &self,
        kind: RecordKind,
        key: &RecordKey,
        expect: Expect,
        data: &[u8],
        now: Timestamp,
    ) -> Result<Option<u64>, StoreError> {
        if expect == Expect::Version(0) {
            return Ok(None);
        }
        let mut conn = self.conn();
        // The part first: a part with a record is always listed, even if this process dies
        // between the two calls (a part without records is skipped by `parts`).
        let _: i64 = self
            .timed(
                "indexing a record part",
                ::redis::cmd("SADD")
                    .arg(self.inner.keys.record_parts(kind))
                    .arg(key.part())
                    .query_async(&mut conn),
            )
            .await?;
        // The value is sealed for the version it becomes; `Any` re-reads it after a lost race.
        for _ in 0..UNCONDITIONAL_ATTEMPTS {
            let expected = match expect {
                Expect::Absent => 0,
                Expect::Version(version) => version,
                Expect::Any => self.record_version(kind, key).await?,
            };
            match self.put_over(kind, key, expected, data, now).await? {
                Some(version) => return Ok(Some(version)),
                None if expect != Expect::Any => return Ok(None),
                None => {}
            }
        }
        Ok(None)
    }

    async fn remove(
        &self,
        kind: RecordKind,
        key: &RecordKey,
        expect: Expect,
    ) -> Result<bool, StoreError> {
        let (mode, expected) = match expect {
            Expect::Any => ("any", 0),
            Expect::Absent | Expect::Version(0) => return Ok(false),
            Expect::Version(version) => ("version", version),
        };
        let mut conn = self.conn();
        let mut call = self.inner.scripts.delete_record.prepare_invoke();
        call.key(self.inner.keys.record(kind, key))
            .key(self.inner.keys.record_items(kind, key.part()))
            .arg(mode)
            .arg(expected.to_string())
            .arg(key.item().unwrap_or(""));
        let deleted: i64 = self
            .timed("deleting a record", call.invoke_async(&mut conn))
            .await?;
        Ok(deleted == 1)
    }

    async fn list_children(
        &self,
        kind: RecordKind,
        parent: &RecordKey,
    ) -> Result<Vec<Record>, StoreError> {
        if parent.item().is_some() {
            return Ok(Vec::new());
        }
        let items = self
            .valid_members(
                "listing records",
                self.inner.keys.record_items(kind, parent.part()),
            )
            .await?;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let keys = items
            .iter()
            .map(|item| RecordKey::from_segments(parent.part(), Some(item)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| error::corrupt_record(kind, parent.part(), "invalid item"))?;
        let rows = self.read_records(kind, &keys).await?;
        let mut records = Vec::with_capacity(keys.len());
        for (key, raw) in keys.into_iter().zip(rows) {
            // Indexed but gone: deleted between the two calls.
            if let Some(record) = self.open_record(kind, key, raw)? {
                records.push(record);
            }
        }
        Ok(records)
    }

    async fn list_kind(
        &self,
        kind: RecordKind,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        // Walks the parts index in order; each part's own record, then its items. A page costs
        // one read of the parts set plus one round trip per part visited.
        let parts = self
            .valid_members("listing record parts", self.inner.keys.record_parts(kind))
            .await?;
        let mut records = Vec::new();
        for part in parts {
            if records.len() >= limit {
                break;
            }
            if after.is_some_and(|after| part.as_str() < after.part()) {
                continue;
            }
            let mut keys = vec![
                RecordKey::from_segments(&part, None)
                    .map_err(|_| error::corrupt_record(kind, "parts", "invalid part"))?,
            ];
            for item in self
                .valid_members("listing records", self.inner.keys.record_items(kind, &part))
                .await?
            {
                keys.push(
                    RecordKey::from_segments(&part, Some(&item))
                        .map_err(|_| error::corrupt_record(kind, &part, "invalid item"))?,
                );
            }
            keys.retain(|key| after.is_none_or(|after| key > after));
            if keys.is_empty() {
                continue;
            }
            let rows = self.read_records(kind, &keys).await?;
            for (key, raw) in keys.into_iter().zip(rows) {
                if records.len() >= limit {
                    break;
                }
                if let Some(record) = self.open_record(kind, key, raw)? {
                    records.push(record);
                }
            }
        }
        Ok(records)
    }

    async fn parts(&self, kind: RecordKind) -> Result<Vec<RecordKey>, StoreError> {
        let parts = self
            .valid_members("listing record parts", self.inner.keys.record_parts(kind))
            .await?;
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        // The parts set only grows (pruning it could race with a concurrent first write of the
        // part); a part with neither a record of its own nor items has no records.
        let keys = parts
            .iter()
            .map(|part| RecordKey::from_segments(part, None))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| error::corrupt_record(kind, "parts", "invalid part"))?;
        let mut pipe = ::redis::pipe();
        for key in &keys {
            pipe.cmd("EXISTS")
                .arg(self.inner.keys.record(kind, key))
                .cmd("SCARD")
                .arg(self.inner.keys.record_items(kind, key.part()));
        }
        let mut conn = self.conn();
        let counts: Vec<u64> = self
            .timed("listing record parts", pipe.query_async(&mut conn))
            .await?;
        Ok(keys
            .into_iter()
            .zip(counts.chunks(2))
            .filter(|(_, counts)| counts.iter().any(|count| *count > 0))
            .map(|(key, _)| key)
            .collect())
    }
}
