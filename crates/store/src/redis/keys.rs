//! The Redis key layout: every key under one prefix, one credential's keys in one cluster slot.
//!
//! ```text
//! {prefix}{cred:NAME}:state   hash: generation, sealed, expires_at, state, last_refresh_at,
//!                             failures, reason, next_attempt_at
//! {prefix}{cred:NAME}:lease   hash: fence (monotonic, survives delete), owner, expires_at
//! {prefix}index               set of stored names (for `list`; its own slot)
//! {prefix}key-check           a sealed constant proving every replica uses the same key
//! {prefix}events              pub/sub channel: "NAME GENERATION" or "NAME released"
//! ```
//!
//! The `{cred:NAME}` hash tag puts a credential's state and lease in one slot, so the scripts that
//! check the fence and write the state run atomically on Redis Cluster too.

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
        assert_eq!(keys.channel(), "authkeeper:events");
        assert!(Keys::new("").is_ok());
        for bad in ["a{b", "a}b", "with space", "é", &"x".repeat(65)] {
            assert!(Keys::new(bad).is_err(), "{bad}");
        }
    }
}
