//! Credentials in Redis: one hash per credential (sealed token set and plaintext status), one
//! for its lease, written by the Lua scripts of [`super::scripts`], and the
//! [`CredentialStore`] implementation of [`RedisStore`].

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use authkeeper_core::name::CredentialName;
use authkeeper_core::{
    CredentialState, CredentialStatus, CredentialStore, CredentialSummary, Lease, LeaseAttempt,
    Precondition, StoreError, StoredCredential, Timestamp, TokenSet, WriteOutcome,
};

use super::{ChangeEvent, RedisStore, error};
use crate::seal::CREDENTIAL_KIND;

/// While the subscription is up, waiters still re-read the generation this often, in case an
/// event was lost.
const SAFETY_POLL: Duration = Duration::from_secs(1);
/// The status fields of a credential hash, in the order they are read.
const STATUS_FIELDS: [&str; 5] = [
    "state",
    "last_refresh_at",
    "failures",
    "reason",
    "next_attempt_at",
];

/// The status fields as read from the hash.
type RawStatus = [Option<String>; 5];

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

    /// Writes `tokens` as the next generation (`cas`: only over `expected`, fenced).
    async fn write(
        &self,
        name: &CredentialName,
        cas: Option<(u64, Option<u64>)>,
        tokens: &TokenSet,
        last_refresh_at: Option<Timestamp>,
    ) -> Result<WriteOutcome, StoreError> {
        let sealed = self
            .inner
            .keyring
            .seal(CREDENTIAL_KIND, name, &tokens.to_secret_json())
            .map_err(|e| e.into_store_error(CREDENTIAL_KIND, name))?;
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
        let (mode, expected, fence) = match cas {
            Some((expected, fence)) => (
                "cas",
                expected.to_string(),
                fence.map(|f| f.to_string()).unwrap_or_default(),
            ),
            None => ("put", String::new(), String::new()),
        };
        let mut call = self.inner.scripts.write.prepare_invoke();
        call.key(self.inner.keys.state(name))
            .key(self.inner.keys.lease(name))
            .arg(mode)
            .arg(expected)
            .arg(fence)
            .arg(sealed.as_slice())
            .arg(tokens.expires_at.as_millis().to_string())
            .arg(
                last_refresh_at
                    .map(|t| t.as_millis().to_string())
                    .unwrap_or_default(),
            )
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

fn parse_status(name: &str, raw: RawStatus) -> Result<CredentialStatus, StoreError> {
    let [state, last_refresh_at, failures, reason, next_attempt_at] = raw;
    Ok(CredentialStatus {
        state: match state.as_deref() {
            None => CredentialState::Valid,
            Some(text) => {
                CredentialState::parse(text).ok_or_else(|| error::corrupt(name, "unknown state"))?
            }
        },
        last_refresh_at: parse_millis(name, "last_refresh_at", last_refresh_at.as_deref())?,
        failures: failures
            .as_deref()
            .unwrap_or("0")
            .parse()
            .map_err(|_| error::corrupt(name, "failures is not a number"))?,
        reason,
        next_attempt_at: parse_millis(name, "next_attempt_at", next_attempt_at.as_deref())?,
    })
}

fn optional_millis(time: Option<Timestamp>) -> String {
    time.map(|t| t.as_millis().to_string()).unwrap_or_default()
}

/// An HMGET reply of `generation, X, STATUS_FIELDS...` split into its parts.
struct HashRow {
    generation: Option<Vec<u8>>,
    second: Option<Vec<u8>>,
    status: RawStatus,
}

/// Splits an HMGET reply of `generation, X, STATUS_FIELDS...`.
fn split_status(mut values: Vec<Option<Vec<u8>>>) -> Option<HashRow> {
    if values.len() != 2 + STATUS_FIELDS.len() {
        return None;
    }
    let text = |v: Option<Vec<u8>>| v.map(|b| String::from_utf8_lossy(&b).into_owned());
    let status: Vec<Option<String>> = values.drain(2..).map(text).collect();
    let status: RawStatus = status.try_into().ok()?;
    let second = values.pop()?;
    let generation = values.pop()?;
    Some(HashRow {
        generation,
        second,
        status,
    })
}

#[async_trait]
impl CredentialStore for RedisStore {
    async fn load(&self, name: &CredentialName) -> Result<Option<StoredCredential>, StoreError> {
        let mut conn = self.conn();
        let values: Vec<Option<Vec<u8>>> = self
            .timed(
                "loading a credential",
                ::redis::cmd("HMGET")
                    .arg(self.inner.keys.state(name))
                    .arg("generation")
                    .arg("sealed")
                    .arg(&STATUS_FIELDS[..])
                    .query_async(&mut conn),
            )
            .await?;
        let HashRow {
            generation,
            second: sealed,
            status,
        } = split_status(values)
            .ok_or_else(|| error::corrupt(name, "unexpected reply to HMGET"))?;
        let Some(generation) = generation else {
            return Ok(None);
        };
        let generation = parse_u64(name, "generation", &String::from_utf8_lossy(&generation))?;
        let sealed = sealed.ok_or_else(|| error::corrupt(name, "no sealed token set"))?;
        let status = parse_status(name, status)?;
        let plaintext = self
            .inner
            .keyring
            .open(CREDENTIAL_KIND, name, &sealed)
            .map_err(|e| e.into_store_error(CREDENTIAL_KIND, name))?;
        let tokens = crate::record::decode_token_set(&plaintext)
            .map_err(|what| error::corrupt(name, &what))?;
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
                .arg("expires_at")
                .arg(&STATUS_FIELDS[..]);
        }
        let rows: Vec<Vec<Option<Vec<u8>>>> = self
            .timed("listing credentials", pipe.query_async(&mut conn))
            .await?;
        let mut summaries = Vec::with_capacity(names.len());
        for (name, values) in names.into_iter().zip(rows) {
            let HashRow {
                generation,
                second: expires_at,
                status,
            } = split_status(values)
                .ok_or_else(|| error::corrupt(&name, "unexpected reply to HMGET"))?;
            // Indexed but not stored: deleted, or a write that never happened.
            let Some(generation) = generation else {
                continue;
            };
            let generation = parse_u64(&name, "generation", &String::from_utf8_lossy(&generation))?;
            let expires_at = expires_at.map(|b| String::from_utf8_lossy(&b).into_owned());
            let expires_at = parse_millis(&name, "expires_at", expires_at.as_deref())?
                .ok_or_else(|| error::corrupt(&name, "no expires_at"))?;
            summaries.push(CredentialSummary {
                generation,
                expires_at,
                status: parse_status(&name, status)?,
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
            .arg(name.as_str());
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
        let expires_at = now + ttl;
        let mut conn = self.conn();
        let mut call = self.inner.scripts.acquire.prepare_invoke();
        call.key(self.inner.keys.lease(name))
            .arg(owner)
            .arg(now.as_millis().to_string())
            .arg(expires_at.as_millis().to_string());
        let reply: Vec<String> = self
            .timed("taking a lease", call.invoke_async(&mut conn))
            .await?;
        match reply.as_slice() {
            [busy, held_until] if busy == "0" => Ok(LeaseAttempt::Busy {
                held_until: parse_millis(name, "lease expires_at", Some(held_until))?
                    .unwrap_or(expires_at),
            }),
            [acquired, fence, abandoned, previous_owner] if acquired == "1" => {
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
                    expires_at,
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
