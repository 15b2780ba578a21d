//! Leasing: pick a free session, a session needing a login, or a free slot, and take it with
//! a write over the version read.

use std::time::Duration;

use authkeeper_core::Timestamp;
use authkeeper_core::name::SessionId;
use rand::seq::SliceRandom;

use super::lease_id::new_lease_id;
use super::records::{self, Versioned};
use super::*;
use crate::config::AccountConfig;
use crate::model::{LeaseInfo, Session, SessionLease, SessionState};
use crate::storage_state::StorageState;

impl SessionPool {
    /// Leases one session of `site` to one worker: never the same session to two holders at
    /// once. Re-logs in a session that needs it (or whose probe finds it logged out) before
    /// handing it out, and creates sessions in free slots when the site has a login.
    pub async fn lease(
        &self,
        site_name: &str,
        request: &LeaseRequest,
    ) -> Result<SessionLease, LeaseError> {
        let site = self.site(site_name)?;
        if let Some(account) = &request.account
            && site.config.account(account).is_none()
        {
            return Err(LeaseError::UnknownAccount {
                site: site.name.to_string(),
                account: account.clone(),
            });
        }
        let policy = &site.config.pool;
        let ttl = request.lease_ttl.unwrap_or(policy.lease_ttl).clamp(
            Duration::from_secs(1),
            policy.max_lease_ttl.max(Duration::from_secs(1)),
        );
        for _ in 0..MAX_ATTEMPTS {
            let now = self.clock.now();
            let sessions = records::load_site(self.store.as_ref(), &site.name).await?;
            match self.claim(site, sessions, request, ttl, now).await? {
                Claim::Taken(taken) => match self.prepare(site, *taken, ttl).await? {
                    Some(lease) => {
                        bump(&self.counters.leases);
                        return Ok(lease);
                    }
                    None => continue,
                },
                Claim::Lost => {
                    tokio::task::yield_now().await;
                    continue;
                }
                Claim::Exhausted { retry_after } => {
                    bump(&self.counters.exhausted);
                    return Err(LeaseError::Exhausted {
                        site: site.name.to_string(),
                        retry_after,
                    });
                }
            }
        }
        Err(LeaseError::Contention(site.name.to_string()))
    }

