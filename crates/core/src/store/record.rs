//! The sealed record store: kind + key → sealed bytes, versioned, written with compare-and-put.
//!
//! Everything that is not a credential's token set is a record: task checkpoints, browser
//! sessions, and whatever comes next. A record is an opaque document (usually JSON) that the
//! store seals at rest, bound to its kind and key by the associated data, so a value moved to
//! another record fails to open. Every write names the version it expects ([`Expect`]), which is
//! what makes a read-modify-write (a session lease) exclusive across processes and replicas.
//!
//! Keys have one or two segments: `part` or `part/item`, each a validated name. Records whose
//! keys share a `part` can be listed together ([`RecordStore::list_children`]) — a site's sessions — and
//! backends keep them together (one Redis Cluster slot).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use super::error::StoreError;
use crate::clock::Timestamp;
use crate::name::{Identifier, NameError, check};

/// A kind of record (`checkpoint`, `session`...). Part of the sealed value's associated data and
/// of its key in the backends: 1-32 lowercase ASCII letters, digits or `-`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKind(&'static str);

impl RecordKind {
    /// A record kind. Panics at compile time (in a `const`) on a name outside the rule.
    pub const fn new(name: &'static str) -> RecordKind {
        let bytes = name.as_bytes();
        assert!(
            !bytes.is_empty() && bytes.len() <= 32,
            "a record kind has 1-32 characters"
        );
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            assert!(
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-',
                "a record kind is lowercase letters, digits and '-'"
            );
            i += 1;
        }
        RecordKind(name)
    }

    /// The kind's name.
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

/// The key of a record: `part` or `part/item`, each segment a validated name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    part: Arc<str>,
    item: Option<Arc<str>>,
}

impl RecordKey {
    /// A one-segment key.
    pub fn new(part: &impl Identifier) -> RecordKey {
        RecordKey {
            part: Arc::from(part.as_str()),
            item: None,
        }
    }

    /// A two-segment key: `item` within `part`.
    pub fn with_item(part: &impl Identifier, item: &impl Identifier) -> RecordKey {
        RecordKey {
            part: Arc::from(part.as_str()),
            item: Some(Arc::from(item.as_str())),
        }
    }

    /// Reads a key written by [`fmt::Display`] (`part` or `part/item`), as a backend does with
    /// the keys it lists.
    pub fn parse(text: &str) -> Result<RecordKey, NameError> {
        let (part, item) = match text.split_once('/') {
            Some((part, item)) => (part, Some(item)),
            None => (text, None),
        };
        check("record key", part)?;
        if let Some(item) = item {
            check("record key", item)?;
        }
        Ok(RecordKey {
            part: Arc::from(part),
            item: item.map(Arc::from),
        })
    }

    /// The first segment.
    pub fn part(&self) -> &str {
        &self.part
    }

    /// The second segment, if any.
    pub fn item(&self) -> Option<&str> {
        self.item.as_deref()
    }

    /// The one-segment key of this key's part.
    pub fn parent(&self) -> RecordKey {
        RecordKey {
            part: Arc::clone(&self.part),
            item: None,
        }
    }

    /// Builds a key from two segments a backend read back, checking them.
    pub fn from_segments(part: &str, item: Option<&str>) -> Result<RecordKey, NameError> {
        check("record key", part)?;
        if let Some(item) = item {
            check("record key", item)?;
        }
        Ok(RecordKey {
            part: Arc::from(part),
            item: item.map(Arc::from),
        })
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.item {
            Some(item) => write!(f, "{}/{item}", self.part),
            None => f.write_str(&self.part),
        }
    }
}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// A record as read: its key, version, last write time and unsealed document.
#[derive(Clone)]
pub struct Record {
    /// The key.
    pub key: RecordKey,
    /// Bumped by every write; starts at 1.
    pub version: u64,
    /// When it was last written (epoch 0 for records written before this was kept).
    pub updated_at: Timestamp,
    /// The document. Zeroized when dropped; never shown by `Debug`.
    pub data: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("key", &self.key)
            .field("version", &self.version)
            .field("updated_at", &self.updated_at)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// What a record write or delete expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Whatever is there, or nothing.
    Any,
    /// Nothing: the record must not exist yet.
    Absent,
    /// The record at exactly this version.
    Version(u64),
}

impl Expect {
    /// Whether a record currently at `version` (0: absent) satisfies this expectation.
    pub fn matches(self, version: u64) -> bool {
        match self {
            Expect::Any => true,
            Expect::Absent => version == 0,
            Expect::Version(expected) => version == expected && expected > 0,
        }
    }
}

