//! A refresh's store work in two group-committed writes: [`Inner::begin_refresh`] takes the
//! lease, reads the credential and marks it in flight in one transaction;
//! [`Inner::finish_refresh`] stores the new tokens (fenced) and releases the lease in another.

use std::time::Duration;

use authkeeper_core::name::CredentialName;
use authkeeper_core::store::{RefreshStart, Unfinished};
use authkeeper_core::{Lease, Precondition, StoreError, Timestamp, TokenSet, WriteOutcome};

use super::Inner;
use super::credentials::read_row;
use super::leases::{granted, mark_in, release_in, take_in};

impl Inner {
    pub(super) fn begin_refresh(
        &self,
        name: &CredentialName,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
        mark_in_flight: bool,
    ) -> Result<RefreshStart, StoreError> {
        let expires_at = now + ttl;
        let os_lock = self.locks.try_lock(name)?;
        let via_flock = os_lock.is_some();
        let taken = self.write(|tx| {
            let (fence, previous) = match take_in(tx, name, owner, expires_at, now, via_flock)? {
                Ok(taken) => taken,
                Err(held_until) => return Ok(Err(held_until)),
            };
            let row = read_row(tx, name)?;
            let marked = match (&row, mark_in_flight) {
                (Some((generation, _, _)), true) => {
                    // The tokens a provider is about to send must be storable (see
                    // `mark_in_flight`).
                    self.sealing_keyring(tx)?;
                    let generation = u64::try_from(*generation).unwrap_or(0);
                    let fence = u64::try_from(fence).unwrap_or(0);
                    Some((generation, mark_in(tx, name, fence, generation)?))
                }
                _ => None,
            };
            Ok(Ok((fence, previous, row, marked)))
        })?;
        let (fence, previous, row, marked) = match taken {
            Ok(taken) => taken,
            Err(held_until) => return Ok(RefreshStart::Busy { held_until }),
        };
        let lease = granted(name, owner, fence, previous.as_ref(), expires_at, os_lock)?;
        // Unsealed outside the writer lock: the batch does not wait for the decryption.
        match row.map(|row| self.open_row(name, row)).transpose() {
            Ok(stored) => Ok(RefreshStart::Acquired {
                lease,
                stored,
                interrupted: marked
                    .is_some_and(|(generation, previous)| previous == Some(generation)),
            }),
            Err(error) => {
                if let Err(release) = self.release_lease(lease) {
                    tracing::debug!(credential = %name, error = %release, "could not release a refresh lease after a failed read");
                }
                Err(error)
            }
        }
    }

    // The error hands the lease back (see `Unfinished`); it is rare and moved once.
    #[allow(clippy::result_large_err)]
    pub(super) fn finish_refresh(
        &self,
        mut lease: Lease,
        generation: u64,
        tokens: &TokenSet,
        now: Timestamp,
    ) -> Result<WriteOutcome, Unfinished> {
        let precondition = Precondition::Fenced {
            generation,
            fence: lease.fence,
        };
        let written = self.write(|tx| {
            let outcome = self.put_in(tx, &lease.name, precondition, tokens, now)?;
            release_in(tx, &lease.name, &lease.owner, lease.fence)?;
            Ok(outcome)
        });
        match written {
            Ok(outcome) => {
                // Only now may the next holder take the OS lock: it must see the row released.
                drop(lease.guard.take());
                Ok(outcome)
            }
            Err(error) => Err(Unfinished { error, lease }),
        }
    }
}
