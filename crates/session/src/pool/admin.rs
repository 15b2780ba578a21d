//! Operator actions: log an account in, retire, import and export sessions, list them.

use authkeeper_core::name::{SessionId, SiteName};

use super::records::{self};
use super::*;
use crate::model::SessionState;
use crate::storage_state::StorageState;

impl SessionPool {
    /// Logs `account` in now, whatever its session's state: re-logs its free session in place,
    /// or creates one in a free slot. For operators (`authkeeper sessions login`) and warm-up.
    pub async fn login(
        &self,
        site_name: &str,
        account: &str,
        holder: &str,
    ) -> Result<SessionSummary, LeaseError> {
        let site = self.site(site_name)?;
        if site.login.is_none() {
            return Err(LeaseError::NoLogin(site.name.to_string()));
        }
        let request = LeaseRequest {
            account: Some(account.to_owned()),
            lease_ttl: None,
            holder: holder.to_owned(),
        };
        if site.config.account(account).is_none() {
            return Err(LeaseError::UnknownAccount {
                site: site.name.to_string(),
                account: account.to_owned(),
            });
        }
        let ttl = site.config.pool.lease_ttl;
        for _ in 0..MAX_ATTEMPTS {
            let now = self.clock.now();
            let sessions = records::load_site(self.store.as_ref(), &site.name).await?;
            match self.claim(site, sessions, &request, ttl, now).await? {
                Claim::Taken(mut taken) => {
                    // A forced login does not count as a use.
                    taken.session.usage_count = taken.session.usage_count.saturating_sub(1);
                    let logged_in = self.login_in_place(site, *taken).await?;
                    let mut released = logged_in.session.clone();
                    released.lease = None;
                    let summary = SessionSummary::of(&released, self.clock.now());
                    self.put_back(site, logged_in, |_| {}).await?;
                    return Ok(summary);
                }
                Claim::Lost => continue,
                Claim::Exhausted { retry_after } => {
                    return Err(LeaseError::Exhausted {
                        site: site.name.to_string(),
                        retry_after,
                    });
                }
            }
        }
        Err(LeaseError::Contention(site.name.to_string()))
    }

    /// Retires a session now (an operator's decision); a worker holding it can still release it.
    pub async fn retire(&self, site_name: &str, id: &str, reason: &str) -> Result<(), LeaseError> {
        let site = self.site(site_name)?;
        let unknown = || LeaseError::UnknownSession {
            site: site.name.to_string(),
            id: id.chars().take(128).collect(),
        };
        let id = SessionId::new(id).map_err(|_| unknown())?;
        for _ in 0..MAX_ATTEMPTS {
            let mut current = records::load_one(self.store.as_ref(), &site.name, &id)
                .await?
                .ok_or_else(unknown)?;
            if current.session.state == SessionState::Retired {
                return Ok(());
            }
            policy::retire(&mut current.session, reason);
            if self
                .write_record(&current.session, current.version)
                .await?
                .is_some()
            {
                bump(&self.counters.retired);
                tracing::info!(site = %site.name, session = %id, reason, "session retired");
                return Ok(());
            }
        }
        Err(LeaseError::Contention(site.name.to_string()))
    }

    /// Stores a storage state (from Playwright, a `cookies.txt`, another tool) as the session of
    /// `account`: replaces the state of its free session, or creates one in a free slot. Refuses
    /// a state none of whose cookies belong to the site.
    pub async fn import(
        &self,
        site_name: &str,
        account_name: &str,
        state: StorageState,
    ) -> Result<SessionSummary, LeaseError> {
        let site = self.site(site_name)?;
        let account =
            site.config
                .account(account_name)
                .ok_or_else(|| LeaseError::UnknownAccount {
                    site: site.name.to_string(),
                    account: account_name.to_owned(),
                })?;
        state
            .ensure_cookies_for(&site.config.origin)
            .map_err(|error| LeaseError::InvalidState(error.to_string()))?;
        for _ in 0..MAX_ATTEMPTS {
            let now = self.clock.now();
            let sessions = records::load_site(self.store.as_ref(), &site.name).await?;
            let mut lost = false;
            for slot in 0..site.config.pool.max_sessions_per_account.max(1) {
                let id = slot_id(&account.name, slot)?;
                let existing = sessions.iter().find(|entry| entry.session.id == id);
                let (mut session, version) = match existing {
                    Some(entry) if entry.session.is_leased(now) => continue,
                    Some(entry) if entry.session.state != SessionState::Retired => {
                        (entry.session.clone(), entry.version)
                    }
                    Some(entry) => (self.new_session(site, account, &id, now)?, entry.version),
                    None => (self.new_session(site, account, &id, now)?, 0),
                };
                session.storage_state = state.clone();
                session.state = SessionState::Active;
                session.reason = None;
                session.last_checked_at = None;
                session.logins = session.logins.max(1);
                match self.write_record(&session, version).await? {
                    Some(_) => {
                        tracing::info!(site = %site.name, session = %id, cookies = state.cookies.len(), "storage state imported");
                        return Ok(SessionSummary::of(&session, now));
                    }
                    None => lost = true,
                }
            }
            if !lost {
                return Err(LeaseError::Exhausted {
                    site: site.name.to_string(),
                    retry_after: None,
                });
            }
        }
        Err(LeaseError::Contention(site.name.to_string()))
    }

    /// The storage state of session `id`, or of the newest active session of an account when
    /// `id` names an account.
    pub async fn export(
        &self,
        site_name: &str,
        id_or_account: &str,
    ) -> Result<StorageState, LeaseError> {
        let site = self.site(site_name)?;
        let sessions = records::load_site(self.store.as_ref(), &site.name).await?;
        let by_id = sessions
            .iter()
            .find(|entry| entry.session.id == id_or_account);
        let by_account = || {
            sessions
                .iter()
                .filter(|entry| {
                    entry.session.account == id_or_account
                        && entry.session.state == SessionState::Active
                })
                .max_by_key(|entry| entry.session.created_at)
        };
        by_id
            .or_else(by_account)
            .map(|entry| entry.session.storage_state.clone())
            .ok_or_else(|| LeaseError::UnknownSession {
                site: site.name.to_string(),
                id: id_or_account.to_owned(),
            })
    }

    /// Every session of `site` (or of every configured site), metadata only.
    pub async fn list(&self, site: Option<&str>) -> Result<Vec<SessionSummary>, LeaseError> {
        let now = self.clock.now();
        let names: Vec<&SiteName> = match site {
            Some(name) => vec![&self.site(name)?.name],
            None => self.site_names().collect(),
        };
        let mut out = Vec::new();
        for name in names {
            let loaded = records::load_site(self.store.as_ref(), name).await?;
            self.count(name, &loaded, now);
            let mut sessions: Vec<SessionSummary> = loaded
                .iter()
                .map(|entry| SessionSummary::of(&entry.session, now))
                .collect();
            sessions.sort_by(|a, b| a.id.cmp(&b.id));
            out.extend(sessions);
        }
        Ok(out)
    }
}
