//! What a lease holder does: heartbeat and release (with an outcome and the updated state).

use std::time::Duration;

use authkeeper_core::Timestamp;
use authkeeper_core::name::SessionId;

use super::lease_id::parse_lease_id;
use super::records::{self, Versioned};
use super::*;
use crate::model::{Outcome, SessionState};
use crate::storage_state::StorageState;

impl SessionPool {
    /// Renews a lease for `ttl` (default: the site's `lease_ttl`). Fails with
    /// [`LeaseError::LeaseLost`] when the lease was reclaimed or released.
    pub async fn heartbeat(
        &self,
        lease_id: &str,
        ttl: Option<Duration>,
    ) -> Result<Timestamp, LeaseError> {
        let (site, id) = self.lease_target(lease_id)?;
        let policy = &site.config.pool;
        let clamp = |ttl: Duration| {
            ttl.clamp(
                Duration::from_secs(1),
                policy.max_lease_ttl.max(Duration::from_secs(1)),
            )
        };
        for _ in 0..MAX_ATTEMPTS {
            let mut held = self.held(site, &id, lease_id).await?;
            // Without a TTL, renew by the one the lease was taken with.
            let leased_with = held
                .session
                .lease
                .as_ref()
                .and_then(|lease| lease.ttl_ms)
                .map(Duration::from_millis);
            let ttl = clamp(ttl.or(leased_with).unwrap_or(policy.lease_ttl));
            let expires_at = self.clock.now() + ttl;
            if let Some(lease) = held.session.lease.as_mut() {
                lease.expires_at = expires_at;
            }
            if self
                .write_record(&held.session, held.version)
                .await?
                .is_some()
            {
                return Ok(expires_at);
            }
        }
        Err(LeaseError::Contention(site.name.to_string()))
    }

    /// Returns a lease with the worker's outcome and, optionally, the session's updated storage
    /// state. Applies the pool policy (error score, usage, retirement).
    pub async fn release(
        &self,
        lease_id: &str,
        outcome: Outcome,
        storage_state: Option<StorageState>,
    ) -> Result<ReleaseSummary, LeaseError> {
        let (site, id) = self.lease_target(lease_id)?;
        for _ in 0..MAX_ATTEMPTS {
            let mut held = self.held(site, &id, lease_id).await?;
            let session = &mut held.session;
            if let Some(state) = &storage_state {
                session.storage_state = state.clone();
            }
            let was_retired = session.state == SessionState::Retired;
            policy::apply_outcome(session, outcome, &site.config.pool);
            session.lease = None;
            if self.write_record(session, held.version).await?.is_some() {
                let index = match outcome {
                    Outcome::Ok => 0,
                    Outcome::Blocked => 1,
                    Outcome::LoggedOut => 2,
                    Outcome::Error => 3,
                };
                bump(&self.counters.releases[index]);
                if !was_retired && session.state == SessionState::Retired {
                    bump(&self.counters.retired);
                    tracing::info!(site = %site.name, session = %session.id, reason = session.reason.as_deref().unwrap_or(""), "session retired");
                }
                return Ok(ReleaseSummary {
                    session_id: session.id.clone(),
                    state: session.state,
                    reason: session.reason.clone(),
                    error_score: session.error_score,
                    usage_count: session.usage_count,
                });
            }
        }
        Err(LeaseError::Contention(site.name.to_string()))
    }

    pub(super) fn lease_target(&self, lease_id: &str) -> Result<(&Site, SessionId), LeaseError> {
        let unknown = || LeaseError::UnknownLease(lease_id.chars().take(200).collect());
        let parsed = parse_lease_id(lease_id).ok_or_else(unknown)?;
        let site = self.sites.get(&parsed.site).ok_or_else(unknown)?;
        Ok((site, parsed.session_id))
    }

    /// The session `id` if `lease_id` still holds it.
    pub(super) async fn held(
        &self,
        site: &Site,
        id: &SessionId,
        lease_id: &str,
    ) -> Result<Versioned, LeaseError> {
        let current = records::load_one(self.store.as_ref(), &site.name, id)
            .await?
            .ok_or_else(|| LeaseError::UnknownLease(lease_id.chars().take(200).collect()))?;
        // An expired lease nobody took over is still the caller's: renewing it is safe.
        match &current.session.lease {
            Some(lease) if lease.lease_id == lease_id => Ok(current),
            _ => Err(LeaseError::LeaseLost(lease_id.chars().take(200).collect())),
        }
    }
}
