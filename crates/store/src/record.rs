//! Decoding the records both stores keep, with errors that never quote secret input.

use authkeeper_core::TokenSet;

/// Reads an unsealed token set. The error names only the position: serde_json's messages can
/// quote the input, which holds tokens.
pub(crate) fn decode_token_set(plaintext: &[u8]) -> Result<TokenSet, String> {
    TokenSet::from_secret_json(plaintext).map_err(|e| {
        format!(
            "the sealed token set is not valid (at line {}, column {})",
            e.line(),
            e.column()
        )
    })
}

/// A credential's status and token expiry as sealed beside its token set (kind
/// [`crate::seal::CREDENTIAL_STATUS_KIND`], bound to the generation): the plaintext status
/// columns are copies for operators, never read back.
#[derive(serde::Serialize, serde::Deserialize)]
struct SealedStatus {
    status: authkeeper_core::CredentialStatus,
    expires_at: authkeeper_core::Timestamp,
}

/// The plaintext of a sealed status.
pub(crate) fn encode_status(
    status: &authkeeper_core::CredentialStatus,
    expires_at: authkeeper_core::Timestamp,
) -> Vec<u8> {
    serde_json::to_vec(&SealedStatus {
        status: status.clone(),
        expires_at,
    })
    .unwrap_or_default()
}

/// Reads an unsealed status: the status and the expiry of the generation's tokens.
pub(crate) fn decode_status(
    plaintext: &[u8],
) -> Result<
    (
        authkeeper_core::CredentialStatus,
        authkeeper_core::Timestamp,
    ),
    String,
> {
    serde_json::from_slice::<SealedStatus>(plaintext)
        .map(|sealed| (sealed.status, sealed.expires_at))
        .map_err(|e| format!("the sealed status is not valid: {e}"))
}
