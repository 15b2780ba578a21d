//! [`RedisStore`]: the shared store for several broker replicas on several machines (feature
//! `redis`).
//!
//! - **Layout** ([`keys`]): one hash per credential for its sealed token set and plaintext
//!   status, one hash for its refresh lease and fence, both under the `{cred:NAME}` hash tag.
//! - **Sealing**: exactly as in the embedded store ([`crate::seal`], kind `credential`, the name
//!   as associated data); a sealed key-check value makes a replica with another key fail at
//!   connect instead of writing values the others cannot open.
//! - **Atomicity**: every conditional write is one Lua script ([`scripts`]) that checks the
//!   generation and, for fenced writes, the lease's fence before writing, so a replica whose
//!   lease was taken over can never overwrite a newer token set.
//! - **Lease clock**: lease expiry is judged with the `now` the caller passes (the Keeper's
//!   clock), as in the embedded store, and never with Redis `PX` expiry: a second clock would
//!   disagree with the Keeper's, and an expiring key would erase the evidence that a holder died
//!   mid-refresh ([`Lease::took_over_abandoned`]). Replicas' clocks must agree within a small
//!   fraction of the lease TTL (NTP); fencing keeps a skewed replica from writing anyway.
//! - **Records** ([`records`](self)): one hash per record (`version`, `sealed`, `updated_at`;
//!   kind and key as associated data) and a set of items per part, under the `{r:KIND:PART}`
//!   hash tag; a compare-and-put or delete is one Lua script checking the version and
//!   maintaining the set. Records of the layout before it are moved once ([`legacy`](self)).
//! - **Propagation** ([`events`]): every credential write publishes `NAME GENERATION`; a
//!   background subscriber wakes [`CredentialStore::wait_for_change`] waiters at once and feeds
//!   [`RedisStore::changes`].
//!   While the subscription is down, waiters poll the generation.
//! - **Failures**: every call is bounded by [`RedisOptions::op_timeout`] and fails with
//!   [`StoreError::Unavailable`]; the connection manager reconnects with backoff by itself.
//!   No message, `Debug` or `Display` output contains the URL's password ([`RedisUrl`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), authkeeper_core::StoreError> {
//! use authkeeper_store::{Keyring, KeySettings, RedisStore};
//!
//! let keyring = authkeeper_store::key::read_key_file(std::path::Path::new("store.key"))?;
//! let store = RedisStore::connect("redis://:password@10.0.0.5:6379/0", "authkeeper:", keyring).await?;
//! println!("{store:?}"); // the password shows as ***
//! # let _ = KeySettings::from_env(None);
//! # Ok(())
//! # }
//! ```

mod credentials;
pub mod error;
pub mod events;
pub mod keys;
mod legacy;
mod records;
mod scripts;
pub mod url;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

#[cfg(doc)]
use authkeeper_core::CredentialStore;
use authkeeper_core::{Lease, StoreError, Timestamp};

use crate::seal::{KEY_CHECK_KIND, KEY_CHECK_NAME, KEY_CHECK_PLAINTEXT, KeyId, Keyring};

pub use self::error::RedisFailure;
pub use self::events::ChangeEvent;
pub use self::keys::DEFAULT_PREFIX;
pub use self::url::RedisUrl;

use self::events::{Events, Subscriber, SubscriberConfig};
use self::keys::Keys;
use self::scripts::Scripts;

/// Tuning of a [`RedisStore`]. `Debug` shows no secret (there is none here).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Prefix of every key and of the events channel (default `authkeeper:`). Replicas sharing
    /// credentials use the same prefix; different deployments on one Redis use different ones.
    pub prefix: String,
    /// Longest a Redis call may take before it fails with [`StoreError::Unavailable`] (2 s).
    pub op_timeout: Duration,
    /// Longest a (re)connection attempt may take (1 s).
    pub connect_timeout: Duration,
    /// How often a waiter polls the generation while the pub/sub subscription is down (150 ms).
    pub poll_interval: Duration,
    /// How often the pub/sub connection is checked with PING (5 s).
    pub ping_interval: Duration,
    /// How long [`RedisStore::connect_with`] waits for the first subscription before going on
    /// with polling (the default: `connect_timeout`).
    pub subscribe_wait: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            prefix: DEFAULT_PREFIX.to_owned(),
            op_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(150),
            ping_interval: Duration::from_secs(5),
            subscribe_wait: Duration::from_secs(1),
        }
    }
}

impl RedisOptions {
    /// Sets [`RedisOptions::prefix`].
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`RedisOptions::op_timeout`].
    pub fn with_op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Sets [`RedisOptions::connect_timeout`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`RedisOptions::poll_interval`].
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets [`RedisOptions::ping_interval`].
    pub fn with_ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }
}

