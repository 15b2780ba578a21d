//! The refresh itself: single flight in the process, the store's lease across processes, a
//! re-read under the lease, one token request, and the durable write before anyone sees the
//! new token.

use std::sync::Arc;
use std::time::Duration;

use super::entry::{Current, Entry, Need};
use super::{Keeper, KeeperError, Token};
use crate::clock::Timestamp;
use crate::error::{ErrorClass, RefreshError};
use crate::events::{Event, Trigger};
use crate::grant::{GrantKind, GrantRequest};
use crate::store::{
    CredentialStatus, Lease, RefreshStart, StoreError, StoredCredential, Unfinished, WriteOutcome,
};
use crate::token::{TokenResponse, TokenSet};

/// Either go on with a value, or stop with the caller's answer.
enum Step<T> {
    Go(T),
    Done(Result<Token, KeeperError>),
}

/// What a refresh starts from, read under the lease.
struct Start {
    /// The stored generation the new one must follow (0: nothing stored).
    generation: u64,
    /// The cached generation, when there is one.
    previous: Option<Arc<Current>>,
}

impl Keeper {
    /// Refreshes `entry` once for everyone who needs it.
    pub(super) async fn refresh(
        &self,
        entry: &Arc<Entry>,
        need: Need,
        trigger: Trigger,
    ) -> Result<Token, KeeperError> {
        let _flight = entry.flight.lock().await;
        if let Some(token) = self.satisfied(entry, need) {
            return Ok(token);
        }
        if let Some(error) = self.gate(entry, self.now()) {
            return self.serve_or(entry, need, error);
        }
        let name = &entry.name;
        let lease_ttl = self.effective_lease_ttl(entry);
        // Wait for another holder at most one lease TTL plus a margin: by then its lease expired.
        let give_up_at = tokio::time::Instant::now() + lease_ttl + Duration::from_secs(5);
        let mut poll = self.inner.settings.poll_interval;
        let mark_in_flight = entry.settings.grant == GrantKind::RefreshToken;
        loop {
            let attempt = match self
                .inner
                .store
                .begin_refresh(
                    name,
                    &self.inner.owner,
                    self.now(),
                    lease_ttl,
                    mark_in_flight,
                )
                .await
            {
                Ok(attempt) => attempt,
                Err(source) => return self.serve_or(entry, need, store_error(entry, source)),
            };
            match attempt {
                RefreshStart::Acquired {
                    lease,
                    stored,
                    interrupted,
                } => {
                    if lease.took_over_abandoned {
                        self.emit(Event::LeaseTakenOver { name });
                    }
                    if interrupted {
                        tracing::warn!(
                            credential = %name,
                            "the previous refresh holder stopped while calling the token endpoint; retrying with the same refresh token"
                        );
                    }
                    let mut held = Some(lease);
                    let under = UnderLease {
                        stored,
                        interrupted,
                    };
                    let result = self
                        .refresh_under_lease(entry, need, trigger, &mut held, under)
                        .await;
                    if let Some(lease) = held {
                        self.release_lease(lease).await;
                    }
                    return result;
                }
                RefreshStart::Busy { .. } => {
                    self.inner
                        .store
                        .wait_for_change(name, entry.generation(), poll)
                        .await;
                    poll = (poll * 2).min(Duration::from_millis(100));
                    match self.read_store(entry).await {
                        Ok(Some(record)) => self.install(entry, record),
                        Ok(None) => {}
                        Err(error) => return self.serve_or(entry, need, error),
                    }
                    if let Some(token) = self.satisfied(entry, need) {
                        return Ok(token);
                    }
                    if let Some(error) = self.gate(entry, self.now()) {
                        return self.serve_or(entry, need, error);
                    }
                    if tokio::time::Instant::now() >= give_up_at {
                        let error = KeeperError::LeaseWaitTimeout {
                            name: name.to_string(),
                            waited: lease_ttl,
                        };
                        return self.serve_or(entry, need, error);
                    }
                }
            }
        }
    }

