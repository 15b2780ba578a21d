//! Re-authentication notifications: a webhook POST when a human must log in again.
//!
//! [`Notifier`] is an [`EventSink`]: on the refresh path it only queues a notice (never blocks,
//! never fails the refresh); a background task delivers each notice with retries and capped,
//! jittered exponential backoff. It notifies when
//!
//! - a credential whose login needs a human (device or PKCE) goes to `needs_reauth`;
//! - the scheduled re-login of such a credential is due (`"event": "relogin_due"`, with the
//!   session's `expires_at`), so a human can log in before the session dies;
//! - the automatic re-authentication of a credential (login command) gave up.
//!
//! The body is JSON: `{"event", "credential", "reason", "login_hint", "at", "expires_at"?}`.
//! With a `webhook_secret`, the header `X-Authkeeper-Signature: sha256=<hex>` carries the
//! HMAC-SHA256 of the exact body bytes under that secret (see [`sign`]). Neither the secret nor
//! any token appears in a notice, a log line or an error.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use authkeeper_core::backoff::Backoff;
use authkeeper_core::events::{Event, EventSink};
use authkeeper_core::reauth::login_hint;
use authkeeper_core::secret_ref::{SecretRef, SecretRefError};
use authkeeper_core::{ExposeSecret as _, SecretString, SharedClock};
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::mpsc;
use url::Url;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-authkeeper-signature";

/// The `[notify]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Where notices are POSTed.
    pub webhook_url: Url,
    /// The HMAC key of the signature header: `env:NAME` or `file:PATH` (recommended).
    #[serde(default)]
    pub webhook_secret: Option<SecretRef>,
    /// Timeout of one delivery attempt (default 10s).
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Delivery attempts per notice (default 6).
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Delay bound after the first failed attempt, doubled each time up to 5 minutes
    /// (default 1s).
    #[serde(default = "defaults::retry_base", with = "humantime_serde")]
    pub retry_base: Duration,
}

mod defaults {
    use std::time::Duration;
    pub fn timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_attempts() -> u32 {
        6
    }
    pub fn retry_base() -> Duration {
        Duration::from_secs(1)
    }
}

/// Why the notifier could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The webhook secret could not be read.
    #[error("[notify] webhook_secret: {0}")]
    Secret(#[from] SecretRefError),
    /// The webhook URL is not http(s).
    #[error("[notify] webhook_url must be an http or https URL")]
    Url,
    /// The HTTP client could not be built.
    #[error("cannot build the webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// One notice, as POSTed.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    /// `needs_reauth`, `relogin_due` or `reauth_failed`.
    pub event: &'static str,
    /// The credential.
    pub credential: String,
    /// Why (never a secret).
    pub reason: String,
    /// What a human should run.
    pub login_hint: String,
    /// When it happened (RFC 3339).
    pub at: String,
    /// When the session dies, for `relogin_due`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`, the value of [`SIGNATURE_HEADER`].
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends re-authentication notices to a webhook; register it as a Keeper event sink.
pub struct Notifier {
    queue: mpsc::Sender<Notice>,
    automatic: HashSet<String>,
    clock: SharedClock,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("automatic", &self.automatic)
            .finish_non_exhaustive()
    }
}

/// What the delivery task needs.
struct Delivery {
    client: reqwest::Client,
    url: Url,
    secret: Option<SecretString>,
    backoff: Backoff,
    max_attempts: u32,
}

impl Notifier {
    /// Starts the delivery task (call inside a Tokio runtime). `automatic` names the credentials
    /// re-authenticated without a human: their `needs_reauth` is not notified (only a give-up).
    pub fn start(
        config: &NotifyConfig,
        automatic: HashSet<String>,
        clock: SharedClock,
    ) -> Result<Arc<Notifier>, NotifyError> {
        if !matches!(config.webhook_url.scheme(), "http" | "https") {
            return Err(NotifyError::Url);
        }
        let secret = config
            .webhook_secret
            .as_ref()
            .map(SecretRef::resolve)
            .transpose()?;
        if secret.is_none() {
            tracing::warn!("[notify] has no webhook_secret: notices are sent unsigned");
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(NotifyError::Client)?;
        let delivery = Arc::new(Delivery {
            client,
            url: config.webhook_url.clone(),
            secret,
            backoff: Backoff {
                base: config.retry_base,
                cap: Duration::from_secs(300),
            },
            max_attempts: config.max_attempts.max(1),
        });
        let (queue, mut notices) = mpsc::channel::<Notice>(256);
        tokio::spawn(async move {
            while let Some(notice) = notices.recv().await {
                tokio::spawn(Arc::clone(&delivery).deliver(notice));
            }
        });
        Ok(Arc::new(Notifier {
            queue,
            automatic,
            clock,
        }))
    }

    fn enqueue(&self, notice: Notice) {
        let credential = notice.credential.clone();
        if self.queue.try_send(notice).is_err() {
            tracing::warn!(credential = %credential, "re-authentication notice dropped: the webhook queue is full");
        }
    }

    fn notice(&self, event: &'static str, name: &str, reason: &str) -> Notice {
        Notice {
            event,
            credential: name.to_owned(),
            reason: reason.chars().take(500).collect(),
            login_hint: login_hint(name),
            at: self.clock.now().to_rfc3339(),
            expires_at: None,
        }
    }
}

impl EventSink for Notifier {
    fn on_event(&self, event: &Event<'_>) {
        match event {
            Event::NeedsReauth { name, reason } if !self.automatic.contains(*name) => {
                self.enqueue(self.notice("needs_reauth", name, reason));
            }
            Event::ReloginDue {
                name,
                expires_at,
                automatic: false,
            } => {
                let mut notice = self.notice(
                    "relogin_due",
                    name,
                    &format!("session expires at {}", expires_at.to_rfc3339()),
                );
                notice.expires_at = Some(expires_at.to_rfc3339());
                self.enqueue(notice);
            }
            Event::ReauthFailed {
                name,
                cause,
                attempts,
                next_attempt_at: None,
            } => {
                let reason = format!(
                    "automatic re-authentication gave up after {attempts} attempts: {cause}"
                );
                self.enqueue(self.notice("reauth_failed", name, &reason));
            }
            _ => {}
        }
    }
}

impl Delivery {
    async fn deliver(self: Arc<Self>, notice: Notice) {
        let body = match serde_json::to_vec(&notice) {
            Ok(body) => body,
            Err(_) => return,
        };
        let signature = self
            .secret
            .as_ref()
            .map(|secret| sign(secret.expose_secret().as_bytes(), &body));
        let credential = notice.credential.as_str();
        for attempt in 1..=self.max_attempts {
            let mut request = self
                .client
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(signature) = &signature {
                request = request.header(SIGNATURE_HEADER, signature);
            }
            let failure = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    tracing::info!(
                        credential,
                        event = notice.event,
                        attempt,
                        "re-authentication notice delivered"
                    );
                    return;
                }
                Ok(response) => format!("HTTP {}", response.status().as_u16()),
                Err(error) if error.is_timeout() => "timed out".to_owned(),
                Err(_) => "connection failed".to_owned(),
            };
            if attempt == self.max_attempts {
                tracing::error!(credential, event = notice.event, attempts = attempt, failure = %failure, "re-authentication notice could not be delivered");
                return;
            }
            let delay = self.backoff.delay(attempt, None);
            tracing::warn!(credential, event = notice.event, attempt, failure = %failure, retry_in_ms = delay.as_millis() as u64, "re-authentication notice failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
