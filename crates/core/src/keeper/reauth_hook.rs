//! The Keeper's side of automatic re-authentication (see [`crate::reauth`]): the one place a
//! `needs_reauth` failure reaches the [`Reauthenticator`], and the heartbeat's scheduled
//! re-login ahead of a session's absolute expiry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Entry, Keeper};
use crate::clock::Timestamp;
use crate::events::Event;
use crate::name::CredentialName;
use crate::reauth::{ReauthRequest, ReauthTrigger, Reauthenticator};
use crate::store::CredentialState;

/// What the heartbeat already did for a credential, by generation.
#[derive(Debug, Default, Clone, Copy)]
struct Done {
    /// The generation whose scheduled re-login was started.
    relogin: u64,
    /// The generation whose session was recorded as expired.
    expired: u64,
}

/// The installed reauthenticator and the heartbeat's bookkeeping.
pub(super) struct ReauthHook {
    reauthenticator: Arc<dyn Reauthenticator>,
    done: Mutex<HashMap<CredentialName, Done>>,
}

impl ReauthHook {
    pub(super) fn new(reauthenticator: Arc<dyn Reauthenticator>) -> Self {
        ReauthHook {
            reauthenticator,
            done: Mutex::new(HashMap::new()),
        }
    }
}

/// The session reached its absolute expiry.
struct Expired;

/// What [`Keeper::check_relogin`] found.
pub(super) enum ReloginCheck {
    /// Look again at this time.
    At(Timestamp),
    /// The session reached its absolute expiry: it needs re-authentication, no refresh.
    Expired,
    /// Nothing to do for the session.
    Nothing,
}

impl Keeper {
    /// Reports an event to the Keeper's sinks (reauthenticators report their runs with it).
    pub fn emit_event(&self, event: Event<'_>) {
        self.emit(event);
    }

    /// A refresh of `generation` failed with a `needs_reauth` class: hand it to the
    /// reauthenticator (which must not block).
    pub(super) fn reauth_after_failure(&self, entry: &Entry, generation: u64, reason: &str) {
        let Some(hook) = &self.inner.reauth else {
            return;
        };
        hook.reauthenticator.start(
            self,
            ReauthRequest {
                name: entry.name.clone(),
                generation,
                reason: reason.to_owned(),
                trigger: ReauthTrigger::RefreshFailed,
            },
        );
    }

    /// The heartbeat's check of `entry`'s session: starts the scheduled re-login when due,
    /// records the session as needing re-authentication once its absolute expiry passed, and
    /// says when to look again.
    pub(super) fn check_relogin(&self, entry: &Arc<Entry>, now: Timestamp) -> ReloginCheck {
        match self.relogin_step(entry, now) {
            Some(Ok(at)) => ReloginCheck::At(at),
            Some(Err(Expired)) => ReloginCheck::Expired,
            None => ReloginCheck::Nothing,
        }
    }

    fn relogin_step(
        &self,
        entry: &Arc<Entry>,
        now: Timestamp,
    ) -> Option<Result<Timestamp, Expired>> {
        let hook = self.inner.reauth.as_ref()?;
        let current = entry.current.load_full()?;
        if entry.status().state == CredentialState::NeedsReauth {
            return None;
        }
        let schedule = hook
            .reauthenticator
            .schedule(&entry.name, &current.tokens, now)?;
        let generation = current.generation;
        let expires_at = schedule.session_expires_at;
        let mut done = hook.done.lock().unwrap_or_else(|p| p.into_inner());
        let done = done.entry(entry.name.clone()).or_default();
        if now >= expires_at {
            if done.expired < generation {
                done.expired = generation;
                self.expire_session(entry, generation, expires_at);
            }
            return Some(Err(Expired));
        }
        if done.relogin >= generation {
            return Some(Ok(expires_at));
        }
        if schedule.relogin_at > now {
            return Some(Ok(schedule.relogin_at));
        }
        done.relogin = generation;
        let name = &entry.name;
        self.emit(Event::ReloginDue {
            name,
            expires_at,
            automatic: schedule.automatic,
        });
        hook.reauthenticator.start(
            self,
            ReauthRequest {
                name: name.clone(),
                generation,
                reason: format!("the session expires at {}", expires_at.to_rfc3339()),
                trigger: ReauthTrigger::SessionExpiring { expires_at },
            },
        );
        Some(Ok(expires_at))
    }

    /// Records that the session of `generation` reached its absolute lifetime: refreshing it
    /// any further is pointless, a login method (or a human) must act.
    fn expire_session(&self, entry: &Arc<Entry>, generation: u64, expires_at: Timestamp) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let keeper = self.clone();
        let entry = Arc::clone(entry);
        runtime.spawn(async move {
            let name = &entry.name;
            let reason = format!(
                "needs_reauth: the session reached its absolute lifetime at {}",
                expires_at.to_rfc3339()
            );
            let mut status = entry.status();
            status.state = CredentialState::NeedsReauth;
            status.reason = Some(reason.clone());
            status.next_attempt_at = None;
            match keeper
                .inner
                .store
                .set_status(name, generation, &status)
                .await
            {
                Ok(true) => entry.set_status(status),
                // A newer generation was stored meanwhile (a re-login): nothing expired.
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(credential = %name, error = %error, "could not store the credential status");
                    entry.set_status(status);
                }
            }
            keeper.emit(Event::NeedsReauth {
                name,
                reason: &reason,
            });
            keeper.reauth_after_failure(&entry, generation, &reason);
        });
    }
}
