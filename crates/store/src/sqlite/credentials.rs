//! Credential rows (`credentials`: name, generation, sealed token set, sealed status, and
//! plaintext copies of expiry and status for operators) and the [`CredentialStore`]
//! implementation of [`SqliteStore`]. Reads take status and expiry from the sealed values only.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension as _, params};

use authkeeper_core::name::CredentialName;
use authkeeper_core::store::{RefreshStart, Unfinished};
use authkeeper_core::{
    CredentialState, CredentialStatus, CredentialStore, CredentialSummary, Lease, LeaseAttempt,
    Precondition, StoreError, StoredCredential, Timestamp, TokenSet, WriteOutcome,
};

use super::errors::{corrupt_row, sql_error, to_i64, to_u64};
use super::{CHANGE_POLL_INTERVAL, Inner, SqliteStore};
use crate::record::{decode_status, decode_token_set, encode_status};
use crate::seal::{CREDENTIAL_KIND, CREDENTIAL_STATUS_KIND};

const WHAT: &str = "credential";

/// The plaintext status columns of a credential row (copies for operators; read back only by the
/// upgrade to sealing format 2).
pub(super) struct StatusColumns {
    state: String,
    last_refresh_at: Option<i64>,
    failures: i64,
    reason: Option<String>,
    next_attempt_at: Option<i64>,
}

