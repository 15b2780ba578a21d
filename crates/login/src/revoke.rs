//! Token revocation (RFC 7009), for `authkeeper logout`.

use secrecy::ExposeSecret;

use super::{LoginClient, LoginError};
use authkeeper_core::error::RefreshError;

/// The `token_type_hint` of a revocation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenTypeHint {
    /// A refresh token (revoking it usually ends the whole grant).
    RefreshToken,
    /// An access token.
    AccessToken,
}

impl TokenTypeHint {
    /// The parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenTypeHint::RefreshToken => "refresh_token",
            TokenTypeHint::AccessToken => "access_token",
        }
    }
}

impl LoginClient {
    /// Revokes `token` at the revocation endpoint. `Ok(false)` when the provider has none.
    /// RFC 7009 §2.2: 200 means revoked (or already invalid).
    pub async fn revoke(
        &self,
        token: &impl ExposeSecret<str>,
        hint: TokenTypeHint,
    ) -> Result<bool, LoginError> {
        let what = "revocation request";
        let Some(url) = self.revocation_endpoint().await? else {
            return Ok(false);
        };
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("token", token.expose_secret());
        form.append_pair("token_type_hint", hint.as_str());
        let (status, retry_after, body) = self
            .post_form(url, form)
            .await
            .map_err(|source| LoginError::Endpoint { what, source })?;
        if (200..300).contains(&status) {
            Ok(true)
        } else {
            Err(LoginError::Endpoint {
                what,
                source: RefreshError::from_error_response(status, &body, retry_after),
            })
        }
    }
}
