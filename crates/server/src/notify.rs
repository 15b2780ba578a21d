//! Re-authentication notifications: a webhook POST when a human must log in again.
//!
//! [`Notifier`] is an [`EventSink`]: on the refresh path it only queues a notice (never blocks,
//! never fails the refresh); a background task delivers each notice with retries and capped,
//! jittered exponential backoff. It notifies when
//!
//! - a credential whose login needs a human (device or PKCE) goes to `needs_reauth`;
//! - the scheduled re-login of such a credential is due (`"event": "relogin_due"`, with the
//!   session's `expires_at`), so a human can log in before the session dies;
//! - the automatic re-authentication of a credential (login command) gave up;
//! - a credential that needed re-authentication works again (`"event": "recovered"`).
//!
//! The body is JSON: `{"event", "credential", "reason", "login_hint", "at", "expires_at"?}`.
//! Every delivery carries `X-Authkeeper-Delivery: <id>` (the same id on every retry of one
//! notice, so receivers can drop duplicates). With a `webhook_secret`, the header
//! `X-Authkeeper-Signature: t=<unix seconds>,v1=<hex>` carries the HMAC-SHA256, under that
//! secret, of `"{t}.{delivery id}.{body}"` (see [`sign`] and [`verify`]): a receiver that checks
//! the timestamp against its clock refuses replays. Neither the secret nor any token appears in a
//! notice, a log line or an error.

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
/// The delivery id header.
pub const DELIVERY_HEADER: &str = "x-authkeeper-delivery";
/// How far a signature's timestamp may be from the receiver's clock in [`verify`].
pub const SIGNATURE_TOLERANCE: Duration = Duration::from_secs(300);

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
    /// `needs_reauth`, `relogin_due`, `reauth_failed` or `recovered`.
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

fn mac(secret: &[u8], timestamp: i64, delivery: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length: this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(delivery.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `t=<timestamp>,v1=<hex of HMAC-SHA256(secret, "{timestamp}.{delivery}.{body}")>`, the value
/// of [`SIGNATURE_HEADER`] for a delivery sent at `timestamp` (Unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, delivery: &str, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, delivery, body)
        .finalize()
        .into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

/// Why [`verify`] refused a delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The header is not `t=<digits>,v1=<hex>`.
    #[error("malformed signature header")]
    Malformed,
    /// The timestamp is further than the tolerance from now (a replay, or a wrong clock).
    #[error("the signature timestamp is outside the tolerance")]
    Stale,
    /// No `v1` signature matches.
    #[error("the signature does not match")]
    Mismatch,
}

/// Checks a delivery as a receiver would: the signature header, the delivery id header and the
/// exact body bytes, with the timestamp within [`SIGNATURE_TOLERANCE`] of `now` (Unix seconds).
/// Compares in constant time.
pub fn verify(
    secret: &[u8],
    header: &str,
    delivery: &str,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::Malformed)?;
    if signatures.is_empty() {
        return Err(VerifyError::Malformed);
    }
    if timestamp.abs_diff(now) > SIGNATURE_TOLERANCE.as_secs() {
        return Err(VerifyError::Stale);
    }
    let expected = mac(secret, timestamp, delivery, body);
    let matches = signatures.iter().any(|signature| {
        hex::decode(signature).is_ok_and(|tag| expected.clone().verify_slice(&tag).is_ok())
    });
    if matches {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// A fresh delivery id: 16 random bytes, hex.
fn delivery_id() -> String {
    let mut id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    hex::encode(id)
}

/// Sends re-authentication notices to a webhook; register it as a Keeper event sink.
pub struct Notifier {
    queue: mpsc::Sender<Notice>,
    automatic: HashSet<String>,
    /// Automatic credentials whose re-authentication gave up (a human was told to act).
    failed: std::sync::Mutex<HashSet<String>>,
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
    clock: SharedClock,
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
            clock: Arc::clone(&clock),
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
            failed: std::sync::Mutex::default(),
            clock,
        }))
    }

    fn failed_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
                self.failed_set().insert((*name).to_owned());
                self.enqueue(self.notice("reauth_failed", name, &reason));
            }
            // Recovery is news to whoever was told to log in: every credential that needs a
            // human, and automatic ones whose re-authentication gave up.
            Event::Recovered { name, generation } => {
                let told = !self.automatic.contains(*name) || self.failed_set().remove(*name);
                if told {
                    let reason = format!("a valid token set is stored (generation {generation})");
                    self.enqueue(self.notice("recovered", name, &reason));
                }
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
        let delivery = delivery_id();
        let credential = notice.credential.as_str();
        for attempt in 1..=self.max_attempts {
            let mut request = self
                .client
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(DELIVERY_HEADER, &delivery)
                .body(body.clone());
            // Signed per attempt: a retry carries the time it was sent.
            if let Some(secret) = &self.secret {
                let now = self.clock.now().as_secs();
                request = request.header(
                    SIGNATURE_HEADER,
                    sign(secret.expose_secret().as_bytes(), now, &delivery, &body),
                );
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
    fn signature_is_hmac_sha256_over_timestamp_delivery_and_body() {
        // HMAC-SHA256("Jefe", "1700000000.d1.what do ya want for nothing?"), computed with
        // Python's hmac module.
        let header = sign(
            b"Jefe",
            1_700_000_000,
            "d1",
            b"what do ya want for nothing?",
        );
        assert_eq!(
            header,
            "t=1700000000,v1=328808f9e27f67169d5d684645dbfeba74d9502842519d2e6d93f08a7839609d"
        );
    }

    #[test]
    fn verify_accepts_the_signed_delivery_and_nothing_else() {
        let body = br#"{"event":"needs_reauth"}"#;
        let header = sign(b"secret", 1_000, "abc", body);
        assert_eq!(verify(b"secret", &header, "abc", body, 1_100), Ok(()));
        assert_eq!(
            verify(b"other", &header, "abc", body, 1_100),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"secret", &header, "abd", body, 1_100),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"secret", &header, "abc", b"{}", 1_100),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"secret", &header, "abc", body, 1_400),
            Err(VerifyError::Stale)
        );
        let replayed = header.replace("t=1000", "t=1350");
        assert_eq!(
            verify(b"secret", &replayed, "abc", body, 1_400),
            Err(VerifyError::Mismatch)
        );
        for bad in ["", "v1=00", "t=1000", "t=x,v1=00", "sha256=00"] {
            assert!(verify(b"secret", bad, "abc", body, 1_000).is_err(), "{bad}");
        }
    }
}
