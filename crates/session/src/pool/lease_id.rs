//! Lease ids: `{site}~{session}~{nonce}`, so heartbeat and release find the session record
//! without an index. `~` cannot appear in a site or session name.

use authkeeper_core::name::{SessionId, SiteName};
use rand::RngCore;

/// A parsed lease id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseId {
    pub site: SiteName,
    pub session_id: SessionId,
}

/// A new lease id for `site`/`session_id` with 96 random bits.
pub(crate) fn new_lease_id(site: &SiteName, session_id: &SessionId) -> String {
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let hex: String = nonce.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{site}~{session_id}~{hex}")
}

/// Splits a lease id (names checked); `None` when it is not one of ours.
pub(crate) fn parse_lease_id(lease_id: &str) -> Option<LeaseId> {
    let mut parts = lease_id.split('~');
    let site = SiteName::new(parts.next()?).ok()?;
    let session_id = SessionId::new(parts.next()?).ok()?;
    let nonce = parts.next()?;
    if parts.next().is_some() || nonce.len() != 24 {
        return None;
    }
    Some(LeaseId { site, session_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let site = SiteName::new("portal").unwrap();
        let session = SessionId::new("alice.0").unwrap();
        let id = new_lease_id(&site, &session);
        let parsed = parse_lease_id(&id).unwrap();
        assert_eq!(parsed.site, "portal");
        assert_eq!(parsed.session_id, "alice.0");
        assert_ne!(id, new_lease_id(&site, &session));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "a",
            "a~b",
            "a~b~short",
            "~b~0123456789abcdef01234567",
            "a~b~c~d",
            "a/b~c~0123456789abcdef01234567",
        ] {
            assert!(parse_lease_id(bad).is_none(), "{bad}");
        }
    }
}
