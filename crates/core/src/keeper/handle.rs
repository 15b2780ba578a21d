//! [`Token`]: what the Keeper hands out — a shared view of one cached generation.

use std::fmt;
use std::sync::Arc;

use super::entry::Current;
use crate::clock::Timestamp;
use crate::secret::AccessToken;
use crate::token::TokenSet;

/// An access token handed out by the Keeper, with its generation. Cheap to clone; `Debug` shows
/// no secret.
#[derive(Clone)]
pub struct Token {
    pub(super) current: Arc<Current>,
}

impl Token {
    /// The access token (read it with [`secrecy::ExposeSecret`]).
    pub fn secret(&self) -> &AccessToken {
        &self.current.tokens.access_token
    }

    /// The token type, usually `Bearer`.
    pub fn token_type(&self) -> &str {
        &self.current.tokens.token_type
    }

    /// The generation this token belongs to; pass it to [`super::Keeper::rejected`] on a 401.
    pub fn generation(&self) -> u64 {
        self.current.generation
    }

    /// When the token expires.
    pub fn expires_at(&self) -> Timestamp {
        self.current.tokens.expires_at
    }

    /// The whole token set.
    pub fn tokens(&self) -> &TokenSet {
        &self.current.tokens
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("generation", &self.current.generation)
            .field("expires_at", &self.current.tokens.expires_at)
            .finish_non_exhaustive()
    }
}
