//! [`RedisStore`]: the shared store for several broker replicas on several machines (feature
//! `redis`).
//!
//! - **Layout** ([`keys`]): one hash per credential for its sealed token set and plaintext
//!   status, one hash for its refresh lease and fence, both under the `{cred:NAME}` hash tag.
//! - **Sealing**: exactly as in the embedded store ([`crate::seal`]: every value bound to the
//!   prefix's store id, its kind, name and generation or version; a credential's status and
//!   expiry sealed beside its tokens); a sealed key-check value makes a replica with another key
//!   fail at connect instead of writing values the others cannot open. A prefix sealed in format
//!   1 is upgraded once, when a replica connects ([`upgrade`](self)).
//! - **Atomicity**: every conditional write is one Lua script ([`scripts`]) that checks the
//!   generation and, for fenced writes, the lease's fence before writing, so a replica whose
//!   lease was taken over can never overwrite a newer token set.
//! - **Lease clock**: lease expiry is judged by Redis' own clock (`TIME` inside the scripts), so
//!   every replica judges a lease the same way and one whose clock runs ahead cannot take a live
//!   lease over ([`LeaseClock`]); never by Redis `PX` expiry, which would erase the evidence that
//!   a holder died mid-refresh ([`authkeeper_core::Lease::took_over_abandoned`]). A holder renews its lease while
//!   its token request runs; fencing keeps a holder that lost its lease from writing anyway.
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
mod upgrade;
pub mod url;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

#[cfg(doc)]
use authkeeper_core::CredentialStore;
use authkeeper_core::StoreError;

use crate::seal::{
    Binding, KEY_CHECK_KIND, KEY_CHECK_NAME, KEY_CHECK_PLAINTEXT, KeyId, Keyring, StoreId, is_v1,
};

pub use self::error::RedisFailure;
pub use self::events::ChangeEvent;
pub use self::keys::DEFAULT_PREFIX;
pub use self::url::RedisUrl;

use self::events::{Events, Subscriber, SubscriberConfig};
use self::keys::Keys;
use self::scripts::Scripts;

/// Which clock judges refresh leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeaseClock {
    /// Redis' own `TIME`: every replica judges a lease by one clock, so a replica whose clock
    /// runs ahead cannot take a live lease over (the default).
    #[default]
    Server,
    /// The `now` each caller passes (the Keeper's clock). For tests that drive time with a
    /// manual clock only.
    Caller,
}

impl LeaseClock {
    pub(crate) fn mode(self) -> &'static str {
        match self {
            LeaseClock::Server => "server",
            LeaseClock::Caller => "caller",
        }
    }
}

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
    /// Which clock judges refresh leases ([`LeaseClock::Server`]).
    pub lease_clock: LeaseClock,
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
            lease_clock: LeaseClock::Server,
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

    pub(crate) fn lease_clock_mode(&self) -> &'static str {
        self.lease_clock.mode()
    }

    /// Sets [`RedisOptions::lease_clock`].
    pub fn with_lease_clock(mut self, clock: LeaseClock) -> Self {
        self.lease_clock = clock;
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
    /// Set by [`RedisStore::connect_with`] before it returns the store.
    store_id: std::sync::OnceLock<StoreId>,
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
                store_id: std::sync::OnceLock::new(),
                scripts: Scripts::new(),
                events,
                _subscriber: subscriber,
            }),
        };
        let (store_id, format_1) = store.open_store_keys().await?;
        // Set once, here, before the store is used.
        let _ = store.inner.store_id.set(store_id);
        store.migrate_legacy_records().await?;
        if format_1 {
            store.upgrade_to_format_2(store_id).await?;
        }
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

    /// The binding of a value of `kind`/`name` at `version` in this prefix.
    pub(crate) fn binding<'a>(&self, kind: &'a str, name: &'a str, version: u64) -> Binding<'a> {
        Binding::new(self.store_id(), kind, name, version)
    }

    /// The prefix's store id (see [`crate::seal::StoreId`]).
    pub fn store_id(&self) -> StoreId {
        self.inner
            .store_id
            .get()
            .copied()
            .unwrap_or_else(|| StoreId::from_bytes([0; crate::seal::STORE_ID_LEN]))
    }

    /// Reads (or, for a new prefix, writes) the store id and the key check, and verifies that
    /// this replica's key opens the key check. Returns the id and whether the prefix is still
    /// sealed in format 1 (to upgrade).
    async fn open_store_keys(&self) -> Result<(StoreId, bool), StoreError> {
        let store_id = self.read_or_create_store_id().await?;
        let key = self.inner.keys.key_check();
        let mut conn = self.conn();
        let existing: Option<Vec<u8>> = self
            .timed(
                "reading the key check",
                ::redis::cmd("GET").arg(&key).query_async(&mut conn),
            )
            .await?;
        let binding = Binding::new(store_id, KEY_CHECK_KIND, KEY_CHECK_NAME, 0);
        let existing = match existing {
            Some(sealed) => sealed,
            None => {
                let sealed = self
                    .inner
                    .keyring
                    .seal(&binding, KEY_CHECK_PLAINTEXT)
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
                    return Ok((store_id, false));
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
        let format_1 = is_v1(&existing);
        let opened = if format_1 {
            self.inner
                .keyring
                .open_v1(KEY_CHECK_KIND, KEY_CHECK_NAME, &existing)
        } else {
            self.inner.keyring.open(&binding, &existing)
        };
        opened.map_err(|e| StoreError::Decrypt {
            kind: KEY_CHECK_KIND,
            name: format!("{} prefix {:?}", self.inner.url, self.prefix()),
            reason: format!(
                "{e}: the data under this prefix was sealed with another key; every replica needs the same AUTHKEEPER_KEY"
            ),
        })?;
        Ok((store_id, format_1))
    }

    /// The prefix's store id, created (`SET NX`) when missing.
    async fn read_or_create_store_id(&self) -> Result<StoreId, StoreError> {
        let key = self.inner.keys.store_id();
        let mut conn = self.conn();
        let fresh = StoreId::generate();
        let _: Option<String> = self
            .timed(
                "writing the store id",
                ::redis::cmd("SET")
                    .arg(&key)
                    .arg(fresh.as_bytes().as_slice())
                    .arg("NX")
                    .query_async(&mut conn),
            )
            .await?;
        let stored: Option<Vec<u8>> = self
            .timed(
                "reading the store id",
                ::redis::cmd("GET").arg(&key).query_async(&mut conn),
            )
            .await?;
        stored
            .as_deref()
            .and_then(StoreId::from_slice)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "the store id under prefix {:?} is malformed",
                    self.prefix()
                ))
            })
    }
}
