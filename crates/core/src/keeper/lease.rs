//! The refresh lease around a refresh: its TTL, the in-flight marker, and a release that
//! survives a brief store outage.

use std::time::Duration;

use super::Keeper;
use super::entry::Entry;
use crate::store::Lease;

impl Keeper {
    /// Releases a refresh lease. When the store is unavailable (e.g. Redis restarting), keeps
    /// retrying in the background until the lease would have expired anyway, so the other
    /// replicas do not wait out a whole lease TTL after a brief outage.
    pub(super) async fn release_lease(&self, lease: Lease) {
        let retry = lease.detached();
        let Err(error) = self.inner.store.release_lease(lease).await else {
            return;
        };
        tracing::warn!(credential = %retry.name, error = %error, "could not release the refresh lease; retrying until it expires");
        let keeper = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(50);
            while keeper.now() < retry.expires_at {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
                if keeper
                    .inner
                    .store
                    .release_lease(retry.detached())
                    .await
                    .is_ok()
                {
                    tracing::info!(credential = %retry.name, "released the refresh lease after the store came back");
                    return;
                }
            }
        });
    }

    /// The lease TTL used for `entry` (see [`super::KeeperSettings::lease_ttl_floor`]).
    pub(super) fn effective_lease_ttl(&self, entry: &Entry) -> Duration {
        let configured = self.inner.settings.lease_ttl;
        if self.inner.settings.lease_ttl_floor {
            configured.max(entry.settings.client.timeout * 2 + Duration::from_secs(5))
        } else {
            configured
        }
    }
}
