//! The device authorization grant (RFC 8628): ask the device authorization endpoint for a
//! user code, let the caller show it, then poll the token endpoint until the user approves,
//! denies, or the code expires.
//!
//! Polling honours the server's `interval` (5 s when absent, RFC 8628 §3.2), adds 5 s on every
//! `slow_down` (§3.5), keeps going on `authorization_pending`, and stops on `expired_token`,
//! `access_denied`, the code's `expires_in`, or the caller's deadline. Waits go through the
//! injected clock.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use super::{LoginClient, LoginError, sanitize};
use authkeeper_core::clock::Timestamp;
use authkeeper_core::error::{ErrorClass, RefreshError};
use authkeeper_core::token::TokenResponse;

/// The device-code grant type.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Polling interval when the server sends none (RFC 8628 §3.2).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Added to the interval on every `slow_down` (RFC 8628 §3.5).
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// Consecutive transient failures (network, 5xx) tolerated while polling.
const MAX_TRANSIENT_FAILURES: u32 = 5;

/// A pending device authorization: what to show the user, and the (secret) device code.
#[derive(Clone)]
pub struct DeviceAuthorization {
    device_code: SecretString,
    /// The code the user types at the verification page (meant to be shown).
    pub user_code: String,
    /// The verification page.
    pub verification_uri: String,
    /// The verification page with the user code filled in, when the server sent one (for a QR
    /// code).
    pub verification_uri_complete: Option<String>,
    /// The polling interval the server asked for (or the default).
    pub interval: Duration,
    /// When the device code expires.
    pub expires_at: Timestamp,
}

impl fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("device_code", &"[redacted]")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .field("verification_uri_complete", &self.verification_uri_complete)
            .field("interval", &self.interval)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// How to poll.
#[derive(Debug, Clone, Default)]
pub struct PollOptions {
    /// Poll at this interval instead of the server's (tests against real providers); `slow_down`
    /// still adds to it.
    pub interval_override: Option<Duration>,
    /// Give up at this time (the login timeout), if earlier than the code's expiry.
    pub deadline: Option<Timestamp>,
}

/// What happens while polling, for a progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceEvent {
    /// About to wait until `next_poll_at` before the next token request.
    Waiting {
        /// When the next poll happens.
        next_poll_at: Timestamp,
        /// The current interval.
        interval: Duration,
    },
    /// The user has not acted yet (`authorization_pending`).
    Pending,
    /// The server asked to slow down; the interval is now `interval`.
    SlowDown {
        /// The new interval.
        interval: Duration,
    },
    /// A poll failed transiently (network, 5xx); polling goes on.
    Retrying {
        /// The failure's short cause.
        cause: String,
    },
}

impl LoginClient {
    /// Starts a device authorization: POSTs the client authentication and scope to the device
    /// authorization endpoint.
    pub async fn start_device(&self) -> Result<DeviceAuthorization, LoginError> {
        let what = "device authorization request";
        let url = self.device_authorization_endpoint().await?.ok_or_else(|| {
            LoginError::Config(
                "the provider has no device authorization endpoint: set device_authorization_url \
                 or use another login method"
                    .into(),
            )
        })?;
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        let config = self.oauth.config();
        if !config.scopes.is_empty() {
            form.append_pair("scope", &config.scopes.join(" "));
        }
        if let Some(audience) = &config.audience {
            form.append_pair("audience", audience);
        }
        let now = self.clock.now();
        let (status, retry_after, body) = self
            .post_form(url, form)
            .await
            .map_err(|source| LoginError::Endpoint { what, source })?;
        if !(200..300).contains(&status) {
            return Err(LoginError::Endpoint {
                what,
                source: RefreshError::from_error_response(status, &body, retry_after),
            });
        }
        parse_device_response(&body, now)
    }

