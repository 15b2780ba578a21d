//! The Redis key layout: every key under one prefix, one credential's keys in one cluster slot.
//!
//! ```text
//! {prefix}{cred:NAME}:state   hash: generation, sealed, sealed_status, and plaintext copies
//!                             of expires_at, state, last_refresh_at, failures, reason,
//!                             next_attempt_at (for operators; never read back)
//! {prefix}{cred:NAME}:lease   hash: fence (monotonic, survives delete), owner, expires_at
//! {prefix}index               set of stored names (for `list`; its own slot)
//! {prefix}{r:KIND:PART}       hash: version, sealed, updated_at (record `PART` of KIND)
//! {prefix}{r:KIND:PART}/ITEM  hash: version, sealed, updated_at (record `PART/ITEM` of KIND)
//! {prefix}{r:KIND:PART}:items set of the ITEMs under PART (same slot as its records)
//! {prefix}r:KIND:parts        set of the PARTs of KIND that had records (its own slot)
//! {prefix}layout              "2": records use the layout above (see `legacy`)
//! {prefix}key-check           a sealed constant proving every replica uses the same key
//! {prefix}store-id            16 random bytes bound into every sealed value of this prefix
//! {prefix}events              pub/sub channel: "NAME GENERATION" or "NAME released"
//! ```
//!
//! The `{cred:NAME}` hash tag puts a credential's state and lease in one slot, so the scripts that
//! check the fence and write the state run atomically on Redis Cluster too. Likewise the
//! `{r:KIND:PART}` tag keeps a part's records and their index in one slot, so the record scripts
//! check the version, write the record and maintain the index atomically. Names and kinds are
//! validated (`[A-Za-z0-9._-]`, `[a-z0-9-]`), so none can forge a `:`, `/`, `{` or `}` and
//! collide with another key.

use authkeeper_core::StoreError;
use authkeeper_core::store::{RecordKey, RecordKind};

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

    /// The hash of record `key` of `kind`.
    pub(crate) fn record(&self, kind: RecordKind, key: &RecordKey) -> String {
        match key.item() {
            Some(item) => format!("{}{{r:{kind}:{}}}/{item}", self.prefix, key.part()),
            None => format!("{}{{r:{kind}:{}}}", self.prefix, key.part()),
        }
    }

    /// The set of the items under `part` (same slot as its records).
    pub(crate) fn record_items(&self, kind: RecordKind, part: &str) -> String {
        format!("{}{{r:{kind}:{part}}}:items", self.prefix)
    }

    /// The set of the parts of `kind` that had records.
    pub(crate) fn record_parts(&self, kind: RecordKind) -> String {
        format!("{}r:{kind}:parts", self.prefix)
    }

    /// The marker of the record layout.
    pub(crate) fn layout(&self) -> String {
        format!("{}layout", self.prefix)
    }

    /// The legacy (layout 1) keys of session records and checkpoints, for migration.
    pub(crate) fn legacy_session(&self, site: &str, id: &str) -> String {
        format!("{}{{sess:{site}}}:{id}", self.prefix)
    }

    /// The legacy set of a site's session ids.
    pub(crate) fn legacy_session_index(&self, site: &str) -> String {
        format!("{}{{sess:{site}}}", self.prefix)
    }

    /// The legacy set of sites with session records.
    pub(crate) fn legacy_session_sites(&self) -> String {
        format!("{}session-sites", self.prefix)
    }

    /// The SCAN pattern of legacy checkpoints, and the prefix before each task name.
    pub(crate) fn legacy_checkpoint_pattern(&self) -> (String, String) {
        let start = format!("{}{{ckpt:", self.prefix);
        (format!("{}*", glob_escape(&start)), start)
    }

    pub(crate) fn index(&self) -> String {
        format!("{}index", self.prefix)
    }

    pub(crate) fn key_check(&self) -> String {
        format!("{}key-check", self.prefix)
    }

    pub(crate) fn store_id(&self) -> String {
        format!("{}store-id", self.prefix)
    }

    pub(crate) fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }
}

/// Escapes the glob characters of a SCAN pattern.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '{' | '}') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
        let kind = RecordKind::new("session");
        let key = RecordKey::parse("shop/s1").unwrap();
        assert_eq!(keys.record(kind, &key), "authkeeper:{r:session:shop}/s1");
        assert_eq!(
            keys.record(kind, &key.parent()),
            "authkeeper:{r:session:shop}"
        );
        assert_eq!(
            keys.record_items(kind, "shop"),
            "authkeeper:{r:session:shop}:items"
        );
        assert_eq!(keys.record_parts(kind), "authkeeper:r:session:parts");
        assert_eq!(keys.legacy_checkpoint_pattern().0, "authkeeper:\\{ckpt:*");
        assert_eq!(keys.channel(), "authkeeper:events");
        assert!(Keys::new("").is_ok());
        for bad in ["a{b", "a}b", "with space", "é", &"x".repeat(65)] {
            assert!(Keys::new(bad).is_err(), "{bad}");
        }
    }
}
