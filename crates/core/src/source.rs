//! [`TokenSource`]: where a credential's tokens come from when no OAuth token endpoint issues
//! them — e.g. a bearer token that a single-page app keeps in a browser session
//! (`grant = "session"`, implemented by `authkeeper-session`).
//!
//! The Keeper treats a source exactly like a token endpoint: it calls [`TokenSource::fetch`]
//! under the credential's refresh lease (one call per expiry across every process and replica
//! sharing the store), stores the answer durably before anyone sees it, answers rejections with
//! a compare-and-refresh, and backs off on failures by their class.

use std::fmt;

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::error::RefreshError;
use crate::token::{TokenResponse, TokenSet};

/// Fetches a credential's next token set.
#[async_trait]
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// A new token response. `current` is the stored token set (`None` before the first): a
    /// source may answer a still-usable token it already has only when `current` is `None`,
    /// otherwise the Keeper asks because the current one is due or was rejected.
    async fn fetch(
        &self,
        current: Option<&TokenSet>,
        now: Timestamp,
    ) -> Result<TokenResponse, RefreshError>;
}
