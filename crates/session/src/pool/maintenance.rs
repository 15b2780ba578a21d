//! The janitor: reclaims expired leases, retires sessions past their age, probes idle sessions
//! on their schedule (re-logging in the logged-out ones before anyone leases them) and runs the
//! cookie refresh that extends a session without a login.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::records::{self, Versioned};
use super::{ProbeVerdict, SessionPool, Site, bump, policy};
use crate::health;
use crate::model::{Session, SessionState};

/// Who holds a session while the janitor works on it.
const JANITOR: &str = "authkeeper-janitor";

/// What one maintenance pass did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Expired leases cleared.
    pub reclaimed: usize,
    /// Sessions retired (age, limits).
    pub retired: usize,
    /// Sessions probed.
    pub probed: usize,
    /// Sessions a probe found logged out (and re-logged in when the site has a login).
    pub logged_out: usize,
    /// Logins run.
    pub relogged: usize,
    /// Cookie refreshes that extended a session.
    pub refreshed: usize,
    /// Steps that failed (logged).
    pub failures: usize,
}

impl SessionPool {
    /// One maintenance pass over every site. Safe to run in several replicas at once: every
    /// change is a versioned write, and probes and logins run under a lease.
    pub async fn run_maintenance(&self) -> MaintenanceReport {
        let mut report = MaintenanceReport::default();
        for site in self.sites.values() {
            if let Err(error) = self.maintain_site(site, &mut report).await {
                report.failures += 1;
                tracing::warn!(site = %site.name, %error, "session maintenance failed");
            }
        }
        report
    }

    /// Runs [`SessionPool::run_maintenance`] every `every` until the task is aborted.
    pub fn spawn_maintenance(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_millis(100)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let report = self.run_maintenance().await;
                if report != MaintenanceReport::default() {
                    tracing::debug!(?report, "session maintenance");
                }
            }
        })
    }

    async fn maintain_site(
        &self,
        site: &Site,
        report: &mut MaintenanceReport,
    ) -> Result<(), super::LeaseError> {
        let sessions = records::load_site(self.store.as_ref(), &site.name).await?;
        self.count(&site.name, &sessions, self.clock.now());
        for entry in sessions {
            let now = self.clock.now();
            let session = &entry.session;
            if let Some(lease) = &session.lease
                && lease.expires_at <= now
            {
                let mut cleared = session.clone();
                cleared.lease = None;
                if self.write_record(&cleared, entry.version).await?.is_some() {
                    report.reclaimed += 1;
                    bump(&self.counters.reclaimed);
                    tracing::info!(site = %site.name, session = %session.id, holder = %lease.holder, "expired session lease reclaimed");
                }
                continue;
            }
            if session.is_leased(now) || session.state == SessionState::Retired {
                continue;
            }
            if let Some(reason) = policy::expired(session, &site.config.pool, now) {
                let mut retired = session.clone();
                policy::retire(&mut retired, reason);
                if self.write_record(&retired, entry.version).await?.is_some() {
                    report.retired += 1;
                    bump(&self.counters.retired);
                }
                continue;
            }
            let probe_due = site.config.probe.as_ref().is_some_and(|probe| {
                session.state == SessionState::NeedsLogin
                    || session
                        .last_checked_at
                        .is_none_or(|checked| now.saturating_since(checked) >= probe.interval)
            });
            let refresh_due = site.config.refresh.as_ref().is_some_and(|refresh| {
                session.state == SessionState::Active
                    && session
                        .last_refreshed_at
                        .unwrap_or(session.created_at)
                        .le(&(now - refresh.interval))
            });
            let login_due = session.state == SessionState::NeedsLogin && site.login.is_some();
            if probe_due || refresh_due || login_due {
                self.service(site, entry, refresh_due, report).await?;
            }
        }
        Ok(())
    }

    /// Probes, refreshes or logs in one idle session under a janitor lease.
    async fn service(
        &self,
        site: &Site,
        entry: Versioned,
        refresh_due: bool,
        report: &mut MaintenanceReport,
    ) -> Result<(), super::LeaseError> {
        let now = self.clock.now();
        let mut held = entry.session.clone();
        held.lease = Some(self.new_lease(
            site,
            &held,
            JANITOR,
            now + self.preparation_allowance(site),
            self.preparation_allowance(site),
        ));
        let Some(version) = self.write_record(&held, entry.version).await? else {
            return Ok(()); // someone leased it meanwhile
        };
        let mut taken = Versioned {
            session: held,
            version,
        };

        if taken.session.state == SessionState::Active && refresh_due {
            match self.cookie_refresh(site, &taken.session).await {
                Some(state) => {
                    taken.session.storage_state = state;
                    taken.session.last_refreshed_at = Some(self.clock.now());
                    report.refreshed += 1;
                    bump(&self.counters.cookie_refreshes);
                }
                None => report.failures += 1,
            }
        }
        let mut needs_login = taken.session.state == SessionState::NeedsLogin;
        if !needs_login && site.config.probe.is_some() {
            report.probed += 1;
            match self.probe(site, &taken.session).await {
                ProbeVerdict::LoggedIn(state) => {
                    taken.session.storage_state = state;
                    taken.session.last_checked_at = Some(self.clock.now());
                }
                ProbeVerdict::LoggedOut => {
                    report.logged_out += 1;
                    needs_login = true;
                }
                ProbeVerdict::Blocked(_) | ProbeVerdict::Unknown => report.failures += 1,
            }
        }
        if needs_login {
            if site.login.is_some() {
                report.relogged += 1;
                // Stores the new state and keeps the janitor lease; cleared below.
                match self.login_in_place(site, taken).await {
                    Ok(logged_in) => taken = logged_in,
                    Err(_) => {
                        report.failures += 1;
                        return Ok(()); // login_in_place put it back needing a login
                    }
                }
            } else {
                taken.session.state = SessionState::NeedsLogin;
                taken.session.reason = Some("logged_out".to_owned());
            }
        }
        self.put_back(site, taken, |_| {}).await
    }

    async fn cookie_refresh(
        &self,
        site: &Site,
        session: &Session,
    ) -> Option<crate::storage_state::StorageState> {
        let client = self.client(site, session.proxy.as_deref())?;
        match health::cookie_refresh(
            &client,
            &site.config,
            &session.storage_state,
            session.identity.as_ref(),
            self.clock.now(),
        )
        .await
        {
            Ok(state) => Some(state),
            Err(error) => {
                tracing::warn!(site = %site.name, session = %session.id, %error, "cookie refresh failed");
                None
            }
        }
    }
}
