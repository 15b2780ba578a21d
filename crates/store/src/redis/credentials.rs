//! Credentials in Redis: one hash per credential (sealed token set, sealed status and expiry,
//! plaintext copies of the status for operators), one for its lease, written by the Lua scripts
//! of [`super::scripts`], and the [`CredentialStore`] implementation of [`RedisStore`]. Reads
//! take status and expiry from the sealed values only.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use authkeeper_core::name::CredentialName;
use authkeeper_core::{
    CredentialStatus, CredentialStore, CredentialSummary, Lease, LeaseAttempt, Precondition,
    StoreError, StoredCredential, Timestamp, TokenSet, WriteOutcome,
};

use super::{ChangeEvent, RedisStore, error};
use crate::record::{decode_status, decode_token_set, encode_status};
use crate::seal::{CREDENTIAL_KIND, CREDENTIAL_STATUS_KIND};

/// While the subscription is up, waiters still re-read the generation this often, in case an
/// event was lost.
const SAFETY_POLL: Duration = Duration::from_secs(1);
impl RedisStore {
    /// The stored generation of `name` (0 when nothing is stored).
    pub(super) async fn generation(&self, name: &CredentialName) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let generation: Option<String> = self
            .timed(
                "reading a generation",
                ::redis::cmd("HGET")
                    .arg(self.inner.keys.state(name))
                    .arg("generation")
                    .query_async(&mut conn),
            )
            .await?;
        parse_u64(name, "generation", generation.as_deref().unwrap_or("0"))
    }

    /// How often a write without a precondition re-reads the generation after losing a race.
    const UNCONDITIONAL_ATTEMPTS: usize = 16;

    /// Writes `tokens` as the next generation: over `expected` (and, with a fence, only while
    /// the lease's fence is it), or over whatever is stored (`None`, retried when another write
    /// wins the race: the value is sealed for the generation it becomes).
    async fn write(
        &self,
        name: &CredentialName,
        cas: Option<(u64, Option<u64>)>,
        tokens: &TokenSet,
        last_refresh_at: Option<Timestamp>,
    ) -> Result<WriteOutcome, StoreError> {
        let mut conn = self.conn();
        // Index first: a credential whose state exists is always listed, even if this process
        // dies between the two calls (a name without state is skipped by `list`).
        let _: i64 = self
            .timed(
                "indexing a credential",
                ::redis::cmd("SADD")
                    .arg(self.inner.keys.index())
                    .arg(name.as_str())
                    .query_async(&mut conn),
            )
            .await?;
        let mut attempts = 0;
        loop {
            let (expected, fence) = match cas {
                Some(cas) => cas,
                None => (self.generation(name).await?, None),
            };
            let outcome = self
                .write_over(name, expected, fence, tokens, last_refresh_at)
                .await?;
            attempts += 1;
            match outcome {
                WriteOutcome::Conflict { .. }
                    if cas.is_none() && attempts < Self::UNCONDITIONAL_ATTEMPTS => {}
                outcome => return Ok(outcome),
            }
        }
    }

    /// One conditional write of `tokens` as generation `expected + 1`.
    async fn write_over(
        &self,
        name: &CredentialName,
        expected: u64,
        fence: Option<u64>,
        tokens: &TokenSet,
        last_refresh_at: Option<Timestamp>,
    ) -> Result<WriteOutcome, StoreError> {
        let generation = expected.saturating_add(1);
        let seal = |kind, plaintext: &[u8]| {
            self.inner
                .keyring
                .seal(&self.binding(kind, name, generation), plaintext)
                .map_err(|e| e.into_store_error(kind, name))
        };
        let sealed = seal(CREDENTIAL_KIND, &tokens.to_secret_json())?;
        let status = CredentialStatus {
            last_refresh_at,
            ..CredentialStatus::default()
        };
        let sealed_status = seal(
            CREDENTIAL_STATUS_KIND,
            &encode_status(&status, tokens.expires_at),
        )?;
        let mut conn = self.conn();
        let mut call = self.inner.scripts.write.prepare_invoke();
        call.key(self.inner.keys.state(name))
            .key(self.inner.keys.lease(name))
            .arg(expected.to_string())
            .arg(fence.map(|f| f.to_string()).unwrap_or_default())
            .arg(sealed.as_slice())
            .arg(sealed_status.as_slice())
            .arg(tokens.expires_at.as_millis().to_string())
            .arg(optional_millis(last_refresh_at))
            .arg(self.inner.keys.channel())
            .arg(name.as_str());
        let reply: Vec<String> = self
            .timed("writing a credential", call.invoke_async(&mut conn))
            .await?;
        match reply.as_slice() {
            [written, generation] => {
                let generation = parse_u64(name, "generation", generation)?;
                Ok(if written == "1" {
                    WriteOutcome::Written { generation }
                } else {
                    WriteOutcome::Conflict {
                        current_generation: generation,
                    }
                })
            }
            _ => Err(error::corrupt(
                name,
                "unexpected reply from the write script",
            )),
        }
    }

    /// Opens a credential's sealed status: the status and the expiry of its generation's
    /// tokens.
    fn open_status(
        &self,
        name: &str,
        generation: u64,
        sealed: Option<&[u8]>,
    ) -> Result<(CredentialStatus, Timestamp), StoreError> {
        let sealed = sealed.ok_or_else(|| error::corrupt(name, "no sealed status"))?;
        let plaintext = self
            .inner
            .keyring
            .open(
                &self.binding(CREDENTIAL_STATUS_KIND, name, generation),
                sealed,
            )
            .map_err(|e| e.into_store_error(CREDENTIAL_STATUS_KIND, name))?;
        decode_status(&plaintext).map_err(|what| error::corrupt(name, &what))
    }
}

