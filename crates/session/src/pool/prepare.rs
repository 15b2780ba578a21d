//! Preparing a claimed session before it is handed out: probe it when stale, log it in when
//! needed, put it back when that fails.

use std::time::Duration;

use authkeeper_core::Timestamp;

use super::records::Versioned;
use super::*;
use crate::health::{self, ProbeOutcome, ProbeResult};
use crate::login::LoginRequest;
use crate::model::{Outcome, Session, SessionLease, SessionState};
use crate::storage_state::StorageState;

impl SessionPool {
    /// Makes a claimed session ready for the worker: logs it in when it needs it, probes it when
    /// its last check is stale, then starts the worker's TTL. `None`: the session turned out
    /// unusable (blocked) and was put back; the caller tries another.
    pub(super) async fn prepare(
        &self,
        site: &Site,
        mut taken: Versioned,
        ttl: Duration,
    ) -> Result<Option<SessionLease>, LeaseError> {
        let ready = taken.session.state == SessionState::Active
            && !self.probe_due(site, &taken.session, self.clock.now());
        if ready {
            // Claimed with the worker's TTL already: nothing more to write.
            return Ok(Some(hand_out(taken.session)));
        }
        if taken.session.state == SessionState::NeedsLogin {
            taken = self.login_in_place(site, taken).await?;
        } else {
            match self.probe(site, &taken.session).await {
                ProbeVerdict::LoggedIn(state) => {
                    taken.session.storage_state = state;
                    taken.session.last_checked_at = Some(self.clock.now());
                }
                ProbeVerdict::LoggedOut => {
                    tracing::info!(site = %site.name, session = %taken.session.id, "probe found the session logged out: logging in again");
                    if site.login.is_none() {
                        self.put_back(site, taken, |session| {
                            session.state = SessionState::NeedsLogin;
                            session.reason = Some("logged_out".to_owned());
                        })
                        .await?;
                        return Ok(None);
                    }
                    taken = self.login_in_place(site, taken).await?;
                }
                ProbeVerdict::Blocked(status) => {
                    tracing::warn!(site = %site.name, session = %taken.session.id, status, "probe was blocked: session not handed out");
                    let policy = site.config.pool.clone();
                    self.put_back(site, taken, |session| {
                        policy::apply_outcome(session, Outcome::Blocked, &policy)
                    })
                    .await?;
                    return Ok(None);
                }
                ProbeVerdict::Unknown => {}
            }
        }
        let now = self.clock.now();
        let lease = taken
            .session
            .lease
            .as_mut()
            .ok_or_else(|| LeaseError::Contention(site.name.to_string()))?;
        lease.expires_at = now + ttl;
        let lease = lease.clone();
        match self.write_record(&taken.session, taken.version).await? {
            Some(_) => {}
            None => return Err(LeaseError::LeaseLost(lease.lease_id)),
        }
        tracing::debug!(site = %site.name, session = %taken.session.id, holder = %lease.holder, "session leased");
        Ok(Some(hand_out(taken.session)))
    }

    /// Whether `session` must be probed before it is handed out: the site has a probe and the
    /// session's last check is older than `max_staleness`.
    pub(super) fn probe_due(&self, site: &Site, session: &Session, now: Timestamp) -> bool {
        site.config.probe.as_ref().is_some_and(|probe| {
            session
                .last_checked_at
                .is_none_or(|checked| now.saturating_since(checked) >= probe.max_staleness)
        })
    }

    /// Clears the lease of a claimed session after `change`, so others may take it.
    pub(super) async fn put_back(
        &self,
        site: &Site,
        mut taken: Versioned,
        change: impl FnOnce(&mut Session),
    ) -> Result<(), LeaseError> {
        change(&mut taken.session);
        taken.session.lease = None;
        if taken.session.state == SessionState::Retired {
            bump(&self.counters.retired);
        }
        if self
            .write_record(&taken.session, taken.version)
            .await?
            .is_none()
        {
            tracing::warn!(site = %site.name, session = %taken.session.id, "session changed while held: not put back");
        }
        Ok(())
    }

