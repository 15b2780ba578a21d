//! Change propagation: every write publishes on `{prefix}events`; one background task per store
//! keeps a dedicated pub/sub connection (reconnecting with capped, jittered backoff and checking
//! it with PING) and fans the events out to local waiters and to [`ChangeEvent`] subscribers.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use rand::Rng as _;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::url::RedisUrl;

/// How many events a slow [`ChangeEvent`] receiver may fall behind before it sees `Lagged`.
pub const EVENT_BUFFER: usize = 1024;
const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(50);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// What a store's subscriber saw. Receivers get every event of every credential.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeEvent {
    /// A write stored `generation` of `name` (0: deleted), or changed its status.
    Changed {
        /// The credential.
        name: String,
        /// Its generation after the write.
        generation: u64,
    },
    /// The refresh lease of `name` was released.
    LeaseReleased {
        /// The credential.
        name: String,
    },
    /// The subscription was (re)established: events may have been missed while it was down, so
    /// caches should reload what they hold.
    Resynced,
    /// The subscription was lost; waiters fall back to polling until [`ChangeEvent::Resynced`].
    Disconnected,
}

impl ChangeEvent {
    /// Parses a message payload: `NAME GENERATION` or `NAME released`.
    pub(crate) fn parse(payload: &[u8]) -> Option<ChangeEvent> {
        let text = std::str::from_utf8(payload).ok()?;
        let (name, what) = text.split_once(' ')?;
        if name.is_empty() {
            return None;
        }
        if what == "released" {
            return Some(ChangeEvent::LeaseReleased {
                name: name.to_owned(),
            });
        }
        Some(ChangeEvent::Changed {
            name: name.to_owned(),
            generation: what.parse().ok()?,
        })
    }
}

/// Shared between the store and its subscriber task.
#[derive(Debug)]
pub(crate) struct Events {
    pub(crate) sender: broadcast::Sender<ChangeEvent>,
    pub(crate) subscribed: watch::Sender<bool>,
    /// Why the subscription is down, when it is.
    pub(crate) reason: Mutex<Option<String>>,
}

impl Events {
    pub(crate) fn new() -> Arc<Self> {
        let (sender, _) = broadcast::channel(EVENT_BUFFER);
        let (subscribed, _) = watch::channel(false);
        Arc::new(Events {
            sender,
            subscribed,
            reason: Mutex::new(Some("not subscribed yet".to_owned())),
        })
    }

    pub(crate) fn is_subscribed(&self) -> bool {
        *self.subscribed.borrow()
    }

    pub(crate) fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_up(&self) {
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.subscribed.send_replace(true);
        let _ = self.sender.send(ChangeEvent::Resynced);
    }

    fn set_down(&self, reason: String) {
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
        if self.subscribed.send_replace(false) {
            let _ = self.sender.send(ChangeEvent::Disconnected);
        }
    }
}

/// Aborts the subscriber task when the store is dropped.
#[derive(Debug)]
pub(crate) struct Subscriber(JoinHandle<()>);

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the subscriber task needs.
pub(crate) struct SubscriberConfig {
    pub(crate) client: ::redis::Client,
    pub(crate) url: Arc<RedisUrl>,
    pub(crate) channel: String,
    pub(crate) op_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) ping_interval: Duration,
}

/// Starts the subscriber task on the current tokio runtime.
pub(crate) fn spawn(config: SubscriberConfig, events: Arc<Events>) -> Subscriber {
    Subscriber(tokio::spawn(run(config, events)))
}

async fn run(config: SubscriberConfig, events: Arc<Events>) {
    let mut delay = MIN_RECONNECT_DELAY;
    loop {
        match subscribe(&config).await {
            Ok(pubsub) => {
                delay = MIN_RECONNECT_DELAY;
                tracing::debug!(redis = %config.url, channel = %config.channel, "subscribed to store events");
                events.set_up();
                let reason = listen(&config, pubsub, &events).await;
                tracing::warn!(redis = %config.url, reason = %reason, "lost the store events subscription; polling until it is back");
                events.set_down(reason);
            }
            Err(reason) => {
                tracing::debug!(redis = %config.url, reason = %reason, "cannot subscribe to store events");
                events.set_down(reason);
            }
        }
        let jittered = delay.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        tokio::time::sleep(jittered).await;
        delay = (delay * 2).min(MAX_RECONNECT_DELAY);
    }
}

async fn subscribe(config: &SubscriberConfig) -> Result<::redis::aio::PubSub, String> {
    let describe = |e: ::redis::RedisError| config.url.scrub(&e.to_string());
    let mut pubsub = match tokio::time::timeout(
        config.connect_timeout,
        config.client.get_async_pubsub(),
    )
    .await
    {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(e)) => return Err(format!("connecting: {}", describe(e))),
        Err(_) => {
            return Err(format!(
                "connecting timed out after {:?}",
                config.connect_timeout
            ));
        }
    };
    match tokio::time::timeout(config.op_timeout, pubsub.subscribe(&config.channel)).await {
        Ok(Ok(())) => Ok(pubsub),
        Ok(Err(e)) => Err(format!("subscribing: {}", describe(e))),
        Err(_) => Err(format!(
            "subscribing timed out after {:?}",
            config.op_timeout
        )),
    }
}

/// Forwards messages until the connection fails; returns why.
async fn listen(
    config: &SubscriberConfig,
    pubsub: ::redis::aio::PubSub,
    events: &Events,
) -> String {
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return "the connection closed".to_owned();
                };
                match ChangeEvent::parse(message.get_payload_bytes()) {
                    Some(event) => {
                        let _ = events.sender.send(event);
                    }
                    None => tracing::debug!(channel = %message.get_channel_name(), "ignoring a malformed store event"),
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(config.op_timeout, sink.ping::<::redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return format!("ping failed: {}", config.url.scrub(&e.to_string())),
                    Err(_) => return format!("ping timed out after {:?}", config.op_timeout),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        assert_eq!(
            ChangeEvent::parse(b"crm 42"),
            Some(ChangeEvent::Changed {
                name: "crm".to_owned(),
                generation: 42
            })
        );
        assert_eq!(
            ChangeEvent::parse(b"crm released"),
            Some(ChangeEvent::LeaseReleased {
                name: "crm".to_owned()
            })
        );
        for bad in [&b"crm"[..], b" 1", b"crm x", b"\xff 1"] {
            assert_eq!(ChangeEvent::parse(bad), None);
        }
    }
}