/// A TTL in milliseconds, as a script argument.
fn ttl_millis(ttl: Duration) -> String {
    u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX)
        .to_string()
}

pub(super) fn parse_u64(name: &str, what: &str, text: &str) -> Result<u64, StoreError> {
    text.parse()
        .map_err(|_| error::corrupt(name, &format!("{what} is not a number")))
}

pub(super) fn parse_millis(
    name: &str,
    what: &str,
    text: Option<&str>,
) -> Result<Option<Timestamp>, StoreError> {
    text.map(|text| {
        text.parse::<i64>()
            .map(Timestamp::from_millis)
            .map_err(|_| error::corrupt(name, &format!("{what} is not a timestamp")))
    })
    .transpose()
}

fn optional_millis(time: Option<Timestamp>) -> String {
    time.map(|t| t.as_millis().to_string()).unwrap_or_default()
}

/// A generation as read from a hash.
fn read_generation(name: &str, raw: Option<Vec<u8>>) -> Result<Option<u64>, StoreError> {
    raw.map(|bytes| parse_u64(name, "generation", &String::from_utf8_lossy(&bytes)))
        .transpose()
}

#[async_trait]
impl CredentialStore for RedisStore {
    async fn load(&self, name: &CredentialName) -> Result<Option<StoredCredential>, StoreError> {
        let mut conn = self.conn();
        let (generation, sealed, sealed_status): (
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
        ) = self
            .timed(
                "loading a credential",
                ::redis::cmd("HMGET")
                    .arg(self.inner.keys.state(name))
                    .arg("generation")
                    .arg("sealed")
                    .arg("sealed_status")
                    .query_async(&mut conn),
            )
            .await?;
        let Some(generation) = read_generation(name, generation)? else {
            return Ok(None);
        };
        let sealed = sealed.ok_or_else(|| error::corrupt(name, "no sealed token set"))?;
        let (status, _) = self.open_status(name, generation, sealed_status.as_deref())?;
        let plaintext = self
            .inner
            .keyring
            .open(&self.binding(CREDENTIAL_KIND, name, generation), &sealed)
            .map_err(|e| e.into_store_error(CREDENTIAL_KIND, name))?;
        let tokens = decode_token_set(&plaintext).map_err(|what| error::corrupt(name, &what))?;
        Ok(Some(StoredCredential {
            name: name.clone(),
            generation,
            tokens,
            status,
        }))
    }

    async fn list(&self) -> Result<Vec<CredentialSummary>, StoreError> {
        let mut conn = self.conn();
        let mut names: Vec<String> = self
            .timed(
                "listing credentials",
                ::redis::cmd("SMEMBERS")
                    .arg(self.inner.keys.index())
                    .query_async(&mut conn),
            )
            .await?;
        let mut names: Vec<CredentialName> = names
            .drain(..)
            .filter_map(|name| match CredentialName::new(&name) {
                Ok(name) => Some(name),
                Err(_) => {
                    tracing::warn!(redis = %self.inner.url, "ignoring an invalid name in the Redis index");
                    None
                }
            })
            .collect();
        names.sort();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for name in &names {
            pipe.cmd("HMGET")
                .arg(self.inner.keys.state(name))
                .arg("generation")
                .arg("sealed_status");
        }
        let rows: Vec<(Option<Vec<u8>>, Option<Vec<u8>>)> = self
            .timed("listing credentials", pipe.query_async(&mut conn))
            .await?;
        let mut summaries = Vec::with_capacity(names.len());
        for (name, (generation, sealed_status)) in names.into_iter().zip(rows) {
            // Indexed but not stored: deleted, or a write that never happened.
            let Some(generation) = read_generation(&name, generation)? else {
                continue;
            };
            let (status, expires_at) =
                self.open_status(&name, generation, sealed_status.as_deref())?;
            summaries.push(CredentialSummary {
                generation,
                expires_at,
                status,
                name,
            });
        }
        Ok(summaries)
    }

