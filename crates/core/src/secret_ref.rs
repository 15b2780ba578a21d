//! Secret references in configuration: `env:NAME`, `file:PATH`, or (discouraged) a literal.

use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

/// Where a secret value comes from. Parsing never reads the secret; [`SecretRef::resolve`] does.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// The value of an environment variable.
    Env(String),
    /// The contents of a file (trailing newline removed).
    File(PathBuf),
    /// A value written inline in the configuration (fine for tests, not for production).
    Literal(String),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
            SecretRef::Literal(_) => f.write_str("[inline secret]"),
        }
    }
}

/// Why a secret could not be resolved. Never contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretRefError {
    /// The environment variable is not set or not Unicode.
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    /// The file could not be read.
    #[error("cannot read secret file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The value is empty.
    #[error("the secret from {0} is empty")]
    Empty(String),
}

impl SecretRef {
    /// Parses `env:NAME`, `file:PATH` or a literal.
    pub fn parse(text: &str) -> SecretRef {
        if let Some(name) = text.strip_prefix("env:") {
            SecretRef::Env(name.to_owned())
        } else if let Some(path) = text.strip_prefix("file:") {
            SecretRef::File(PathBuf::from(path))
        } else {
            SecretRef::Literal(text.to_owned())
        }
    }

    /// Reads the secret.
    pub fn resolve(&self) -> Result<SecretString, SecretRefError> {
        let value = match self {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| SecretRefError::MissingEnv(name.clone()))?
            }
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map_err(|source| SecretRefError::File {
                    path: path.clone(),
                    source,
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            SecretRef::Literal(value) => value.clone(),
        };
        if value.is_empty() {
            return Err(SecretRefError::Empty(format!("{self:?}")));
        }
        Ok(SecretString::from(value))
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = zeroize::Zeroizing::new(String::deserialize(deserializer)?);
        Ok(SecretRef::parse(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn parses_and_resolves_references() {
        let dir = std::env::temp_dir().join(format!("authkeeper-secretref-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        let parsed = SecretRef::parse(&format!("file:{}", file.display()));
        assert_eq!(parsed.resolve().unwrap().expose_secret(), "s3cret");
        assert_eq!(
            SecretRef::parse("literal")
                .resolve()
                .unwrap()
                .expose_secret(),
            "literal"
        );
        let missing = SecretRef::parse("env:AUTHKEEPER_TEST_SURELY_UNSET_VAR");
        assert!(matches!(
            missing.resolve(),
            Err(SecretRefError::MissingEnv(_))
        ));
        assert_eq!(
            format!("{:?}", SecretRef::parse("hunter2")),
            "[inline secret]"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
