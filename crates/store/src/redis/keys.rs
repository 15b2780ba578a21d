//! The Redis key layout: every key under one prefix, one credential's keys in one cluster slot.
//!
//! ```text
//! {prefix}{cred:NAME}:state   hash: generation, sealed, expires_at, state, last_refresh_at,
//!                             failures, reason, next_attempt_at
//! {prefix}{cred:NAME}:lease   hash: fence (monotonic, survives delete), owner, expires_at
//! {prefix}index               set of stored names (for `list`; its own slot)
//! {prefix}{ckpt:TASK}         hash: version, sealed, updated_at (a task checkpoint)
//! {prefix}{sess:SITE}:ID      hash: version, sealed (a browser session record)
//! {prefix}{sess:SITE}         set of the ids of SITE's session records
//! {prefix}session-sites       set of sites that had session records (its own slot)
//! {prefix}key-check           a sealed constant proving every replica uses the same key
//! {prefix}events              pub/sub channel: "NAME GENERATION" or "NAME released"
//! ```
//!
//! The `{cred:NAME}` hash tag puts a credential's state and lease in one slot, so the scripts that
//! check the fence and write the state run atomically on Redis Cluster too. Likewise the
//! `{sess:SITE}` tag keeps a site's records and their index in one slot, so the session scripts
//! check the version, write the record and maintain the index atomically. Names are validated
//! (`[A-Za-z0-9._-]`), so no name can forge a `:`, `{` or `}` and collide with another key.

use authkeeper_core::StoreError;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "authkeeper:";

/// Builds the keys of one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// Checks `prefix`: at most 64 printable ASCII characters without braces or whitespace
    /// (braces would change the cluster hash tag).
    pub(crate) fn new(prefix: &str) -> Result<Self, StoreError> {
        let ok = prefix.len() <= 64
            && prefix
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
        if !ok {
            return Err(StoreError::Other {
                message: format!(
                    "invalid Redis key prefix {:?}: use at most 64 printable ASCII characters without braces or spaces",
                    prefix.chars().take(64).collect::<String>()
                ),
                source: None,
            });
        }
        Ok(Keys {
            prefix: prefix.to_owned(),
        })
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn state(&self, name: &str) -> String {
        format!("{}{{cred:{name}}}:state", self.prefix)
    }

    pub(crate) fn lease(&self, name: &str) -> String {
        format!("{}{{cred:{name}}}:lease", self.prefix)
    }

    pub(crate) fn checkpoint(&self, task: &str) -> String {
        format!("{}{{ckpt:{task}}}", self.prefix)
    }

    /// The hash of session record `site`/`id`.
    pub(crate) fn session(&self, site: &str, id: &str) -> String {
        format!("{}{{sess:{site}}}:{id}", self.prefix)
    }

    /// The set of the ids of `site`'s session records (same slot as the records).
    pub(crate) fn session_index(&self, site: &str) -> String {
        format!("{}{{sess:{site}}}", self.prefix)
    }

    /// The set of sites that had session records.
    pub(crate) fn session_sites(&self) -> String {
        format!("{}session-sites", self.prefix)
    }

    pub(crate) fn index(&self) -> String {
        format!("{}index", self.prefix)
    }

    pub(crate) fn key_check(&self) -> String {
        format!("{}key-check", self.prefix)
    }

    pub(crate) fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_prefix_checks() {
        let keys = Keys::new(DEFAULT_PREFIX).unwrap();
        assert_eq!(keys.state("crm"), "authkeeper:{cred:crm}:state");
        assert_eq!(keys.lease("crm"), "authkeeper:{cred:crm}:lease");
        assert_eq!(keys.index(), "authkeeper:index");
        assert_eq!(keys.session("shop", "s1"), "authkeeper:{sess:shop}:s1");
        assert_eq!(keys.session_index("shop"), "authkeeper:{sess:shop}");
        assert_eq!(keys.session_sites(), "authkeeper:session-sites");
        assert_eq!(keys.channel(), "authkeeper:events");
        assert!(Keys::new("").is_ok());
        for bad in ["a{b", "a}b", "with space", "é", &"x".repeat(65)] {
            assert!(Keys::new(bad).is_err(), "{bad}");
        }
    }
}
