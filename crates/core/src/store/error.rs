//! [`StoreError`]: why a store operation failed, shared by both store traits.

/// Why a store operation failed. Never contains a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or answered with an I/O error.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A record could not be decrypted: wrong key, or the data was tampered with.
    #[error("cannot decrypt stored {kind} `{name}`: {reason}")]
    Decrypt {
        /// The record kind.
        kind: &'static str,
        /// The record name.
        name: String,
        /// Why (wrong key, unknown key id, corrupt).
        reason: String,
    },
    /// The stored data is not in a format this version understands.
    #[error("stored data is corrupt or from an unknown version: {0}")]
    Corrupt(String),
    /// Anything else, with its source.
    #[error("{message}")]
    Other {
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    /// An [`StoreError::Unavailable`] with a source.
    pub fn unavailable(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Unavailable {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// An [`StoreError::Other`] with a message and no source.
    pub fn other(message: impl Into<String>) -> Self {
        StoreError::Other {
            message: message.into(),
            source: None,
        }
    }
}