    async fn put(
        &self,
        name: &CredentialName,
        precondition: Precondition,
        tokens: &TokenSet,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        let (cas, last_refresh_at) = match precondition {
            Precondition::None => (None, None),
            Precondition::Generation(generation) => (Some((generation, None)), Some(now)),
            Precondition::Fenced { generation, fence } => {
                (Some((generation, Some(fence))), Some(now))
            }
        };
        self.write(name, cas, tokens, last_refresh_at).await
    }

    async fn set_status(
        &self,
        name: &CredentialName,
        generation: u64,
        status: &CredentialStatus,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let (stored, sealed_status): (Option<Vec<u8>>, Option<Vec<u8>>) = self
            .timed(
                "reading a status",
                ::redis::cmd("HMGET")
                    .arg(self.inner.keys.state(name))
                    .arg("generation")
                    .arg("sealed_status")
                    .query_async(&mut conn),
            )
            .await?;
        if read_generation(name, stored)? != Some(generation) {
            return Ok(false);
        }
        // The expiry of this generation's tokens, from the authenticated copy (the script
        // writes only while the generation is still this one).
        let (_, expires_at) = self.open_status(name, generation, sealed_status.as_deref())?;
        let sealed_status = self
            .inner
            .keyring
            .seal(
                &self.binding(CREDENTIAL_STATUS_KIND, name, generation),
                &encode_status(status, expires_at),
            )
            .map_err(|e| e.into_store_error(CREDENTIAL_STATUS_KIND, name))?;
        let mut call = self.inner.scripts.set_status.prepare_invoke();
        call.key(self.inner.keys.state(name))
            .arg(generation.to_string())
            .arg(status.state.as_str())
            .arg(status.failures.to_string())
            .arg(optional_millis(status.last_refresh_at))
            .arg(if status.reason.is_some() { "1" } else { "0" })
            .arg(status.reason.as_deref().unwrap_or_default())
            .arg(optional_millis(status.next_attempt_at))
            .arg(self.inner.keys.channel())
            .arg(name.as_str())
            .arg(sealed_status.as_slice());
        let written: i64 = self
            .timed("writing a status", call.invoke_async(&mut conn))
            .await?;
        Ok(written == 1)
    }