impl StatusColumns {
    /// Reads the five status columns starting at `first`.
    pub(super) fn read(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Self> {
        Ok(StatusColumns {
            state: row.get(first)?,
            last_refresh_at: row.get(first + 1)?,
            failures: row.get(first + 2)?,
            reason: row.get(first + 3)?,
            next_attempt_at: row.get(first + 4)?,
        })
    }

    pub(super) fn into_status(self, name: &str) -> Result<CredentialStatus, StoreError> {
        Ok(CredentialStatus {
            state: CredentialState::parse(&self.state)
                .ok_or_else(|| corrupt_row(WHAT, name, "unknown state"))?,
            last_refresh_at: self.last_refresh_at.map(Timestamp::from_millis),
            failures: u32::try_from(self.failures)
                .map_err(|_| corrupt_row(WHAT, name, "failures out of range"))?,
            reason: self.reason,
            next_attempt_at: self.next_attempt_at.map(Timestamp::from_millis),
        })
    }
}

pub(super) const STATUS_COLUMNS: &str = "state, last_refresh_at, failures, reason, next_attempt_at";

/// The stored generation of `name` (0: nothing stored).
pub(super) fn stored_generation(
    conn: &rusqlite::Connection,
    name: &CredentialName,
) -> Result<u64, StoreError> {
    let generation: Option<i64> = conn
        .query_row(
            "SELECT generation FROM credentials WHERE name = ?1",
            params![name.as_str()],
            |row| row.get(0),
        )
        .optional()
        .map_err(sql_error)?;
    to_u64(WHAT, name, "generation", generation.unwrap_or(0))
}

/// A credential row as stored: generation, sealed token set, sealed status.
pub(super) type SealedRow = (i64, Vec<u8>, Option<Vec<u8>>);

/// Reads the row of `name`, still sealed.
pub(super) fn read_row(
    conn: &Connection,
    name: &CredentialName,
) -> Result<Option<SealedRow>, StoreError> {
    conn.prepare_cached("SELECT generation, sealed, sealed_status FROM credentials WHERE name = ?1")
        .and_then(|mut statement| {
            statement
                .query_row(params![name.as_str()], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()
        })
        .map_err(sql_error)
}

impl Inner {
    /// Opens a row's sealed status: the status and the expiry of its generation's tokens.
    fn open_status(
        &self,
        name: &str,
        generation: u64,
        sealed_status: Option<&[u8]>,
    ) -> Result<(CredentialStatus, Timestamp), StoreError> {
        let sealed = sealed_status.ok_or_else(|| corrupt_row(WHAT, name, "no sealed status"))?;
        let plaintext = self.unseal(CREDENTIAL_STATUS_KIND, name, generation, sealed)?;
        decode_status(&plaintext).map_err(|problem| corrupt_row(WHAT, name, &problem))
    }

    fn load(&self, name: &CredentialName) -> Result<Option<StoredCredential>, StoreError> {
        let row = read_row(&self.conn(), name)?;
        row.map(|row| self.open_row(name, row)).transpose()
    }

    /// Unseals a credential row.
    pub(super) fn open_row(
        &self,
        name: &CredentialName,
        (generation, sealed, sealed_status): SealedRow,
    ) -> Result<StoredCredential, StoreError> {
        let generation = to_u64(WHAT, name, "generation", generation)?;
        let (status, _) = self.open_status(name, generation, sealed_status.as_deref())?;
        let plaintext = self.unseal(CREDENTIAL_KIND, name, generation, &sealed)?;
        let tokens =
            decode_token_set(&plaintext).map_err(|problem| corrupt_row(WHAT, name, &problem))?;
        Ok(StoredCredential {
            name: name.clone(),
            generation,
            tokens,
            status,
        })
    }

    /// The stored credentials named after `after` (every name is longer than ''), in name
    /// order, at most `limit`; unsealed after the read connection is released.
    fn load_page(&self, after: &str, limit: usize) -> Result<Vec<StoredCredential>, StoreError> {
        let rows: Vec<(String, SealedRow)> = {
            let conn = self.conn();
            let mut statement = conn
                .prepare_cached(
                    "SELECT name, generation, sealed, sealed_status FROM credentials
                     WHERE name > ?1 ORDER BY name LIMIT ?2",
                )
                .map_err(sql_error)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            statement
                .query_map(params![after, limit], |row| {
                    Ok((row.get(0)?, (row.get(1)?, row.get(2)?, row.get(3)?)))
                })
                .map_err(sql_error)?
                .collect::<Result<_, _>>()
                .map_err(sql_error)?
        };
        rows.into_iter()
            .map(|(name, row)| {
                let name = CredentialName::new(&name)
                    .map_err(|_| corrupt_row(WHAT, &name, "invalid name"))?;
                self.open_row(&name, row)
            })
            .collect()
    }

    /// Summaries of the credentials named after `after` (every name is longer than ''), in
    /// name order, at most `limit`.
    fn list_page(&self, after: &str, limit: usize) -> Result<Vec<CredentialSummary>, StoreError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare_cached(
                "SELECT name, generation, sealed_status FROM credentials
                 WHERE name > ?1 ORDER BY name LIMIT ?2",
            )
            .map_err(sql_error)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement
            .query_map(params![after, limit], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, Option<Vec<u8>>>(2)?,
                ))
            })
            .map_err(sql_error)?;
        let mut summaries = Vec::new();
        for row in rows {
            let (name, generation, sealed_status) = row.map_err(sql_error)?;
            let generation = to_u64(WHAT, &name, "generation", generation)?;
            let (status, expires_at) =
                self.open_status(&name, generation, sealed_status.as_deref())?;
            summaries.push(CredentialSummary {
                generation,
                expires_at,
                status,
                name: CredentialName::new(&name)
                    .map_err(|_| corrupt_row(WHAT, &name, "invalid name"))?,
            });
        }
        Ok(summaries)
    }

    /// Writes `tokens` as `generation` with a fresh valid status, inside `tx`.
    fn write_tokens(
        &self,
        tx: &Connection,
        name: &CredentialName,
        generation: u64,
        tokens: &TokenSet,
        last_refresh_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let sealed = self.seal(
            tx,
            CREDENTIAL_KIND,
            name,
            generation,
            &tokens.to_secret_json(),
        )?;
        let status = CredentialStatus {
            last_refresh_at,
            ..CredentialStatus::default()
        };
        let sealed_status = self.seal(
            tx,
            CREDENTIAL_STATUS_KIND,
            name,
            generation,
            &encode_status(&status, tokens.expires_at),
        )?;
        tx.execute(
            "INSERT INTO credentials (name, generation, sealed, sealed_status, expires_at, state,
                 last_refresh_at, failures, reason, next_attempt_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'valid', ?6, 0, NULL, NULL, ?7)
             ON CONFLICT(name) DO UPDATE SET generation = excluded.generation, sealed = excluded.sealed,
                 sealed_status = excluded.sealed_status, expires_at = excluded.expires_at,
                 state = 'valid', last_refresh_at = excluded.last_refresh_at, failures = 0,
                 reason = NULL, next_attempt_at = NULL, updated_at = excluded.updated_at",
            params![
                name.as_str(),
                to_i64(generation),
                sealed,
                sealed_status,
                tokens.expires_at.as_millis(),
                last_refresh_at.map(Timestamp::as_millis),
                now.as_millis(),
            ],
        )
        .map_err(sql_error)?;
        Ok(())
    }

    fn put(
        &self,
        name: &CredentialName,
        precondition: Precondition,
        tokens: &TokenSet,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        self.write(|tx| self.put_in(tx, name, precondition, tokens, now))
    }

    /// [`Inner::put`] inside write transaction `tx`.
    pub(super) fn put_in(
        &self,
        tx: &Connection,
        name: &CredentialName,
        precondition: Precondition,
        tokens: &TokenSet,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        let current = stored_generation(tx, name)?;
        let conflict = WriteOutcome::Conflict {
            current_generation: current,
        };
        let last_refresh_at = match precondition {
            Precondition::None => None,
            Precondition::Generation(expected) => {
                if current != expected {
                    return Ok(conflict);
                }
                Some(now)
            }
            Precondition::Fenced { generation, fence } => {
                let lease_fence = super::leases::current_fence(tx, name)?;
                if current != generation || lease_fence != Some(to_i64(fence)) {
                    return Ok(conflict);
                }
                Some(now)
            }
        };
        let generation = current.saturating_add(1);
        self.write_tokens(tx, name, generation, tokens, last_refresh_at, now)?;
        Ok(WriteOutcome::Written { generation })
    }

    fn set_status(
        &self,
        name: &CredentialName,
        generation: u64,
        status: &CredentialStatus,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let row: Option<(i64, Option<Vec<u8>>)> = tx
                .query_row(
                    "SELECT generation, sealed_status FROM credentials WHERE name = ?1",
                    params![name.as_str()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(sql_error)?;
            let Some((stored, sealed_status)) = row else {
                return Ok(false);
            };
            if to_u64(WHAT, name, "generation", stored)? != generation {
                return Ok(false);
            }
            // The expiry of this generation's tokens, from the authenticated copy.
            let (_, expires_at) = self.open_status(name, generation, sealed_status.as_deref())?;
            let sealed_status = self.seal(
                tx,
                CREDENTIAL_STATUS_KIND,
                name,
                generation,
                &encode_status(status, expires_at),
            )?;
            let updated = tx
                .execute(
                    "UPDATE credentials SET state = ?2, last_refresh_at = ?3, failures = ?4, reason = ?5,
                         next_attempt_at = ?6, sealed_status = ?8 WHERE name = ?1 AND generation = ?7",
                    params![
                        name.as_str(),
                        status.state.as_str(),
                        status.last_refresh_at.map(Timestamp::as_millis),
                        i64::from(status.failures),
                        status.reason,
                        status.next_attempt_at.map(Timestamp::as_millis),
                        to_i64(generation),
                        sealed_status,
                    ],
                )
                .map_err(sql_error)?;
            Ok(updated == 1)
        })
    }

    fn delete(&self, name: &CredentialName) -> Result<bool, StoreError> {
        // The lease row stays: its fence must never go back.
        self.write(|tx| {
            let deleted = tx
                .execute(
                    "DELETE FROM credentials WHERE name = ?1",
                    params![name.as_str()],
                )
                .map_err(sql_error)?;
            Ok(deleted > 0)
        })
    }
}

