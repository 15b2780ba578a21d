//! The proactive schedule: a background refresh when a cached token becomes due, and the
//! heartbeat that refreshes idle credentials and runs scheduled re-logins.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Keeper;
use super::entry::{Entry, Need};
use crate::clock::Timestamp;
use crate::events::Trigger;
use crate::grant::GrantKind;

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
            keeper.inner.schedule_changed.notify_one();
        });
    }

    /// Runs the proactive refresh loop until the returned handle is aborted: every credential
    /// with `heartbeat` enabled is refreshed when due, even if nobody asks for it.
    pub fn spawn_heartbeat(&self) -> tokio::task::JoinHandle<()> {
        let keeper = self.clone();
        tokio::spawn(async move { keeper.heartbeat().await })
    }

    async fn heartbeat(&self) {
        const IDLE: Duration = Duration::from_secs(60);
        loop {
            let now = self.now();
            let mut wake_at = now + IDLE;
            for entry in self.inner.entries.values() {
                if !entry.settings.heartbeat {
                    continue;
                }
                if let Some(at) = self.check_relogin(entry, now) {
                    wake_at = wake_at.min(at);
                }
                let due = match entry.current.load().as_ref() {
                    Some(current) => current.schedule.refresh_due_at,
                    None if matches!(
                        entry.settings.grant,
                        GrantKind::ClientCredentials | GrantKind::Session
                    ) =>
                    {
                        now
                    }
                    None => continue,
                };
                let not_before = entry.retry_not_before.load(Ordering::Acquire);
                if not_before == i64::MAX {
                    continue; // needs re-authentication: nothing to do until someone logs in
                }
                let due = due.max(Timestamp::from_millis(not_before));
                if due <= now {
                    self.nudge(entry, now);
                    // Re-check shortly in case the attempt fails without changing the schedule.
                    wake_at = wake_at.min(now + Duration::from_millis(250));
                } else {
                    wake_at = wake_at.min(due);
                }
            }
            tokio::select! {
                () = self.inner.clock.sleep_until(wake_at) => {}
                () = self.inner.schedule_changed.notified() => {}
            }
        }
    }
}
