//! The refresh lease on one machine: an OS lock per credential (released by the kernel when its
//! holder dies) plus a lease row with owner, expiry, a monotonic fence and the in-flight marker.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, params};

use authkeeper_core::name::CredentialName;
use authkeeper_core::{Lease, LeaseAttempt, StoreError, Timestamp};

use super::errors::{corrupt_row, sql_error, to_i64, to_u64};
use super::{Inner, PENDING_HOLDER_RETRY};

const WHAT: &str = "lease of credential";

/// A lease row.
pub(super) struct LeaseRow {
    owner: String,
    fence: i64,
    expires_at: i64,
    via_flock: bool,
    released: bool,
}

fn read_lease(tx: &Connection, name: &CredentialName) -> Result<Option<LeaseRow>, StoreError> {
    tx.query_row(
        "SELECT owner, fence, expires_at, via_flock, released FROM leases WHERE name = ?1",
        params![name.as_str()],
        |row| {
            Ok(LeaseRow {
                owner: row.get(0)?,
                fence: row.get(1)?,
                expires_at: row.get(2)?,
                via_flock: row.get::<_, i64>(3)? != 0,
                released: row.get::<_, i64>(4)? != 0,
            })
        },
    )
    .optional()
    .map_err(sql_error)
}

/// The fence of the lease row of `name`, if any (what a fenced write checks).
pub(super) fn current_fence(
    tx: &Connection,
    name: &CredentialName,
) -> Result<Option<i64>, StoreError> {
    Ok(read_lease(tx, name)?.map(|lease| lease.fence))
}

fn write_lease(
    tx: &Connection,
    name: &CredentialName,
    owner: &str,
    fence: i64,
    expires_at: Timestamp,
    via_flock: bool,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO leases (name, owner, fence, expires_at, via_flock, released) VALUES (?1, ?2, ?3, ?4, ?5, 0)
         ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, fence = excluded.fence,
             expires_at = excluded.expires_at, via_flock = excluded.via_flock, released = 0",
        params![name.as_str(), owner, fence, expires_at.as_millis(), i64::from(via_flock)],
    )
    .map_err(sql_error)?;
    Ok(())
}

/// Whether a lease row lets a caller holding (`Some`) or not holding (`None`) the OS lock take
/// the lease now; `Err(held_until)` when it must wait.
fn may_take(
    os_lock_held: bool,
    row: Option<&LeaseRow>,
    owner: &str,
    now: Timestamp,
) -> Result<(), Timestamp> {
    let active = |row: &LeaseRow| !row.released && row.expires_at > now.as_millis();
    match (os_lock_held, row) {
        // We hold the OS lock, but a live holder took over without it (its predecessor hung).
        (true, Some(row)) if active(row) && !row.via_flock && row.owner != owner => {
            Err(Timestamp::from_millis(row.expires_at))
        }
        (true, _) => Ok(()),
        // The OS lock is held and its holder's row is still valid.
        (false, Some(row)) if active(row) => Err(Timestamp::from_millis(row.expires_at)),
        // The OS lock holder hung past its TTL: take over without the OS lock.
        (false, Some(row)) if !row.released => Ok(()),
        // The OS lock holder has not written its row yet (or is releasing).
        (false, _) => Err(now + PENDING_HOLDER_RETRY),
    }
}

/// What taking a lease row found: the new fence and the row it replaced, or until when the
/// current holder keeps it.
pub(super) type Taken = Result<(i64, Option<LeaseRow>), Timestamp>;

/// Takes the lease row of `name` inside write transaction `tx` when `may_take` allows it.
pub(super) fn take_in(
    tx: &Connection,
    name: &CredentialName,
    owner: &str,
    expires_at: Timestamp,
    now: Timestamp,
    via_flock: bool,
) -> Result<Taken, StoreError> {
    let row = read_lease(tx, name)?;
    if let Err(held_until) = may_take(via_flock, row.as_ref(), owner, now) {
        return Ok(Err(held_until));
    }
    let previous_fence = row.as_ref().map_or(0, |row| row.fence);
    let fence = previous_fence
        .checked_add(1)
        .ok_or_else(|| corrupt_row(WHAT, name, "fence overflow"))?;
    write_lease(tx, name, owner, fence, expires_at, via_flock)?;
    Ok(Ok((fence, row)))
}