    async fn delete(&self, name: &CredentialName) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let mut call = self.inner.scripts.delete.prepare_invoke();
        call.key(self.inner.keys.state(name))
            .arg(self.inner.keys.channel())
            .arg(name.as_str());
        let deleted: i64 = self
            .timed("deleting a credential", call.invoke_async(&mut conn))
            .await?;
        let index = self.inner.keys.index();
        let _: i64 = self
            .timed(
                "unindexing a credential",
                ::redis::cmd("SREM")
                    .arg(&index)
                    .arg(name.as_str())
                    .query_async(&mut conn),
            )
            .await?;
        // A concurrent put may have re-created it between the two calls: index it again.
        let exists: i64 = self
            .timed(
                "unindexing a credential",
                ::redis::cmd("EXISTS")
                    .arg(self.inner.keys.state(name))
                    .query_async(&mut conn),
            )
            .await?;
        if exists == 1 {
            let _: i64 = self
                .timed(
                    "indexing a credential",
                    ::redis::cmd("SADD")
                        .arg(&index)
                        .arg(name.as_str())
                        .query_async(&mut conn),
                )
                .await?;
        }
        Ok(deleted == 1)
    }

    async fn try_acquire_lease(
        &self,
        name: &CredentialName,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<LeaseAttempt, StoreError> {
        let mut conn = self.conn();
        let mut call = self.inner.scripts.acquire.prepare_invoke();
        call.key(self.inner.keys.lease(name))
            .arg(owner)
            .arg(self.inner.options.lease_clock_mode())
            .arg(now.as_millis().to_string())
            .arg(ttl_millis(ttl));
        let reply: Vec<String> = self
            .timed("taking a lease", call.invoke_async(&mut conn))
            .await?;
        match reply.as_slice() {
            [busy, held_until] if busy == "0" => Ok(LeaseAttempt::Busy {
                held_until: parse_millis(name, "lease expires_at", Some(held_until))?
                    .unwrap_or(now + ttl),
            }),
            [acquired, fence, abandoned, previous_owner, expires_at] if acquired == "1" => {
                let took_over_abandoned = abandoned == "1";
                if took_over_abandoned {
                    tracing::warn!(
                        credential = %name,
                        previous_owner = previous_owner.as_str(),
                        "took over a refresh lease its holder never released"
                    );
                }
                Ok(LeaseAttempt::Acquired(Lease {
                    name: name.clone(),
                    owner: owner.to_owned(),
                    fence: parse_u64(name, "fence", fence)?,
                    expires_at: parse_millis(name, "lease expires_at", Some(expires_at))?
                        .unwrap_or(now + ttl),
                    took_over_abandoned,
                    guard: None,
                }))
            }
            _ => Err(error::corrupt(
                name,
                "unexpected reply from the lease script",
            )),
        }
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Option<Timestamp>, StoreError> {
        let mut conn = self.conn();
        let mut call = self.inner.scripts.renew.prepare_invoke();
        call.key(self.inner.keys.lease(&lease.name))
            .arg(&lease.owner)
            .arg(lease.fence.to_string())
            .arg(self.inner.options.lease_clock_mode())
            .arg(now.as_millis().to_string())
            .arg(ttl_millis(ttl));
        let renewed: String = self
            .timed("renewing a lease", call.invoke_async(&mut conn))
            .await?;
        if renewed.is_empty() {
            return Ok(None);
        }
        parse_millis(&lease.name, "lease expires_at", Some(&renewed))
    }

    async fn release_lease(&self, lease: Lease) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let mut call = self.inner.scripts.release.prepare_invoke();
        call.key(self.inner.keys.lease(&lease.name))
            .arg(&lease.owner)
            .arg(lease.fence.to_string())
            .arg(self.inner.keys.channel())
            .arg(lease.name.as_str());
        let _: i64 = self
            .timed("releasing a lease", call.invoke_async(&mut conn))
            .await?;
        Ok(())
    }

    async fn mark_in_flight(
        &self,
        lease: &Lease,
        generation: u64,
    ) -> Result<Option<u64>, StoreError> {
        let name = &lease.name;
        let mut conn = self.conn();
        let mut call = self.inner.scripts.mark_in_flight.prepare_invoke();
        call.key(self.inner.keys.lease(name))
            .arg(lease.fence.to_string())
            .arg(generation.to_string());
        let reply: Vec<String> = self
            .timed("marking a refresh in flight", call.invoke_async(&mut conn))
            .await?;
        match reply.first().map(String::as_str) {
            None | Some("") => Ok(None),
            Some(previous) => parse_u64(name, "in_flight", previous).map(Some),
        }
    }

    async fn wait_for_change(
        &self,
        name: &CredentialName,
        seen_generation: u64,
        timeout: Duration,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribe before reading, so a change between the two is not missed.
        let mut events = self.changes();
        let moved = |generation: Result<u64, StoreError>| match generation {
            Ok(generation) => generation != seen_generation,
            Err(e) => {
                tracing::debug!(credential = %name, error = %e, "reading the generation failed");
                false
            }
        };
        let check = || async {
            match tokio::time::timeout_at(deadline, self.generation(name)).await {
                Ok(generation) => moved(generation),
                Err(_) => false,
            }
        };
        if check().await {
            return;
        }
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return;
            }
            let poll = if self.inner.events.is_subscribed() {
                SAFETY_POLL
            } else {
                self.inner.options.poll_interval
            };
            let wake_at = deadline.min(now + poll);
            tokio::select! {
                event = events.recv() => match event {
                    Ok(ChangeEvent::Changed { name: changed, generation }) if changed == name.as_str() => {
                        if generation != seen_generation {
                            return;
                        }
                    }
                    Ok(ChangeEvent::LeaseReleased { name: released }) if released == name.as_str() => return,
                    Ok(ChangeEvent::Resynced) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        if check().await {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        tokio::time::sleep_until(wake_at).await;
                        if check().await {
                            return;
                        }
                    }
                },
                () = tokio::time::sleep_until(wake_at) => {
                    if check().await {
                        return;
                    }
                }
            }
        }
    }
}
