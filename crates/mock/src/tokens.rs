//! Token strings (opaque random or JWT-shaped) and the RFC 6749 §5.1 token response body.

use std::sync::Arc;

use authkeeper_core::clock::Timestamp;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use serde_json::{Map, Value, json};

use crate::config::Knobs;

/// `len` random bytes as unpadded base64url.
pub(crate) fn random_token(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An opaque access or refresh token: 32 random bytes, base64url (marked for the planted-secret
/// scan while `scripts/test` runs, see [`authkeeper_testkit::mark`]).
pub(crate) fn opaque_token() -> String {
    authkeeper_testkit::mark(random_token(32))
}

/// What goes into a JWT-shaped access token's payload.
pub(crate) struct JwtClaims<'a> {
    pub issuer: &'a str,
    pub sub: &'a str,
    pub client_id: &'a str,
    pub scope: &'a str,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A JWT-shaped access token whose signature is random bytes: nobody verifies it.
pub(crate) fn jwt_token(claims: &JwtClaims<'_>) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": "mock"});
    let payload = json!({
        "iss": claims.issuer,
        "sub": claims.sub,
        "aud": "mock-api",
        "client_id": claims.client_id,
        "scope": claims.scope,
        "iat": claims.issued_at.as_secs(),
        "exp": claims.expires_at.as_secs(),
        "jti": random_token(16),
    });
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        authkeeper_testkit::mark(random_token(32))
    )
}

/// The outcome of a successful grant: what a token response reports.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub scope: Arc<str>,
    pub grant_id: Option<Arc<str>>,
}

impl Issued {
    /// The JSON token response, shaped by the knobs (`expires_in` omitted or as a string).
    /// `with_grant_id` adds the non-standard `grant_id` field (minting only).
    pub(crate) fn to_json(&self, knobs: &Knobs, with_grant_id: bool) -> Value {
        let mut body = Map::new();
        body.insert(
            "access_token".into(),
            Value::from(self.access_token.as_str()),
        );
        body.insert("token_type".into(), Value::from("Bearer"));
        if !knobs.omit_expires_in {
            let secs = knobs.expires_in_secs();
            let value = if knobs.expires_in_as_string {
                Value::from(secs.to_string())
            } else {
                Value::from(secs)
            };
            body.insert("expires_in".into(), value);
        }
        if let Some(refresh) = &self.refresh_token {
            body.insert("refresh_token".into(), Value::from(refresh.as_str()));
        }
        body.insert("scope".into(), Value::from(&*self.scope));
        if with_grant_id && let Some(id) = &self.grant_id {
            body.insert("grant_id".into(), Value::from(&**id));
        }
        Value::Object(body)
    }
}
