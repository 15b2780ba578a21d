//! `GET /.well-known/openid-configuration` (and the RFC 8414 twin
//! `/.well-known/oauth-authorization-server`): where the endpoints are and what they support.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::state::IdpState;

/// The discovery document.
pub async fn configuration(State(state): State<IdpState>) -> Json<Value> {
    Json(document(state.issuer()))
}

/// The discovery document of an IdP whose issuer (base URL) is `issuer`.
pub fn document(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/token"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "device_authorization_endpoint": format!("{issuer}/device/auth"),
        "authorization_endpoint": format!("{issuer}/authorize"),
        "authorization_response_iss_parameter_supported": true,
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": [
            "refresh_token",
            "client_credentials",
            "authorization_code",
            "urn:ietf:params:oauth:grant-type:device_code",
        ],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "response_types_supported": ["code"],
        "scopes_supported": ["api.read", "api.write", "admin"],
    })
}