#[async_trait]
impl CredentialStore for SqliteStore {
    async fn load(&self, name: &CredentialName) -> Result<Option<StoredCredential>, StoreError> {
        let name = name.clone();
        self.run(move |inner| inner.load(&name)).await
    }

    async fn list(&self) -> Result<Vec<CredentialSummary>, StoreError> {
        self.run(|inner| inner.list_page("", usize::MAX)).await
    }

    async fn list_page(
        &self,
        after: Option<&CredentialName>,
        limit: usize,
    ) -> Result<Vec<CredentialSummary>, StoreError> {
        let after = after.map_or_else(String::new, |name| name.as_str().to_owned());
        self.run(move |inner| inner.list_page(&after, limit)).await
    }

    async fn load_page(
        &self,
        after: Option<&CredentialName>,
        limit: usize,
    ) -> Result<Vec<StoredCredential>, StoreError> {
        let after = after.map_or_else(String::new, |name| name.as_str().to_owned());
        self.run(move |inner| inner.load_page(&after, limit)).await
    }

    async fn put(
        &self,
        name: &CredentialName,
        precondition: Precondition,
        tokens: &TokenSet,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        let (name, tokens) = (name.clone(), tokens.clone());
        self.run(move |inner| inner.put(&name, precondition, &tokens, now))
            .await
    }