    /// The refresh proper, run while holding the store's lease (in `held`; a successful write
    /// releases it, taking it out).
    async fn refresh_under_lease(
        &self,
        entry: &Arc<Entry>,
        need: Need,
        trigger: Trigger,
        held: &mut Option<Lease>,
        under: UnderLease,
    ) -> Result<Token, KeeperError> {
        let Some(lease) = held.as_ref() else {
            return Err(KeeperError::NotStored(entry.name.to_string()));
        };
        let interrupted = under.interrupted;
        let start = match self.start_under_lease(entry, need, under.stored) {
            Step::Go(start) => start,
            Step::Done(answer) => return answer,
        };
        let now = self.now();
        if let Err(until) = entry.breaker.try_pass(now) {
            let error = KeeperError::Unavailable {
                name: entry.name.to_string(),
                class: ErrorClass::Transient,
                cause: "token endpoint circuit open after repeated failures".into(),
                next_attempt_at: until,
            };
            return self.serve_or(entry, need, error);
        }
        let refresh_token = start
            .previous
            .as_ref()
            .and_then(|c| c.tokens.refresh_token.clone());
        let request = match (entry.settings.grant, &refresh_token) {
            (GrantKind::Session, _) => None,
            (GrantKind::ClientCredentials, _) => Some(GrantRequest::ClientCredentials),
            (GrantKind::RefreshToken, Some(token)) => Some(GrantRequest::RefreshToken(token)),
            (GrantKind::RefreshToken, None) => {
                entry.breaker.record_success();
                return self
                    .record_failure(
                        entry,
                        need,
                        start.generation,
                        RefreshError::NoRefreshToken,
                        Duration::ZERO,
                    )
                    .await;
            }
        };
        let started = tokio::time::Instant::now();
        let current = start.previous.as_ref().map(|c| &c.tokens);
        let outcome = match (&request, &entry.source) {
            (Some(request), _) => {
                self.renewing(entry, lease, entry.client.request(request, now))
                    .await
            }
            (None, Some(source)) => {
                self.renewing(entry, lease, source.fetch(current, now))
                    .await
            }
            (None, None) => Err(RefreshError::Source {
                class: ErrorClass::Configuration,
                cause: "no_source".into(),
                message: format!(
                    "credential `{}` has grant = \"session\" but nothing renews it (no site pool)",
                    entry.name
                ),
                retry_after: None,
            }),
        };
        let latency = started.elapsed();
        match outcome {
            Ok(response) => {
                entry.breaker.record_success();
                let write = Write {
                    start,
                    requested_at: now,
                    latency,
                    trigger,
                };
                self.store_refreshed(entry, need, response, write, held)
                    .await
            }
            Err(error) => {
                if error.class() == ErrorClass::Transient {
                    entry
                        .breaker
                        .record_failure(self.now(), error.retry_after());
                } else {
                    entry.breaker.record_success();
                }
                if interrupted && error.class() == ErrorClass::NeedsReauth {
                    return self
                        .record_lost_in_crash(entry, need, start.generation, error, latency)
                        .await;
                }
                self.record_failure(entry, need, start.generation, error, latency)
                    .await
            }
        }
    }

    /// Runs `work` (the token request) while renewing `lease` every third of its TTL, so a slow
    /// provider never lets the lease lapse under a live holder. A lost lease is only logged: the
    /// fenced write that follows refuses to store what this holder got.
    async fn renewing<T>(
        &self,
        entry: &Entry,
        lease: &Lease,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let ttl = self.effective_lease_ttl(entry);
        let every = (ttl / 3).max(Duration::from_millis(100));
        tokio::pin!(work);
        loop {
            tokio::select! {
                output = &mut work => return output,
                () = tokio::time::sleep(every) => {
                    match self.inner.store.renew_lease(lease, self.now(), ttl).await {
                        Ok(Some(_)) => {}
                        Ok(None) => tracing::warn!(credential = %entry.name, "the refresh lease was taken over during the token request; its result will be refused"),
                        Err(error) => tracing::warn!(credential = %entry.name, %error, "could not renew the refresh lease"),
                    }
                }
            }
        }
    }

    /// What the store held when the lease was taken: another process may have refreshed while
    /// we waited for it, or failed in a way that forbids trying now.
    fn start_under_lease(
        &self,
        entry: &Arc<Entry>,
        need: Need,
        stored: Option<StoredCredential>,
    ) -> Step<Start> {
        match stored {
            Some(record) => {
                let generation = record.generation;
                self.install(entry, record);
                if let Some(token) = self.satisfied(entry, need) {
                    return Step::Done(Ok(token));
                }
                if let Some(error) = self.gate(entry, self.now()) {
                    return Step::Done(self.serve_or(entry, need, error));
                }
                Step::Go(Start {
                    generation,
                    previous: entry.current.load_full(),
                })
            }
            None if matches!(
                entry.settings.grant,
                GrantKind::ClientCredentials | GrantKind::Session
            ) =>
            {
                Step::Go(Start {
                    generation: 0,
                    previous: None,
                })
            }
            None => Step::Done(Err(KeeperError::NotStored(entry.name.to_string()))),
        }
    }

