//! The proactive schedule: a background refresh when a cached token becomes due, and the
//! heartbeat that refreshes idle credentials and runs scheduled re-logins, woken by the due-time
//! queue ([`super::due_queue`]) only for the credentials that need it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Keeper;
use super::entry::{Entry, Need};
use super::reauth_hook::ReloginCheck;
use crate::clock::Timestamp;
use crate::events::Trigger;
use crate::grant::GrantKind;

/// How soon a credential whose refresh was started is looked at again, in case the attempt
/// fails without changing its schedule.
const RECHECK: Duration = Duration::from_millis(250);

/// The longest the heartbeat sleeps without looking at the queue.
const IDLE: Duration = Duration::from_secs(60);

impl Keeper {
    /// Starts a proactive refresh in the background unless one is pending or backoff forbids it.
    pub(super) fn nudge(&self, entry: &Arc<Entry>, now: Timestamp) {
        if now.as_millis() < entry.retry_not_before.load(Ordering::Acquire)
            || self.inner.shutting_down.load(Ordering::Acquire)
        {
            return;
        }
        if entry.proactive_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            entry.proactive_pending.store(false, Ordering::Release);
            return;
        };
        let keeper = self.clone();
        let entry = Arc::clone(entry);
        runtime.spawn(async move {
            let _ = keeper
                .refresh(&entry, Need::NotDue, Trigger::Proactive)
                .await;
            entry.proactive_pending.store(false, Ordering::Release);
        });
    }

    /// Has the heartbeat look at `entry` again now (after a new generation or schedule): its
    /// check queues the next refresh and re-login times. Nothing happens while no heartbeat
    /// runs.
    pub(super) fn reschedule(&self, entry: &Arc<Entry>) {
        if !entry.settings.heartbeat || !self.inner.heartbeat_running.load(Ordering::Acquire) {
            return;
        }
        if self.inner.due.schedule(entry, self.now()) {
            self.inner.schedule_changed.notify_one();
        }
    }

    /// When the heartbeat must next look at `entry`: its refresh due time (not before its
    /// backoff allows); `None` when there is nothing to do until something else happens (not
    /// loaded yet, or waiting for a login).
    fn next_due(&self, entry: &Entry) -> Option<Timestamp> {
        let not_before = entry.retry_not_before.load(Ordering::Acquire);
        if not_before == i64::MAX {
            return None; // needs re-authentication: a login installs a new generation
        }
        let due = match entry.current.load().as_ref() {
            Some(current) => current.schedule.refresh_due_at,
            None if matches!(
                entry.settings.grant,
                GrantKind::ClientCredentials | GrantKind::Session
            ) =>
            {
                self.now()
            }
            None => return None,
        };
        Some(due.max(Timestamp::from_millis(not_before)))
    }

    /// Runs the proactive refresh loop until the returned handle is aborted: every credential
    /// with `heartbeat` enabled is refreshed when due, even if nobody asks for it.
    pub fn spawn_heartbeat(&self) -> tokio::task::JoinHandle<()> {
        self.inner.heartbeat_running.store(true, Ordering::Release);
        let now = self.now();
        for entry in self.all_entries() {
            if entry.settings.heartbeat {
                // Everything is looked at once; each then queues itself at its due time.
                self.inner.due.schedule(&entry, now);
            }
        }
        let keeper = self.clone();
        tokio::spawn(async move { keeper.heartbeat().await })
    }

    async fn heartbeat(&self) {
        let mut due = Vec::new();
        loop {
            let now = self.now();
            let next = self.inner.due.take_due(now, &mut due);
            if !due.is_empty() {
                for entry in due.drain(..) {
                    self.check(&entry, now);
                }
                continue; // they queued their next checks: look at the queue again
            }
            let wake_at = next.map_or(now + IDLE, |at| at.min(now + IDLE));
            tokio::select! {
                () = self.inner.clock.sleep_until(wake_at) => {}
                () = self.inner.schedule_changed.notified() => {}
            }
        }
    }

    /// One due credential: runs its re-login check, starts its refresh if due, and queues its
    /// next check.
    fn check(&self, entry: &Arc<Entry>, now: Timestamp) {
        if entry.removed.load(Ordering::Acquire) {
            return; // removed at runtime: dropped from the queue
        }
        let relogin_at = match self.check_relogin(entry, now) {
            ReloginCheck::At(at) => Some(at),
            // Needs re-authentication now: refreshing would only revive it.
            ReloginCheck::Expired => return,
            ReloginCheck::Nothing => None,
        };
        let refresh_at = match self.next_due(entry) {
            Some(due) if due <= now => {
                self.nudge(entry, now);
                Some(now + RECHECK)
            }
            other => other,
        };
        let next = match (relogin_at, refresh_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = next {
            self.inner.due.schedule(entry, at);
        }
    }
}