    /// Takes a session (free, needing a login, or a new one in a free slot) under a lease.
    pub(super) async fn claim(
        &self,
        site: &Site,
        mut sessions: Vec<Versioned>,
        request: &LeaseRequest,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Claim, LeaseError> {
        let policy = &site.config.pool;
        let wanted = |session: &Session| {
            request
                .account
                .as_ref()
                .is_none_or(|account| session.account == account.as_str())
        };
        // A claim holds the session long enough to probe and log in before the worker's TTL starts.
        let claim_ttl = ttl + self.preparation_allowance(site);
        sessions.shuffle(&mut rand::thread_rng());

        let mut lost_any = false;
        // 1. A free, active session.
        for entry in sessions.iter_mut() {
            let session = &mut entry.session;
            if session.state != SessionState::Active || session.is_leased(now) || !wanted(session) {
                continue;
            }
            if let Some(reason) = policy::expired(session, policy, now)
                .or_else(|| policy::limit_reached(session, policy))
            {
                let mut retired = session.clone();
                policy::retire(&mut retired, reason);
                retired.lease = None;
                if self.write_record(&retired, entry.version).await?.is_some() {
                    bump(&self.counters.retired);
                    tracing::info!(site = %site.name, session = %retired.id, reason, "session retired");
                }
                continue;
            }
            let mut taken = session.clone();
            let hold = if self.probe_due(site, &taken, now) {
                claim_ttl
            } else {
                ttl
            };
            taken.lease = Some(self.new_lease(site, &taken, &request.holder, now + hold, ttl));
            taken.usage_count += 1;
            taken.last_used_at = Some(now);
            match self.write_record(&taken, entry.version).await? {
                Some(version) => {
                    return Ok(Claim::Taken(Box::new(Versioned {
                        session: taken,
                        version,
                    })));
                }
                None => lost_any = true,
            }
        }

        if site.login.is_some() {
            // 2. A session that needs a login (logged out, or a failed login before).
            for entry in sessions.iter() {
                let session = &entry.session;
                if session.state != SessionState::NeedsLogin
                    || session.is_leased(now)
                    || !wanted(session)
                {
                    continue;
                }
                let mut taken = session.clone();
                taken.lease =
                    Some(self.new_lease(site, &taken, &request.holder, now + claim_ttl, ttl));
                taken.usage_count += 1;
                taken.last_used_at = Some(now);
                match self.write_record(&taken, entry.version).await? {
                    Some(version) => {
                        return Ok(Claim::Taken(Box::new(Versioned {
                            session: taken,
                            version,
                        })));
                    }
                    None => lost_any = true,
                }
            }
            // 3. A free slot: none stored there yet, or only a retired session.
            for slot in 0..policy.max_sessions_per_account.max(1) {
                for account in site.config.accounts.iter().filter(|a| {
                    request
                        .account
                        .as_ref()
                        .is_none_or(|w| a.name == w.as_str())
                }) {
                    let id = slot_id(&account.name, slot)?;
                    let existing = sessions.iter().find(|entry| entry.session.id == id);
                    let expected_version = match existing {
                        None => 0,
                        Some(entry)
                            if entry.session.state == SessionState::Retired
                                && !entry.session.is_leased(now) =>
                        {
                            entry.version
                        }
                        Some(_) => continue,
                    };
                    let mut fresh = self.new_session(site, account, &id, now)?;
                    fresh.lease =
                        Some(self.new_lease(site, &fresh, &request.holder, now + claim_ttl, ttl));
                    fresh.usage_count = 1;
                    fresh.last_used_at = Some(now);
                    match self.write_record(&fresh, expected_version).await? {
                        Some(version) => {
                            return Ok(Claim::Taken(Box::new(Versioned {
                                session: fresh,
                                version,
                            })));
                        }
                        None => lost_any = true,
                    }
                }
            }
        }

        if lost_any {
            return Ok(Claim::Lost);
        }
        let retry_after = sessions
            .iter()
            .filter_map(|entry| entry.session.lease.as_ref())
            .filter(|lease| lease.expires_at > now)
            .map(|lease| lease.expires_at.saturating_since(now))
            .min();
        Ok(Claim::Exhausted { retry_after })
    }

    /// How much longer than the worker's TTL a claim holds a session: time to probe and log in.
    pub(super) fn preparation_allowance(&self, site: &Site) -> Duration {
        let login = site
            .config
            .login
            .as_ref()
            .map_or(Duration::ZERO, |login| login.timeout);
        let probe = site
            .config
            .probe
            .as_ref()
            .map_or(Duration::ZERO, |probe| probe.timeout);
        login + probe + Duration::from_secs(5)
    }

    /// A lease of `session` for `holder` until `expires_at`; heartbeats renew it by `ttl`.
    pub(super) fn new_lease(
        &self,
        site: &Site,
        session: &Session,
        holder: &str,
        expires_at: Timestamp,
        ttl: Duration,
    ) -> LeaseInfo {
        LeaseInfo {
            lease_id: new_lease_id(&site.name, &session.id),
            holder: holder.to_owned(),
            expires_at,
            ttl_ms: Some(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// A session record for `account` in slot `id`, waiting for its first login.
    pub(super) fn new_session(
        &self,
        site: &Site,
        account: &AccountConfig,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Session, LeaseError> {
        let proxy = resolve_proxy(site, account)?;
        // One identity for the session's whole life, the same in every process (a stable pick).
        let identity = site
            .config
            .identity
            .identity_for(&format!("{}/{id}", site.name), &account.identity);
        Ok(Session {
            id: id.clone(),
            site: site.name.clone(),
            account: account.name.clone(),
            proxy,
            identity,
            storage_state: StorageState::default(),
            state: SessionState::NeedsLogin,
            reason: Some("new".to_owned()),
            created_at: now,
            last_used_at: None,
            last_checked_at: None,
            last_refreshed_at: None,
            usage_count: 0,
            error_score: 0.0,
            expires_at: None,
            lease: None,
            logins: 0,
        })
    }
}

/// The lease a worker gets for a session claimed under its lease.
pub(super) fn hand_out(session: Session) -> SessionLease {
    let (lease_id, lease_expires_at) = session
        .lease
        .as_ref()
        .map(|lease| (lease.lease_id.clone(), lease.expires_at))
        .unwrap_or_default();
    SessionLease {
        lease_id,
        session_id: session.id.clone(),
        site: session.site.clone(),
        account: session.account.clone(),
        proxy: session.proxy.clone(),
        identity: session
            .identity
            .as_ref()
            .map(crate::identity::Identity::context_options),
        storage_state: session.storage_state.clone(),
        lease_expires_at,
    }
}

/// What a claim found.
pub(super) enum Claim {
    Taken(Box<Versioned>),
    /// Lost every race this round: re-read.
    Lost,
    Exhausted {
        retry_after: Option<Duration>,
    },
}
