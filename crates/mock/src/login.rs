//! Interactive grants of the mock IdP, with fault knobs for every error path a client must
//! handle:
//!
//! - `POST /device/auth` and the `urn:ietf:params:oauth:grant-type:device_code` grant
//!   (RFC 8628): the user "approves" by itself after `device_slow_down_polls` `slow_down`
//!   answers and `device_pending_polls` `authorization_pending` answers, or the outcome is
//!   `access_denied` / `expired_token` ([`DeviceOutcome`]).
//! - `GET /authorize` (auto-approving: it redirects to the `redirect_uri` at once with `code`,
//!   `state` and `iss`, RFC 9207) and the `authorization_code` grant with PKCE `S256`
//!   (RFC 7636). Knobs send a wrong `state`, a wrong `iss`, an `error`, or corrupt the stored
//!   challenge so the exchange fails.
//!
//! Both end by minting a grant like `POST /admin/grants`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use authkeeper_core::clock::Timestamp;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::json;
use url::Url;

use crate::config::{Knobs, MockClient};
use crate::state::{IdpState, bump};
use crate::token_endpoint::{authenticate, client_auth_error, oauth_error, token_success};
use crate::tokens::random_token;

/// The device-code grant type.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Lifetime of an authorization code.
const CODE_TTL: Duration = Duration::from_secs(60);

/// How a device authorization ends once the scripted `slow_down` / pending polls are used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceOutcome {
    /// The user approves: tokens are issued.
    #[default]
    Approve,
    /// The user denies: `access_denied`.
    Deny,
    /// The code expires: `expired_token`.
    Expire,
}

#[derive(Debug)]
struct DeviceRecord {
    client_id: String,
    scope: Option<String>,
    expires_at: Timestamp,
    polls: u32,
}

#[derive(Debug)]
struct CodeRecord {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scope: Option<String>,
    expires_at: Timestamp,
}

/// Pending device authorizations and authorization codes.
#[derive(Debug, Default)]
pub(crate) struct LoginState {
    devices: Mutex<HashMap<String, DeviceRecord>>,
    codes: Mutex<HashMap<String, CodeRecord>>,
}

/// `POST /device/auth` (RFC 8628 §3.1).
pub async fn device_authorization(
    State(state): State<IdpState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let knobs = state.knobs();
    let form = match crate::token_endpoint::parse_form(&body) {
        Ok(form) => form,
        Err(description) => {
            return oauth_error(
                &knobs,
                StatusCode::BAD_REQUEST,
                "invalid_request",
                description,
            );
        }
    };
    let client = match authenticate(&state, &headers, &form) {
        Ok(client) => client,
        Err(failure) => return client_auth_error(&state, &knobs, failure),
    };
    bump(&state.counters().device_authorizations);
    let now = state.now(&knobs);
    let device_code = authkeeper_testkit::mark(random_token(32));
    let user_code = user_code();
    state
        .login()
        .devices
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            device_code.clone(),
            DeviceRecord {
                client_id: client.client_id.clone(),
                scope: form.get("scope").cloned(),
                expires_at: now + Duration::from_secs(knobs.device_expires_in_secs),
                polls: 0,
            },
        );
    let verification_uri = format!("{}/device", state.issuer());
    let mut body = json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": verification_uri,
        "expires_in": knobs.device_expires_in_secs,
    });
    if knobs.device_verification_uri_complete {
        body["verification_uri_complete"] =
            json!(format!("{verification_uri}?user_code={user_code}"));
    }
    if let Some(interval) = knobs.device_interval_secs {
        body["interval"] = json!(interval);
    }
    token_success(body)
}

/// `BCDF-GHJK`-style user code (RFC 8628 §6.1: no vowels, case-insensitive).
fn user_code() -> String {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
    let mut rng = rand::thread_rng();
    let mut code = String::with_capacity(9);
    for i in 0..8 {
        if i == 4 {
            code.push('-');
        }
        code.push(char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]));
    }
    code
}

/// The `device_code` grant at `/token`, for an authenticated client.
pub(crate) fn device_code_grant(
    state: &IdpState,
    knobs: &Knobs,
    client: &MockClient,
    form: &HashMap<String, String>,
) -> Response {
    bump(&state.counters().device_polls);
    let Some(device_code) = form.get("device_code") else {
        return oauth_error(
            knobs,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "missing device_code",
        );
    };
    let now = state.now(knobs);
    let mut devices = state
        .login()
        .devices
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let Some(record) = devices.get_mut(device_code) else {
        return oauth_error(
            knobs,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown or used device_code",
        );
    };
    if record.client_id != client.client_id {
        return oauth_error(
            knobs,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "device_code of another client",
        );
    }
    if now >= record.expires_at {
        devices.remove(device_code);
        return oauth_error(
            knobs,
            StatusCode::BAD_REQUEST,
            "expired_token",
            "the device code expired",
        );
    }
    record.polls += 1;
    let polls = record.polls;
    if polls <= knobs.device_slow_down_polls {
        return oauth_error(
            knobs,
            StatusCode::BAD_REQUEST,
            "slow_down",
            "polling too fast",
        );
    }
    if polls <= knobs.device_slow_down_polls + knobs.device_pending_polls {
        return oauth_error(
            knobs,
            StatusCode::BAD_REQUEST,
            "authorization_pending",
            "the user has not approved yet",
        );
    }
    let Some(record) = devices.remove(device_code) else {
        return oauth_error(
            knobs,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown device_code",
        );
    };
    drop(devices);
    match knobs.device_outcome {
        DeviceOutcome::Deny => oauth_error(
            knobs,
            StatusCode::BAD_REQUEST,
            "access_denied",
            "the user denied the request",
        ),
        DeviceOutcome::Expire => oauth_error(
            knobs,
            StatusCode::BAD_REQUEST,
            "expired_token",
            "the device code expired",
        ),
        DeviceOutcome::Approve => issue(state, knobs, &record.client_id, record.scope.as_deref()),
    }
}