    async fn set_status(
        &self,
        name: &CredentialName,
        generation: u64,
        status: &CredentialStatus,
    ) -> Result<bool, StoreError> {
        let (name, status) = (name.clone(), status.clone());
        self.run(move |inner| inner.set_status(&name, generation, &status))
            .await
    }

    async fn delete(&self, name: &CredentialName) -> Result<bool, StoreError> {
        let name = name.clone();
        self.run(move |inner| inner.delete(&name)).await
    }

    async fn try_acquire_lease(
        &self,
        name: &CredentialName,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<LeaseAttempt, StoreError> {
        let (name, owner) = (name.clone(), owner.to_owned());
        self.run(move |inner| inner.try_acquire_lease(&name, &owner, now, ttl))
            .await
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Option<Timestamp>, StoreError> {
        let (name, owner, fence) = (lease.name.clone(), lease.owner.clone(), lease.fence);
        self.run(move |inner| inner.renew_lease(&name, &owner, fence, now + ttl))
            .await
    }

    async fn release_lease(&self, lease: Lease) -> Result<(), StoreError> {
        self.run(move |inner| inner.release_lease(lease)).await
    }

    async fn begin_refresh(
        &self,
        name: &CredentialName,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
        mark_in_flight: bool,
    ) -> Result<RefreshStart, StoreError> {
        let (name, owner) = (name.clone(), owner.to_owned());
        self.run(move |inner| inner.begin_refresh(&name, &owner, now, ttl, mark_in_flight))
            .await
    }

    #[allow(clippy::result_large_err)] // the error hands the lease back (see `Unfinished`)
    async fn finish_refresh(
        &self,
        lease: Lease,
        generation: u64,
        tokens: &TokenSet,
        now: Timestamp,
    ) -> Result<WriteOutcome, Unfinished> {
        let inner = std::sync::Arc::clone(&self.inner);
        let tokens = tokens.clone();
        // If the blocking task dies, its copy of the lease (and the OS lock) goes with it; the
        // caller gets this one back: the lease row stays held until it expires.
        let fallback = lease.detached();
        let task = tokio::task::spawn_blocking(move || {
            inner.finish_refresh(lease, generation, &tokens, now)
        });
        match task.await {
            Ok(result) => result,
            Err(error) => Err(Unfinished {
                error: StoreError::Other {
                    message: "a store task failed".to_owned(),
                    source: Some(Box::new(error)),
                },
                lease: fallback,
            }),
        }
    }

    async fn mark_in_flight(
        &self,
        lease: &Lease,
        generation: u64,
    ) -> Result<Option<u64>, StoreError> {
        let (name, fence) = (lease.name.clone(), lease.fence);
        self.run(move |inner| inner.mark_in_flight(&name, fence, generation))
            .await
    }

    async fn wait_for_change(
        &self,
        name: &CredentialName,
        seen_generation: u64,
        timeout: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let current = {
                let name = name.clone();
                self.run(move |inner| stored_generation(&inner.conn(), &name))
                    .await
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