/// Readiness of a [`RedisStore`], for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisHealth {
    /// Whether Redis answered a PING within the operation timeout.
    pub reachable: bool,
    /// Whether the events subscription is up (when down, waiters poll: slower, still correct).
    pub subscribed: bool,
    /// The PING round trip, when it answered.
    pub latency: Option<Duration>,
    /// Why the store is not fully healthy (never contains a secret).
    pub reason: Option<String>,
}

impl RedisHealth {
    /// Ready to serve: Redis answers. A lost subscription alone only slows propagation.
    pub fn is_ready(&self) -> bool {
        self.reachable
    }
}

/// The Redis store. Cheap to clone; clones share one multiplexed connection and one subscriber.
///
/// Must be created inside a tokio runtime (it spawns its subscriber task there); the task stops
/// when the last clone is dropped.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    url: Arc<RedisUrl>,
    keys: Keys,
    options: RedisOptions,
    conn: ::redis::aio::ConnectionManager,
    keyring: Keyring,
    scripts: Scripts,
    events: Arc<Events>,
    _subscriber: Subscriber,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.keys.prefix())
            .field("key_id", &self.key_id())
            .field("subscribed", &self.inner.events.is_subscribed())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://[user:password@]host[:port][/db]`, `rediss://` for TLS) with
    /// keys under `prefix` and default [`RedisOptions`].
    pub async fn connect(url: &str, prefix: &str, keyring: Keyring) -> Result<Self, StoreError> {
        Self::connect_with(
            RedisUrl::parse(url)?,
            keyring,
            RedisOptions::default().with_prefix(prefix),
        )
        .await
    }

    /// Connects with explicit options: checks that Redis answers and that `keyring` opens the
    /// prefix's key check (writing it for a new prefix), then starts the events subscriber and
    /// waits briefly for its first subscription.
    ///
    /// Fails with [`StoreError::Unavailable`] when Redis cannot be reached within the timeouts,
    /// and with [`StoreError::Decrypt`] when the data under `prefix` was sealed with another key.
    pub async fn connect_with(
        url: RedisUrl,
        keyring: Keyring,
        options: RedisOptions,
    ) -> Result<Self, StoreError> {
        let keys = Keys::new(&options.prefix)?;
        let url = Arc::new(url);
        let client = ::redis::Client::open(url.expose().clone())
            .map_err(|e| error::from_redis(&url, "opening the Redis client", e))?;
        let config = ::redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.op_timeout))
            .set_number_of_retries(3)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let connecting = ::redis::aio::ConnectionManager::new_with_config(client.clone(), config);
        let conn =
            match tokio::time::timeout(options.connect_timeout + options.op_timeout, connecting)
                .await
            {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return Err(error::from_redis(&url, "connecting to Redis", e)),
                Err(_) => {
                    return Err(error::timed_out(
                        &url,
                        "connecting to Redis",
                        options.connect_timeout + options.op_timeout,
                    ));
                }
            };
        let events = Events::new();
        let subscriber = events::spawn(
            SubscriberConfig {
                client,
                url: Arc::clone(&url),
                channel: keys.channel(),
                op_timeout: options.op_timeout,
                connect_timeout: options.connect_timeout,
                ping_interval: options.ping_interval,
            },
            Arc::clone(&events),
        );
        let store = RedisStore {
            inner: Arc::new(Inner {
                url,
                keys,
                options,
                conn,
                keyring,
                scripts: Scripts::new(),
                events,
                _subscriber: subscriber,
            }),
        };
        store.check_or_write_key_check().await?;
        store.migrate_legacy_records().await?;
        let mut subscribed = store.inner.events.subscribed.subscribe();
        let wait = store.inner.options.subscribe_wait;
        if tokio::time::timeout(wait, subscribed.wait_for(|up| *up))
            .await
            .is_err()
        {
            tracing::warn!(redis = %store.inner.url, reason = ?store.inner.events.reason(), "store events are not subscribed yet; waiters poll until they are");
        }
        Ok(store)
    }

    /// The URL, password redacted.
    pub fn url(&self) -> &RedisUrl {
        &self.inner.url
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        self.inner.keys.prefix()
    }

    /// The id of the key that seals new values.
    pub fn key_id(&self) -> KeyId {
        self.inner.keyring.primary().id()
    }

    /// The Redis key holding the state of `name` (for operators and tests).
    pub fn state_key(&self, name: &str) -> String {
        self.inner.keys.state(name)
    }

    /// The Redis key holding the lease and fence of `name` (for operators and tests).
    pub fn lease_key(&self, name: &str) -> String {
        self.inner.keys.lease(name)
    }

    /// The Redis key holding record `key` of `kind` (for operators and tests).
    pub fn record_key(
        &self,
        kind: authkeeper_core::store::RecordKind,
        key: &authkeeper_core::store::RecordKey,
    ) -> String {
        self.inner.keys.record(kind, key)
    }

    /// The Redis key holding the set of the items under `part` (for operators and tests).
    pub fn record_items_key(&self, kind: authkeeper_core::store::RecordKind, part: &str) -> String {
        self.inner.keys.record_items(kind, part)
    }

    /// Every change published by any replica (and this one), in order, for keeping an
    /// in-memory cache fresh. On [`ChangeEvent::Resynced`] or a lag, reload what you hold.
    pub fn changes(&self) -> broadcast::Receiver<ChangeEvent> {
        self.inner.events.sender.subscribe()
    }

    /// Whether the events subscription is up right now.
    pub fn is_subscribed(&self) -> bool {
        self.inner.events.is_subscribed()
    }

    /// Sends PING; the round trip, or [`StoreError::Unavailable`] within the operation timeout.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let started = Instant::now();
        let mut conn = self.conn();
        let _: String = self
            .timed("ping", ::redis::cmd("PING").query_async(&mut conn))
            .await?;
        Ok(started.elapsed())
    }

    /// Readiness with the reason when not fully healthy.
    pub async fn health(&self) -> RedisHealth {
        let subscribed = self.inner.events.is_subscribed();
        let subscription_reason = if subscribed {
            None
        } else {
            Some(format!(
                "events subscription down ({}); waiters poll",
                self.inner
                    .events
                    .reason()
                    .unwrap_or_else(|| "unknown".to_owned())
            ))
        };
        match self.ping().await {
            Ok(latency) => RedisHealth {
                reachable: true,
                subscribed,
                latency: Some(latency),
                reason: subscription_reason,
            },
            Err(e) => RedisHealth {
                reachable: false,
                subscribed,
                latency: None,
                reason: Some(e.to_string()),
            },
        }
    }

    /// Extends a held lease to `now + ttl` if it is still ours (same owner and fence: nobody took
    /// it over). Returns whether it was renewed; on success `lease.expires_at` is updated.
    /// Renew well before expiry while a refresh is in flight (e.g. every TTL/3).
    pub async fn renew_lease(
        &self,
        lease: &mut Lease,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let expires_at = now + ttl;
        let mut conn = self.conn();
        let mut call = self.inner.scripts.renew.prepare_invoke();
        call.key(self.inner.keys.lease(&lease.name))
            .arg(&lease.owner)
            .arg(lease.fence.to_string())
            .arg(expires_at.as_millis().to_string());
        let renewed: i64 = self
            .timed("renewing a lease", call.invoke_async(&mut conn))
            .await?;
        if renewed == 1 {
            lease.expires_at = expires_at;
        }
        Ok(renewed == 1)
    }

    fn conn(&self) -> ::redis::aio::ConnectionManager {
        self.inner.conn.clone()
    }

    /// Runs a Redis call with the operation timeout, mapping failures.
    async fn timed<T>(
        &self,
        what: &str,
        call: impl Future<Output = ::redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.inner.options.op_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(error::from_redis(&self.inner.url, what, e)),
            Err(_) => Err(error::timed_out(
                &self.inner.url,
                what,
                self.inner.options.op_timeout,
            )),
        }
    }

    async fn check_or_write_key_check(&self) -> Result<(), StoreError> {
        let key = self.inner.keys.key_check();
        let mut conn = self.conn();
        let existing: Option<Vec<u8>> = self
            .timed(
                "reading the key check",
                ::redis::cmd("GET").arg(&key).query_async(&mut conn),
            )
            .await?;
        let existing = match existing {
            Some(sealed) => sealed,
            None => {
                let sealed = self
                    .inner
                    .keyring
                    .seal(KEY_CHECK_KIND, KEY_CHECK_NAME, KEY_CHECK_PLAINTEXT)
                    .map_err(|e| e.into_store_error(KEY_CHECK_KIND, KEY_CHECK_NAME))?;
                let written: Option<String> = self
                    .timed(
                        "writing the key check",
                        ::redis::cmd("SET")
                            .arg(&key)
                            .arg(sealed.as_slice())
                            .arg("NX")
                            .query_async(&mut conn),
                    )
                    .await?;
                if written.is_some() {
                    return Ok(());
                }
                let raced: Option<Vec<u8>> = self
                    .timed(
                        "reading the key check",
                        ::redis::cmd("GET").arg(&key).query_async(&mut conn),
                    )
                    .await?;
                raced.unwrap_or(sealed)
            }
        };
        self.inner
            .keyring
            .open(KEY_CHECK_KIND, KEY_CHECK_NAME, &existing)
            .map_err(|e| StoreError::Decrypt {
                kind: KEY_CHECK_KIND,
                name: format!("{} prefix {:?}", self.inner.url, self.prefix()),
                reason: format!(
                    "{e}: the data under this prefix was sealed with another key; every replica needs the same AUTHKEEPER_KEY"
                ),
            })?;
        Ok(())
    }
}