/// Query of `GET /authorize`.
#[derive(Debug, Deserialize)]
pub struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    scope: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

/// `GET /authorize`: approves at once and redirects back (RFC 6749 §4.1.2, RFC 9207 `iss`).
pub async fn authorize(
    State(state): State<IdpState>,
    Query(query): Query<AuthorizeQuery>,
) -> Response {
    let knobs = state.knobs();
    bump(&state.counters().authorizations);
    let Some(client_id) = query
        .client_id
        .as_deref()
        .filter(|id| state.client_exists(id))
    else {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    };
    let Some(redirect) = query
        .redirect_uri
        .as_deref()
        .and_then(|uri| Url::parse(uri).ok())
        .filter(|uri| {
            uri.scheme() == "http"
                && matches!(uri.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
        })
    else {
        // RFC 6749 §4.1.2.1: never redirect to an invalid redirect URI.
        return (
            StatusCode::BAD_REQUEST,
            "redirect_uri must be a loopback http URI",
        )
            .into_response();
    };
    let returned_state = if knobs.authorize_wrong_state {
        Some("not-the-state-you-sent".to_owned())
    } else {
        query.state.clone()
    };
    let iss = if knobs.authorize_wrong_iss {
        "https://evil.example".to_owned()
    } else {
        state.issuer().to_owned()
    };
    let mut params: Vec<(&str, String)> = Vec::new();
    let error = if let Some(error) = &knobs.authorize_error {
        Some(error.clone())
    } else if query.response_type.as_deref() != Some("code") {
        Some("unsupported_response_type".to_owned())
    } else if query.code_challenge_method.as_deref() != Some("S256")
        || query.code_challenge.as_deref().is_none_or(str::is_empty)
    {
        Some("invalid_request".to_owned())
    } else {
        None
    };
    match error {
        Some(error) => params.push(("error", error)),
        None => {
            let code = authkeeper_testkit::mark(random_token(32));
            let mut challenge = query.code_challenge.clone().unwrap_or_default();
            if knobs.pkce_corrupt_challenge {
                challenge = URL_SAFE_NO_PAD.encode([0u8; 32]);
            }
            let now = state.now(&knobs);
            state
                .login()
                .codes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    code.clone(),
                    CodeRecord {
                        client_id: client_id.to_owned(),
                        redirect_uri: redirect.as_str().to_owned(),
                        challenge,
                        scope: query.scope.clone(),
                        expires_at: now + CODE_TTL,
                    },
                );
            params.push(("code", code));
        }
    }
    if let Some(returned_state) = returned_state {
        params.push(("state", returned_state));
    }
    if !knobs.authorize_omit_iss {
        params.push(("iss", iss));
    }
    let mut location = redirect;
    {
        let mut pairs = location.query_pairs_mut();
        for (key, value) in &params {
            pairs.append_pair(key, value);
        }
    }
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(location.as_str()) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The `authorization_code` grant at `/token`, for an authenticated client.
pub(crate) fn authorization_code_grant(
    state: &IdpState,
    knobs: &Knobs,
    client: &MockClient,
    form: &HashMap<String, String>,
) -> Response {
    let invalid_grant = |description: &str| {
        bump(&state.counters().invalid_grant);
        oauth_error(knobs, StatusCode::BAD_REQUEST, "invalid_grant", description)
    };
    let (Some(code), Some(redirect_uri)) = (form.get("code"), form.get("redirect_uri")) else {
        return oauth_error(
            knobs,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "missing code or redirect_uri",
        );
    };
    let record = state
        .login()
        .codes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(code);
    let Some(record) = record else {
        return invalid_grant("unknown or used authorization code");
    };
    if record.client_id != client.client_id {
        return invalid_grant("code issued to another client");
    }
    if state.now(knobs) >= record.expires_at {
        return invalid_grant("authorization code expired");
    }
    if &record.redirect_uri != redirect_uri {
        return invalid_grant("redirect_uri does not match the authorization request");
    }
    let verified = form.get("code_verifier").is_some_and(|verifier| {
        use sha2::Digest as _;
        URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes())) == record.challenge
    });
    if !verified {
        return invalid_grant("PKCE verification failed");
    }
    issue(state, knobs, &record.client_id, record.scope.as_deref())
}

fn issue(state: &IdpState, knobs: &Knobs, client_id: &str, scope: Option<&str>) -> Response {
    match state.mint_grant(Some(client_id), scope) {
        Ok(issued) => token_success(issued.to_json(knobs, false)),
        Err(_) => oauth_error(
            knobs,
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "cannot mint a grant",
        ),
    }
}
