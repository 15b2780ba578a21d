//! `TokenResponse::parse` → `into_token_set` → secret JSON round trip, and `OAuthErrorBody::parse`.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use authkeeper_core::token::{MAX_EXPIRES_IN, OAuthErrorBody, ParsedTokenBody, TokenResponseError};
use authkeeper_core::{
    ExpiryDefaults, ExposeSecret, SecretString, Timestamp, TokenResponse, TokenSet,
};
use libfuzzer_sys::fuzz_target;

/// What `NotJson` shows instead of a body that mentions a token (crates/core/src/token.rs).
const WITHHELD: &str = "<withheld: mentions a token>";

/// 2023-11-14T22:13:20Z: a realistic "now".
const NOW_SECS: i64 = 1_700_000_000;

fn secret_eq(a: &Option<SecretString>, b: &Option<SecretString>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
        _ => false,
    }
}

/// `MalformedJson` details are a fixed phrase and a position, never input text.
fn is_json_error_detail(detail: &str) -> bool {
    if detail == "expected an object" {
        return true;
    }
    let Some(position) = ["truncated", "syntax error", "unexpected data", "read error"]
        .iter()
        .find_map(|kind| detail.strip_prefix(kind))
    else {
        return false;
    };
    let Some(position) = position.strip_prefix(" at line ") else {
        return false;
    };
    let Some((line, column)) = position.split_once(" column ") else {
        return false;
    };
    [line, column]
        .iter()
        .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fuzz_target!(|data: &[u8]| {
    let text = std::str::from_utf8(data).ok();

    // Never panics; an error body is whatever the provider sent.
    let _ = OAuthErrorBody::parse(data);

    match TokenResponse::parse(data) {
        Err(err) => {
            let _ = err.to_string();
            if let Some(text) = text {
                // Only the parts of the message taken from the input are checked: the fixed
                // wording may coincide with a token by chance.
                match &err {
                    // The fixed placeholder for bodies that mention a token is not input text.
                    TokenResponseError::NotJson { start } if start == WITHHELD => {}
                    TokenResponseError::NotJson { start } => {
                        common::assert_no_token_leak(text, start, "TokenResponseError::NotJson");
                    }
                    TokenResponseError::MalformedJson(detail) => {
                        assert!(
                            is_json_error_detail(detail),
                            "MalformedJson detail {detail:?}"
                        );
                    }
                    TokenResponseError::UnusableExpiresIn { value } => {
                        assert!(value.chars().count() <= 24, "expires_in quoted in full");
                        common::assert_no_token_leak(text, value, "UnusableExpiresIn");
                    }
                    // The other variants carry nothing from the input.
                    _ => {}
                }
            }
        }
        Ok(ParsedTokenBody::Error(embedded)) => {
            // An error disguised as success: its code is the provider's text, kept as sent.
            let _ = format!("{embedded:?}");
        }
        Ok(ParsedTokenBody::Tokens(response)) => {
            // Debug shows no secret: it does not change when the secrets do.
            let _ = format!("{response:?}");
            let now = Timestamp::from_secs(NOW_SECS);
            let set = response.into_token_set(now, &ExpiryDefaults::default());
            assert!(!set.access_token.expose_secret().trim().is_empty());
            assert_eq!(set.issued_at, now);
            assert!(set.expires_at >= now, "expires before it was issued");
            assert!(
                set.expires_at <= now + MAX_EXPIRES_IN,
                "expiry beyond MAX_EXPIRES_IN: {} ms",
                set.expires_at.as_millis()
            );
            // What the CLI and the server print for every token set.
            let _ = set.expires_at.to_rfc3339();
            if let Some(at) = set.refresh_token_expires_at {
                let _ = at.to_rfc3339();
            }
            let mut blank = set.clone();
            blank.access_token = SecretString::from("-");
            blank.refresh_token = blank.refresh_token.map(|_| SecretString::from("-"));
            blank.id_token = blank.id_token.map(|_| SecretString::from("-"));
            assert_eq!(
                format!("{set:?}"),
                format!("{blank:?}"),
                "TokenSet Debug shows a secret"
            );

            let json = set.to_secret_json();
            assert!(!json.is_empty(), "to_secret_json produced nothing");
            let back = TokenSet::from_secret_json(&json).expect("secret JSON must read back");
            assert_eq!(
                back.access_token.expose_secret(),
                set.access_token.expose_secret()
            );
            assert_eq!(back.token_type, set.token_type);
            assert!(secret_eq(&back.refresh_token, &set.refresh_token));
            assert!(secret_eq(&back.id_token, &set.id_token));
            assert_eq!(back.scope, set.scope);
            assert_eq!(back.issued_at, set.issued_at);
            assert_eq!(back.expires_at, set.expires_at);
            assert_eq!(back.refresh_token_expires_at, set.refresh_token_expires_at);
            assert_eq!(
                back.extra, set.extra,
                "extra fields changed in the round trip"
            );
        }
    }
});
