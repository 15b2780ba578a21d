//! Lease ids: `{site}~{session}~{nonce}`, so heartbeat and release find the session record
//! without an index. `~` cannot appear in a site or session name.

use rand::RngCore;

/// A parsed lease id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseId<'a> {
    pub site: &'a str,
    pub session_id: &'a str,
}

/// A new lease id for `site`/`session_id` with 96 random bits.
pub(crate) fn new_lease_id(site: &str, session_id: &str) -> String {
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let hex: String = nonce.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{site}~{session_id}~{hex}")
}

/// Splits a lease id; `None` when it is not one of ours.
pub(crate) fn parse_lease_id(lease_id: &str) -> Option<LeaseId<'_>> {
    let mut parts = lease_id.split('~');
    let site = parts.next()?;
    let session_id = parts.next()?;
    let nonce = parts.next()?;
    if parts.next().is_some() || site.is_empty() || session_id.is_empty() || nonce.len() != 24 {
        return None;
    }
    Some(LeaseId { site, session_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id = new_lease_id("portal", "alice.0");
        let parsed = parse_lease_id(&id).unwrap();
        assert_eq!(parsed.site, "portal");
        assert_eq!(parsed.session_id, "alice.0");
        assert_ne!(id, new_lease_id("portal", "alice.0"));
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
        ] {
            assert!(parse_lease_id(bad).is_none(), "{bad}");
        }
    }
}
