//! Identifiers, validated once where they enter (configuration, HTTP path, CLI argument).
//!
//! Every name authkeeper keys something by — a credential, a browser-session site, account or
//! session, a checkpoint's task — is 1-128 ASCII letters, digits, `.`, `_` or `-`. The rule
//! keeps names safe in file names, URLs, Redis keys and log lines, and stops a name from forging
//! a separator (`/`, `:`, `{`). Each kind of name is its own type, so a site cannot be passed
//! where a credential is expected, and stores take the types and never check again.
//!
//! ```
//! use authkeeper_core::name::CredentialName;
//!
//! let name: CredentialName = "crm".parse()?;
//! assert_eq!(name.as_str(), "crm");
//! assert!("../etc".parse::<CredentialName>().is_err());
//! # Ok::<(), authkeeper_core::name::NameError>(())
//! ```

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// Why a name was refused. Shows at most the first 64 characters of the input, escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {shown}: use 1-128 characters of letters, digits, '.', '_', '-'")]
pub struct NameError {
    what: &'static str,
    shown: String,
}

impl NameError {
    /// What kind of name was refused (`credential name`, `site name`...).
    pub fn what(&self) -> &'static str {
        self.what
    }
}

/// Whether `text` follows the naming rule.
pub fn is_valid(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_NAME_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks `text` against the naming rule, naming it `what` in the error.
pub(crate) fn check(what: &'static str, text: &str) -> Result<(), NameError> {
    if is_valid(text) {
        Ok(())
    } else {
        let shown: String = text.chars().take(64).collect();
        Err(NameError {
            what,
            shown: format!("{shown:?}"),
        })
    }
}

/// Implemented by every name type: a validated identifier, usable as a store key.
pub trait Identifier: AsRef<str> + fmt::Display + Clone + Send + Sync + 'static {
    /// What this kind of name is called in messages (`credential name`...).
    const WHAT: &'static str;

    /// The name as text.
    fn as_str(&self) -> &str {
        self.as_ref()
    }
}

macro_rules! name_type {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        ///
        /// Cheap to clone (shared text). Follows the naming rule of [`crate::name`].
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `text` as a name of this kind.
            pub fn new(text: impl AsRef<str>) -> Result<Self, NameError> {
                let text = text.as_ref();
                check($what, text)?;
                Ok($name(Arc::from(text)))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Identifier for $name {
            const WHAT: &'static str = $what;
        }

        impl FromStr for $name {
            type Err = NameError;

            fn from_str(text: &str) -> Result<Self, NameError> {
                $name::new(text)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;

            fn try_from(text: String) -> Result<Self, NameError> {
                $name::new(text)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = NameError;

            fn try_from(text: &str) -> Result<Self, NameError> {
                $name::new(text)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == &*other.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
                $name::new(&*text).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// The name of a credential (`[credentials.NAME]`, `/v1/credentials/{name}`).
    CredentialName,
    "credential name"
);
name_type!(
    /// The name of a browser-session site (`[sites.NAME]`).
    SiteName,
    "site name"
);
name_type!(
    /// The name of an account of a site (`accounts = [{ name = ... }]`).
    AccountName,
    "account name"
);
name_type!(
    /// The id of a browser session within its site (`{account}.{slot}`).
    SessionId,
    "session id"
);
name_type!(
    /// The name of a task whose checkpoint is saved (`/v1/checkpoints/{task}`).
    TaskName,
    "task name"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_rule_and_refuses_the_rest() {
        let longest = "y".repeat(128);
        for good in ["a", "A.b_c-9", longest.as_str()] {
            assert_eq!(CredentialName::new(good).expect(good).as_str(), good);
        }
        let long = "x".repeat(129);
        for bad in [
            "",
            "a/b",
            "../etc",
            "with space",
            "nul\0",
            "é",
            "a:b",
            "{x}",
            long.as_str(),
        ] {
            let error = SiteName::new(bad).expect_err(bad);
            assert_eq!(error.what(), "site name");
            assert!(
                error.to_string().starts_with("invalid site name"),
                "{error}"
            );
        }
    }

    #[test]
    fn errors_show_a_bounded_escaped_prefix() {
        let error = TaskName::new(format!("{}\n{}", "a".repeat(100), "b")).expect_err("bad");
        let text = error.to_string();
        assert!(!text.contains('\n'));
        assert!(!text.contains('b'), "{text}");
    }

    #[test]
    fn serde_validates() {
        let ok: CredentialName = serde_json::from_str("\"crm\"").expect("valid");
        assert_eq!(ok, "crm");
        assert_eq!(serde_json::to_string(&ok).expect("json"), "\"crm\"");
        let bad = serde_json::from_str::<CredentialName>("\"a b\"").expect_err("invalid");
        assert!(bad.to_string().contains("invalid credential name"), "{bad}");
    }

    #[test]
    fn lookups_by_text_work() {
        let mut map = std::collections::HashMap::new();
        map.insert(CredentialName::new("crm").expect("valid"), 1);
        assert_eq!(map.get("crm"), Some(&1));
        assert_eq!(
            format!("{:?}", CredentialName::new("crm").expect("v")),
            "\"crm\""
        );
    }
}