    /// Runs the site's login for a session held under a claim and stores the result. On failure
    /// the session is put back needing a login, and the error returned.
    pub(super) async fn login_in_place(
        &self,
        site: &Site,
        mut taken: Versioned,
    ) -> Result<Versioned, LeaseError> {
        let Some(login) = site.login.clone() else {
            return Err(LeaseError::NoLogin(site.name.to_string()));
        };
        let account_name = taken.session.account.clone();
        let Some(account) = site.config.account(&account_name) else {
            return Err(LeaseError::UnknownAccount {
                site: site.name.to_string(),
                account: account_name.to_string(),
            });
        };
        let started = std::time::Instant::now();
        let request = LoginRequest {
            site_name: &site.name,
            site: &site.config,
            account,
            identity: taken.session.identity.as_ref(),
        };
        match login.login(&request).await {
            Ok(state) => {
                bump(&self.counters.logins_ok);
                let now = self.clock.now();
                let session = &mut taken.session;
                if session.logins == 0 {
                    session.created_at = now;
                }
                session.storage_state = state;
                session.state = SessionState::Active;
                session.reason = None;
                session.logins += 1;
                session.last_checked_at = Some(now);
                session.last_refreshed_at = Some(now);
                tracing::info!(site = %site.name, session = %session.id, account = %session.account, elapsed_ms = started.elapsed().as_millis() as u64, "session logged in");
                match self.write_record(session, taken.version).await? {
                    Some(version) => {
                        taken.version = version;
                        Ok(taken)
                    }
                    None => Err(LeaseError::Contention(site.name.to_string())),
                }
            }
            Err(source) => {
                bump(&self.counters.logins_failed);
                tracing::warn!(site = %site.name, session = %taken.session.id, account = %account.name, error = %source, "login failed");
                let reason = if source.is_transient() {
                    "login_failed_transient"
                } else {
                    "login_failed"
                };
                self.put_back(site, taken, |session| {
                    session.state = SessionState::NeedsLogin;
                    session.reason = Some(reason.to_owned());
                })
                .await?;
                Err(LeaseError::LoginFailed {
                    site: site.name.to_string(),
                    account: account.name.to_string(),
                    source,
                })
            }
        }
    }

    /// The HTTP client for a proxy identity (redirects off, no cookie store of its own).
    pub(super) fn client(&self, site: &Site, proxy: Option<&str>) -> Option<reqwest::Client> {
        let timeout = site
            .config
            .probe
            .as_ref()
            .map_or(Duration::from_secs(10), |probe| probe.timeout);
        let mut clients = site
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = proxy.map(str::to_owned);
        if let Some(client) = clients.get(&key) {
            return Some(client.clone());
        }
        match health::http_client(proxy, timeout) {
            Ok(client) => {
                clients.insert(key, client.clone());
                Some(client)
            }
            Err(error) => {
                tracing::warn!(site = %site.name, %error, "cannot build an HTTP client for probes");
                None
            }
        }
    }

    pub(super) async fn probe(&self, site: &Site, session: &Session) -> ProbeVerdict {
        let Some(client) = self.client(site, session.proxy.as_deref()) else {
            return ProbeVerdict::Unknown;
        };
        let outcome = health::probe(
            &client,
            &site.config,
            &session.storage_state,
            session.identity.as_ref(),
            self.clock.now(),
        )
        .await;
        ProbeVerdict::from_result(outcome, &self.counters)
    }
}

/// A probe's result as the pool acts on it.
pub(super) enum ProbeVerdict {
    LoggedIn(StorageState),
    LoggedOut,
    Blocked(u16),
    /// The probe could not tell (network, 5xx): the session is handed out as it is.
    Unknown,
}

impl ProbeVerdict {
    pub(super) fn from_result(result: ProbeResult, counters: &PoolCounters) -> Self {
        match result.outcome {
            ProbeOutcome::LoggedIn => {
                bump(&counters.probes_logged_in);
                ProbeVerdict::LoggedIn(result.state)
            }
            ProbeOutcome::LoggedOut { reason } => {
                bump(&counters.probes_logged_out);
                tracing::info!(%reason, "session probe: logged out");
                ProbeVerdict::LoggedOut
            }
            ProbeOutcome::Blocked { status, .. } => ProbeVerdict::Blocked(status),
            ProbeOutcome::Error(reason) => {
                tracing::warn!(%reason, "session probe failed");
                ProbeVerdict::Unknown
            }
        }
    }
}