    /// Stores the provider's answer durably (fenced), then installs it and answers the caller.
    async fn store_refreshed(
        &self,
        entry: &Arc<Entry>,
        need: Need,
        response: TokenResponse,
        write: Write,
        held: &mut Option<Lease>,
    ) -> Result<Token, KeeperError> {
        let name = &entry.name;
        let received_at = self.now();
        // Lifetimes count from when the request was sent, not when the answer arrived: the
        // provider started the token's clock somewhere in between.
        let tokens = match (&write.start.previous, entry.settings.grant) {
            (Some(previous), GrantKind::RefreshToken) => {
                previous
                    .tokens
                    .refreshed_with(response, write.requested_at, &entry.settings.expiry)
            }
            _ => response.into_token_set(write.requested_at, &entry.settings.expiry),
        };
        let expires_at = tokens.expires_at;
        let expected_generation = write.start.generation;
        match self
            .write_durably(held, expected_generation, &tokens, received_at)
            .await
        {
            Ok(WriteOutcome::Written { generation }) => {
                self.install(
                    entry,
                    StoredCredential {
                        name: name.clone(),
                        generation,
                        tokens,
                        status: CredentialStatus {
                            last_refresh_at: Some(received_at),
                            ..CredentialStatus::default()
                        },
                    },
                );
                if expected_generation == 0 {
                    self.emit(Event::Issued { name, generation });
                } else {
                    self.emit(Event::Refreshed {
                        name,
                        generation,
                        trigger: write.trigger,
                        latency: write.latency,
                        expires_at,
                    });
                }
                self.satisfied(entry, need)
                    .or_else(|| entry.current.load_full().map(|current| Token { current }))
                    .ok_or_else(|| KeeperError::NotStored(name.to_string()))
            }
            Ok(WriteOutcome::Conflict { current_generation }) => {
                self.emit(Event::WriteFenced {
                    name,
                    current_generation,
                });
                match self.read_store(entry).await? {
                    Some(record) => self.install(entry, record),
                    None => return Err(KeeperError::NotStored(name.to_string())),
                }
                let error = KeeperError::Superseded {
                    name: name.to_string(),
                };
                self.satisfied(entry, need)
                    .map_or_else(|| self.serve_or(entry, need, error), Ok)
            }
            Err(source) => {
                // The provider may have rotated the refresh token and we could not keep the new
                // one: say so loudly. The new access token is not handed out (it is not durable).
                tracing::error!(credential = %name, error = %source, "refreshed tokens could not be stored; the rotated refresh token may be lost");
                Err(store_error(entry, source))
            }
        }
    }

    /// Writes a refreshed token set fenced by the lease in `held` and releases the lease,
    /// retrying briefly when the store is momentarily unavailable. The lease stays in `held`
    /// when nothing could be written.
    async fn write_durably(
        &self,
        held: &mut Option<Lease>,
        generation: u64,
        tokens: &TokenSet,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        let mut delay = Duration::from_millis(25);
        let mut attempts = 0;
        loop {
            let Some(lease) = held.take() else {
                return Err(StoreError::Other {
                    message: "the refresh lease is gone".to_owned(),
                    source: None,
                });
            };
            attempts += 1;
            match self
                .inner
                .store
                .finish_refresh(lease, generation, tokens, now)
                .await
            {
                Ok(outcome) => return Ok(outcome),
                Err(Unfinished { error, lease }) => {
                    *held = Some(lease);
                    // A store restart (Redis failover) can take seconds: keep the rotated
                    // refresh token in memory and retry for ~5 s; fencing still refuses a stale
                    // write.
                    if !matches!(error, StoreError::Unavailable { .. }) || attempts >= 10 {
                        return Err(error);
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// What [`crate::store::CredentialStore::begin_refresh`] found under the lease.
struct UnderLease {
    stored: Option<StoredCredential>,
    interrupted: bool,
}

/// How a successful token request is to be written.
struct Write {
    start: Start,
    requested_at: Timestamp,
    latency: Duration,
    trigger: Trigger,
}

/// A store failure of `entry`, as the caller sees it.
pub(super) fn store_error(entry: &Entry, source: StoreError) -> KeeperError {
    KeeperError::Store {
        name: entry.name.to_string(),
        source,
    }
}