/// Marks the refresh of `generation` in flight under lease `fence` inside `tx`; the marker a
/// previous holder left, if any.
pub(super) fn mark_in(
    tx: &Connection,
    name: &CredentialName,
    fence: u64,
    generation: u64,
) -> Result<Option<u64>, StoreError> {
    let previous: Option<Option<i64>> = tx
        .query_row(
            "SELECT in_flight FROM leases WHERE name = ?1",
            params![name.as_str()],
            |row| row.get(0),
        )
        .optional()
        .map_err(sql_error)?;
    tx.execute(
        "UPDATE leases SET in_flight = ?3 WHERE name = ?1 AND fence = ?2 AND released = 0",
        params![name.as_str(), to_i64(fence), to_i64(generation)],
    )
    .map_err(sql_error)?;
    previous
        .flatten()
        .map(|g| to_u64(WHAT, name, "in_flight", g))
        .transpose()
}

/// Releases lease `fence` of `name` held by `owner` inside `tx` (and clears its marker).
pub(super) fn release_in(
    tx: &Connection,
    name: &CredentialName,
    owner: &str,
    fence: u64,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE leases SET released = 1, in_flight = NULL
         WHERE name = ?1 AND owner = ?2 AND fence = ?3 AND released = 0",
        params![name.as_str(), owner, to_i64(fence)],
    )
    .map_err(sql_error)?;
    Ok(())
}

/// The lease handed to the caller once its row is written.
pub(super) fn granted(
    name: &CredentialName,
    owner: &str,
    fence: i64,
    previous: Option<&LeaseRow>,
    expires_at: Timestamp,
    os_lock: Option<crate::lock::LockGuard>,
) -> Result<Lease, StoreError> {
    let took_over_abandoned = previous.is_some_and(|row| !row.released);
    if took_over_abandoned {
        tracing::warn!(
            credential = %name,
            previous_owner = previous.map(|row| row.owner.as_str()),
            via_os_lock = os_lock.is_some(),
            "took over a refresh lease its holder never released"
        );
    }
    Ok(Lease {
        name: name.clone(),
        owner: owner.to_owned(),
        fence: to_u64(WHAT, name, "fence", fence)?,
        expires_at,
        took_over_abandoned,
        guard: os_lock.map(|guard| Box::new(guard) as Box<dyn Send + Sync>),
    })
}

impl Inner {
    pub(super) fn try_acquire_lease(
        &self,
        name: &CredentialName,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<LeaseAttempt, StoreError> {
        let expires_at = now + ttl;
        let os_lock = self.locks.try_lock(name)?;
        let via_flock = os_lock.is_some();
        let taken = self.write(|tx| take_in(tx, name, owner, expires_at, now, via_flock))?;
        match taken {
            Ok((fence, previous)) => Ok(LeaseAttempt::Acquired(granted(
                name,
                owner,
                fence,
                previous.as_ref(),
                expires_at,
                os_lock,
            )?)),
            Err(held_until) => Ok(LeaseAttempt::Busy { held_until }),
        }
    }

    pub(super) fn renew_lease(
        &self,
        name: &CredentialName,
        owner: &str,
        fence: u64,
        expires_at: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let renewed = self.write(|tx| {
            tx.execute(
                "UPDATE leases SET expires_at = ?4
                 WHERE name = ?1 AND owner = ?2 AND fence = ?3 AND released = 0",
                params![name.as_str(), owner, to_i64(fence), expires_at.as_millis()],
            )
            .map_err(sql_error)
        })?;
        Ok((renewed == 1).then_some(expires_at))
    }

    pub(super) fn release_lease(&self, mut lease: Lease) -> Result<(), StoreError> {
        let guard = lease.guard.take();
        self.write(|tx| release_in(tx, &lease.name, &lease.owner, lease.fence))?;
        // Only now may the next holder take the OS lock: it must see the row released.
        drop(guard);
        Ok(())
    }

    pub(super) fn mark_in_flight(
        &self,
        name: &CredentialName,
        fence: u64,
        generation: u64,
    ) -> Result<Option<u64>, StoreError> {
        self.write(|tx| {
            // A provider is about to be asked for tokens: make sure they can be stored (a
            // process whose key was rotated away would redeem the refresh token and lose the
            // answer).
            self.sealing_keyring(tx)?;
            mark_in(tx, name, fence, generation)
        })
    }
}
