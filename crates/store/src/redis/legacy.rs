//! Moves records written by authkeeper before the generic record store (layout 1: session
//! records under `{sess:SITE}`, checkpoints under `{ckpt:TASK}`) to the record layout of
//! [`super::keys`], once per prefix, when a replica connects.
//!
//! The sealed values move unchanged: their associated data was already the kind (`session`,
//! `checkpoint`) and the key (`SITE/ID`, `TASK`). Moving is idempotent, so replicas that connect
//! at the same moment may both run it. Upgrade every replica of a prefix together: a replica of
//! the old version would keep writing the old layout.

use authkeeper_core::StoreError;
use authkeeper_core::store::{RecordKey, RecordKind};

use super::RedisStore;

/// The value of `{prefix}layout` once records use the current layout.
const LAYOUT: &str = "2";
const SESSION: RecordKind = RecordKind::new("session");
const CHECKPOINT: RecordKind = RecordKind::new("checkpoint");

impl RedisStore {
    /// Moves layout-1 records to the current layout unless `{prefix}layout` says it is done.
    pub(super) async fn migrate_legacy_records(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let layout: Option<String> = self
            .timed(
                "reading the record layout",
                ::redis::cmd("GET")
                    .arg(self.inner.keys.layout())
                    .query_async(&mut conn),
            )
            .await?;
        if layout.as_deref() == Some(LAYOUT) {
            return Ok(());
        }
        let sessions = self.migrate_sessions().await?;
        let checkpoints = self.migrate_checkpoints().await?;
        let _: () = self
            .timed(
                "writing the record layout",
                ::redis::cmd("SET")
                    .arg(self.inner.keys.layout())
                    .arg(LAYOUT)
                    .query_async(&mut conn),
            )
            .await?;
        if sessions + checkpoints > 0 {
            tracing::info!(redis = %self.inner.url, prefix = self.prefix(), sessions, checkpoints, "moved records to the current Redis layout");
        }
        Ok(())
    }

    async fn migrate_sessions(&self) -> Result<usize, StoreError> {
        let keys = &self.inner.keys;
        let mut conn = self.conn();
        let sites: Vec<String> = self
            .timed(
                "reading legacy session sites",
                ::redis::cmd("SMEMBERS")
                    .arg(keys.legacy_session_sites())
                    .query_async(&mut conn),
            )
            .await?;
        let mut moved = 0;
        for site in sites {
            let ids: Vec<String> = self
                .timed(
                    "reading a legacy session index",
                    ::redis::cmd("SMEMBERS")
                        .arg(keys.legacy_session_index(&site))
                        .query_async(&mut conn),
                )
                .await?;
            for id in ids {
                let Ok(key) = RecordKey::from_segments(&site, Some(&id)) else {
                    tracing::warn!(redis = %self.inner.url, "skipping a legacy session with an invalid name");
                    continue;
                };
                let old = keys.legacy_session(&site, &id);
                let (version, sealed): (Option<String>, Option<Vec<u8>>) = self
                    .timed(
                        "reading a legacy session",
                        ::redis::cmd("HMGET")
                            .arg(&old)
                            .arg("version")
                            .arg("sealed")
                            .query_async(&mut conn),
                    )
                    .await?;
                if let (Some(version), Some(sealed)) = (version, sealed) {
                    self.move_record(SESSION, &key, &old, &version, &sealed, "0")
                        .await?;
                    moved += 1;
                }
            }
            let _: i64 = self
                .timed(
                    "deleting a legacy session index",
                    ::redis::cmd("DEL")
                        .arg(keys.legacy_session_index(&site))
                        .query_async(&mut conn),
                )
                .await?;
        }
        let _: i64 = self
            .timed(
                "deleting legacy session sites",
                ::redis::cmd("DEL")
                    .arg(keys.legacy_session_sites())
                    .query_async(&mut conn),
            )
            .await?;
        Ok(moved)
    }

    async fn migrate_checkpoints(&self) -> Result<usize, StoreError> {
        let (pattern, start) = self.inner.keys.legacy_checkpoint_pattern();
        let mut conn = self.conn();
        let mut cursor: u64 = 0;
        let mut found = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .timed(
                    "scanning legacy checkpoints",
                    ::redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn),
                )
                .await?;
            found.extend(keys);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut moved = 0;
        for old in found {
            let Some(task) = old
                .strip_prefix(&start)
                .and_then(|rest| rest.strip_suffix('}'))
            else {
                continue;
            };
            let Ok(key) = RecordKey::from_segments(task, None) else {
                continue;
            };
            let (version, sealed, updated_at): (Option<String>, Option<Vec<u8>>, Option<String>) =
                self.timed(
                    "reading a legacy checkpoint",
                    ::redis::cmd("HMGET")
                        .arg(&old)
                        .arg("version")
                        .arg("sealed")
                        .arg("updated_at")
                        .query_async(&mut conn),
                )
                .await?;
            if let (Some(version), Some(sealed)) = (version, sealed) {
                let updated_at = updated_at.unwrap_or_else(|| "0".to_owned());
                self.move_record(CHECKPOINT, &key, &old, &version, &sealed, &updated_at)
                    .await?;
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Writes a legacy record at its new key (unless one is there already), indexes it, and
    /// deletes the old key.
    async fn move_record(
        &self,
        kind: RecordKind,
        key: &RecordKey,
        old: &str,
        version: &str,
        sealed: &[u8],
        updated_at: &str,
    ) -> Result<(), StoreError> {
        let keys = &self.inner.keys;
        let mut conn = self.conn();
        let _: i64 = self
            .timed(
                "indexing a legacy record",
                ::redis::cmd("SADD")
                    .arg(keys.record_parts(kind))
                    .arg(key.part())
                    .query_async(&mut conn),
            )
            .await?;
        let script = ::redis::Script::new(MOVE);
        let mut call = script.prepare_invoke();
        call.key(keys.record(kind, key))
            .key(keys.record_items(kind, key.part()))
            .arg(version)
            .arg(sealed)
            .arg(updated_at)
            .arg(key.item().unwrap_or(""));
        let _: i64 = self
            .timed("moving a legacy record", call.invoke_async(&mut conn))
            .await?;
        let _: i64 = self
            .timed(
                "deleting a legacy record",
                ::redis::cmd("DEL").arg(old).query_async(&mut conn),
            )
            .await?;
        Ok(())
    }
}

/// Creates a record hash unless it exists, and indexes its item.
///
/// KEYS: record, items of its part (one slot). ARGV: version, sealed, updated_at, item (`""`:
/// none). Returns 1 when created.
const MOVE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'sealed', ARGV[2], 'updated_at', ARGV[3])
if ARGV[4] ~= '' then redis.call('SADD', KEYS[2], ARGV[4]) end
return 1
"#;
