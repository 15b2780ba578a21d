//! "Current or wait": a token, or — when the credential needs re-authentication — a long poll
//! until someone logs in (another process, a human with `authkeeper login`, a re-login link).

use std::time::Duration;

use super::{Keeper, KeeperError, Token};
use crate::error::ErrorClass;
use crate::store::CredentialState;

/// How often a long poll re-reads the store at the least (a backend with change notifications
/// wakes it sooner).
const WAIT_POLL: Duration = Duration::from_secs(1);

impl Keeper {
    /// A token valid for `min_ttl` like [`Keeper::token`], except that a credential in
    /// `needs_reauth` gets no token even if its last access token has not expired yet: its
    /// grant is dead (often revoked with its tokens), so workers should save their progress and
    /// stop. Before answering `needs_reauth`, the store is re-read (a login by another process),
    /// and with a non-zero `wait` this blocks until a new generation is stored or `wait`
    /// passes.
    pub async fn token_or_wait(
        &self,
        name: &str,
        min_ttl: Duration,
        wait: Duration,
    ) -> Result<Token, KeeperError> {
        let entry = &self.entry(name)?;
        let first = self.current_unless_reauth(name, min_ttl).await;
        if !needs_reauth(&first) {
            return first;
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut seen = self.stored_generation(entry).await;
        loop {
            let _ = self.reload(name).await;
            let now = tokio::time::Instant::now();
            let result = self.current_unless_reauth(name, min_ttl).await;
            if !needs_reauth(&result) || now >= deadline {
                return result;
            }
            self.inner
                .store
                .wait_for_change(&entry.name, seen, WAIT_POLL.min(deadline - now))
                .await;
            seen = self.stored_generation(entry).await.max(seen);
        }
    }

    /// [`Keeper::token`], but `needs_reauth` whatever the cached token's expiry when the
    /// credential's status says so.
    async fn current_unless_reauth(
        &self,
        name: &str,
        min_ttl: Duration,
    ) -> Result<Token, KeeperError> {
        match self.status(name) {
            Some(status) if status.state == CredentialState::NeedsReauth => {
                Err(KeeperError::NeedsReauth {
                    name: name.to_owned(),
                    reason: status
                        .reason
                        .unwrap_or_else(|| CredentialState::NeedsReauth.to_string()),
                })
            }
            _ => self.token(name, min_ttl).await,
        }
    }

    /// The generation in the store now (0 when nothing is stored or the store failed).
    async fn stored_generation(&self, entry: &super::entry::Entry) -> u64 {
        self.inner
            .store
            .load(&entry.name)
            .await
            .ok()
            .flatten()
            .map_or(0, |record| record.generation)
    }
}

fn needs_reauth(result: &Result<Token, KeeperError>) -> bool {
    matches!(result, Err(error) if error.class() == ErrorClass::NeedsReauth)
}