    /// Polls the token endpoint until the user approves (`Ok`), denies
    /// ([`LoginError::AccessDenied`]), the code expires ([`LoginError::DeviceCodeExpired`]) or
    /// `options.deadline` passes ([`LoginError::TimedOut`]). `observer` sees every step.
    pub async fn poll_device(
        &self,
        authorization: &DeviceAuthorization,
        options: &PollOptions,
        observer: &mut (dyn FnMut(&DeviceEvent) + Send),
    ) -> Result<TokenResponse, LoginError> {
        let started = self.clock.now();
        let mut interval = options
            .interval_override
            .unwrap_or(authorization.interval)
            .max(Duration::from_millis(10));
        let mut transient_failures = 0u32;
        loop {
            let next = self.clock.now() + interval;
            if next > authorization.expires_at {
                return Err(LoginError::DeviceCodeExpired);
            }
            if let Some(deadline) = options.deadline
                && next > deadline
            {
                return Err(LoginError::TimedOut(deadline.saturating_since(started)));
            }
            observer(&DeviceEvent::Waiting {
                next_poll_at: next,
                interval,
            });
            self.clock.sleep_until(next).await;
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", DEVICE_CODE_GRANT);
            form.append_pair("device_code", authorization.device_code.expose_secret());
            match self.token_request(form, false).await {
                Ok(tokens) => return Ok(tokens),
                Err(RefreshError::OAuth {
                    code, description, ..
                }) if is_device_code(&code) => match code.as_str() {
                    "authorization_pending" => {
                        transient_failures = 0;
                        observer(&DeviceEvent::Pending);
                    }
                    "slow_down" => {
                        transient_failures = 0;
                        interval += SLOW_DOWN_STEP;
                        observer(&DeviceEvent::SlowDown { interval });
                    }
                    "access_denied" => return Err(LoginError::AccessDenied { description }),
                    _ => return Err(LoginError::DeviceCodeExpired),
                },
                Err(error)
                    if error.class() == ErrorClass::Transient
                        && transient_failures < MAX_TRANSIENT_FAILURES =>
                {
                    transient_failures += 1;
                    observer(&DeviceEvent::Retrying {
                        cause: error.cause(),
                    });
                    if let Some(wait) = error.retry_after() {
                        interval = interval.max(wait.min(Duration::from_secs(60)));
                    }
                }
                Err(source) => {
                    return Err(LoginError::Endpoint {
                        what: "device code token request",
                        source,
                    });
                }
            }
        }
    }
}

fn is_device_code(code: &str) -> bool {
    matches!(
        code,
        "authorization_pending" | "slow_down" | "access_denied" | "expired_token"
    )
}

/// Reads an RFC 8628 §3.2 device authorization response obtained at `now`.
pub fn parse_device_response(
    body: &[u8],
    now: Timestamp,
) -> Result<DeviceAuthorization, LoginError> {
    let invalid = |message: String| LoginError::InvalidResponse {
        what: "device authorization response",
        message,
    };
    let map: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(invalid("not a JSON object".into())),
        Err(e) => {
            return Err(invalid(format!(
                "not JSON (line {}, column {})",
                e.line(),
                e.column()
            )));
        }
    };
    let text = |field: &str| {
        map.get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned)
    };
    let seconds = |field: &str| -> Result<Option<u64>, LoginError> {
        match map.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .map(Some)
                .ok_or_else(|| invalid(format!("`{field}` is not a positive number"))),
            Some(Value::String(s)) => s
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| invalid(format!("`{field}` is not a positive number"))),
            Some(_) => Err(invalid(format!("`{field}` is not a number"))),
        }
    };
    let device_code = text("device_code")
        .map(SecretString::from)
        .ok_or_else(|| invalid("no device_code".into()))?;
    let user_code = text("user_code").ok_or_else(|| invalid("no user_code".into()))?;
    // Google's early implementation says `verification_url`.
    let verification_uri = text("verification_uri")
        .or_else(|| text("verification_url"))
        .ok_or_else(|| invalid("no verification_uri".into()))?;
    let expires_in = seconds("expires_in")?
        .filter(|s| *s > 0)
        .ok_or_else(|| invalid("no positive expires_in".into()))?;
    let interval = seconds("interval")?
        .filter(|s| *s > 0)
        .map_or(DEFAULT_INTERVAL, |s| Duration::from_secs(s.min(300)));
    Ok(DeviceAuthorization {
        device_code,
        user_code: sanitize(&user_code),
        verification_uri: sanitize(&verification_uri),
        verification_uri_complete: text("verification_uri_complete")
            .or_else(|| text("verification_url_complete"))
            .map(|s| sanitize(&s)),
        interval,
        expires_at: now + Duration::from_secs(expires_in.min(24 * 3600)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_response_defaults_the_interval_and_hides_the_device_code() {
        let now = Timestamp::from_secs(1000);
        let auth = parse_device_response(
            br#"{"device_code":"secret-device-code","user_code":"ABCD-EFGH","verification_uri":"https://idp/device","expires_in":600}"#,
            now,
        )
        .unwrap();
        assert_eq!(auth.interval, DEFAULT_INTERVAL);
        assert_eq!(auth.expires_at, now + Duration::from_secs(600));
        assert_eq!(auth.verification_uri_complete, None);
        assert!(!format!("{auth:?}").contains("secret-device-code"));
    }

    #[test]
    fn device_response_errors_are_clear() {
        let now = Timestamp::from_secs(1000);
        for body in [
            &br#"{"user_code":"A","verification_uri":"u","expires_in":5}"#[..],
            br#"{"device_code":"d","verification_uri":"u","expires_in":5}"#,
            br#"{"device_code":"d","user_code":"A","expires_in":5}"#,
            br#"{"device_code":"d","user_code":"A","verification_uri":"u"}"#,
            b"<html>",
        ] {
            let error = parse_device_response(body, now).unwrap_err();
            assert!(
                matches!(error, LoginError::InvalidResponse { .. }),
                "{error}"
            );
            assert!(!error.to_string().contains("\"d\""));
        }
    }
}