/// Sealed, versioned records shared by every process and replica.
///
/// Implementations are safe for concurrent use and seal every document at rest with associated
/// data binding it to its kind and key.
#[async_trait]
pub trait RecordStore: Send + Sync + fmt::Debug + 'static {
    /// Loads one record, or `None`. A sealed value moved to another record fails with
    /// [`StoreError::Decrypt`] instead of opening.
    async fn get(&self, kind: RecordKind, key: &RecordKey) -> Result<Option<Record>, StoreError>;

    /// Writes `data` as the next version of the record if `expect` holds, and returns the new
    /// version, or `None` when it did not hold (the caller lost a race and should re-read). The
    /// write is durable when this returns, and atomic with the check across every process and
    /// replica: of concurrent writers over the same version, exactly one gets `Some`. A refused
    /// write changes nothing. A record created after a delete starts again at version 1.
    async fn compare_and_put(
        &self,
        kind: RecordKind,
        key: &RecordKey,
        expect: Expect,
        data: &[u8],
        now: Timestamp,
    ) -> Result<Option<u64>, StoreError>;

    /// Deletes the record if `expect` holds; returns whether a record was deleted.
    async fn remove(
        &self,
        kind: RecordKind,
        key: &RecordKey,
        expect: Expect,
    ) -> Result<bool, StoreError>;

    /// Every record whose key is `parent/ITEM` (unsealed), in no particular order. Fails with
    /// [`StoreError::Decrypt`] when any of them cannot be unsealed, rather than hiding it.
    async fn list_children(
        &self,
        kind: RecordKind,
        parent: &RecordKey,
    ) -> Result<Vec<Record>, StoreError>;

    /// One page of the records of `kind` (unsealed) whose keys sort after `after` (from the
    /// first when `None`), in key order, at most
    /// `limit` of them. Keys sort as [`RecordKey`]'s `Ord`: by part, then item, a one-segment
    /// key before the items of its part. An empty page means the end. Fails with
    /// [`StoreError::Decrypt`] when one of them cannot be unsealed.
    async fn list_kind(
        &self,
        kind: RecordKind,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError>;

    /// The distinct first segments of the keys of `kind` that have records, sorted, as
    /// one-segment keys. Unseals nothing.
    async fn parts(&self, kind: RecordKind) -> Result<Vec<RecordKey>, StoreError>;
}

/// Encodes `value` as a JSON document for a record. The buffer is zeroized when dropped.
pub fn encode_json<T: Serialize>(
    kind: RecordKind,
    key: &RecordKey,
    value: &T,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    serde_json::to_vec(value)
        .map(Zeroizing::new)
        .map_err(|error| {
            // Serializing our own types fails only on non-string map keys; never quote data.
            StoreError::other(format!(
                "cannot encode {kind} `{key}` (line {}, column {})",
                error.line(),
                error.column()
            ))
        })
}

/// Decodes a record's JSON document. The error names the position only: serde_json's messages
/// can quote the input, which may hold secrets.
pub fn decode_json<T: DeserializeOwned>(
    kind: RecordKind,
    record: &Record,
) -> Result<T, StoreError> {
    serde_json::from_slice(&record.data).map_err(|error| {
        StoreError::Corrupt(format!(
            "{kind} record `{}` does not decode (line {}, column {})",
            record.key,
            error.line(),
            error.column()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::{SessionId, SiteName};

    #[test]
    fn keys_print_and_parse() {
        let site = SiteName::new("shop").expect("valid");
        let id = SessionId::new("alice.0").expect("valid");
        let key = RecordKey::with_item(&site, &id);
        assert_eq!(key.to_string(), "shop/alice.0");
        assert_eq!(RecordKey::parse("shop/alice.0").expect("parse"), key);
        assert_eq!(key.parent(), RecordKey::new(&site));
        assert_eq!(key.parent().to_string(), "shop");
        for bad in ["", "a/b/c", "a/", "/b", "a b", "a:b"] {
            assert!(RecordKey::parse(bad).is_err(), "{bad:?}");
            let (part, item) = bad
                .split_once('/')
                .map_or((bad, None), |(p, i)| (p, Some(i)));
            assert!(RecordKey::from_segments(part, item).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn expectations() {
        assert!(Expect::Any.matches(0) && Expect::Any.matches(3));
        assert!(Expect::Absent.matches(0) && !Expect::Absent.matches(1));
        assert!(Expect::Version(2).matches(2) && !Expect::Version(2).matches(1));
        assert!(!Expect::Version(0).matches(0), "version 0 is not a version");
    }

    #[test]
    fn debug_hides_the_document() {
        let record = Record {
            key: RecordKey::parse("job").expect("key"),
            version: 1,
            updated_at: Timestamp::from_millis(0),
            data: Zeroizing::new(b"{\"secret\":\"s3cr3t\"}".to_vec()),
        };
        assert!(!format!("{record:?}").contains("s3cr3t"));
    }
}
