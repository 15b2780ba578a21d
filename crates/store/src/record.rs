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
