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
//! - **Sessions**: one hash per browser-session record (`version`, `sealed`; kind `session`,
//!   `SITE/ID` as associated data) and a set of ids per site, under the `{sess:SITE}` hash tag;
//!   a compare-and-put or delete is one Lua script checking the version and maintaining the set.
//! - **Propagation** ([`events`]): every write publishes `NAME GENERATION`; a background
//!   subscriber wakes [`Store::wait_for_change`] waiters at once and feeds [`RedisStore::changes`].
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

pub mod error;
pub mod events;
pub mod keys;
mod scripts;
pub mod url;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::broadcast;

use authkeeper_core::store::{
    CHECKPOINT_KIND, SESSION_KIND, StoredCheckpoint, StoredSession, validate_name,
};
use authkeeper_core::{
    CredentialState, CredentialStatus, CredentialSummary, Lease, LeaseAttempt, Store, StoreError,
    StoredCredential, Timestamp, TokenSet, WriteOutcome,
};

use crate::seal::{KeyId, Keyring};
use crate::sqlite::{CREDENTIAL_KIND, KEY_CHECK_KIND, session_name};

pub use self::error::RedisFailure;
pub use self::events::ChangeEvent;
pub use self::keys::DEFAULT_PREFIX;
pub use self::url::RedisUrl;

use self::events::{Events, Subscriber, SubscriberConfig};
use self::keys::Keys;
use self::scripts::Scripts;

const KEY_CHECK_NAME: &str = "store";
const KEY_CHECK_PLAINTEXT: &[u8] = b"authkeeper key check v1";
/// While the subscription is up, waiters still re-read the generation this often, in case an
/// event was lost.
const SAFETY_POLL: Duration = Duration::from_secs(1);
/// The status fields of a credential hash, in the order they are read.
const STATUS_FIELDS: [&str; 5] = [
    "state",
    "last_refresh_at",
    "failures",
    "reason",
    "next_attempt_at",
];

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

/// The status fields as read from the hash.
type RawStatus = [Option<String>; 5];

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

    /// The Redis key holding session record `site`/`id` (for operators and tests).
    pub fn session_key(&self, site: &str, id: &str) -> String {
        self.inner.keys.session(site, id)
    }

    /// The Redis key holding the set of `site`'s session ids (for operators and tests).
    pub fn session_index_key(&self, site: &str) -> String {
        self.inner.keys.session_index(site)
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
        validate_name(&lease.name)?;
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

    /// The stored generation of `name` (0 when nothing is stored).
    async fn generation(&self, name: &str) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let generation: Option<String> = self
            .timed(
                "reading a generation",
                ::redis::cmd("HGET")
                    .arg(self.inner.keys.state(name))
                    .arg("generation")
                    .query_async(&mut conn),
            )
            .await?;
        parse_u64(name, "generation", generation.as_deref().unwrap_or("0"))
    }

    /// Writes `tokens` as the next generation (`cas`: only over `expected`, fenced).
    async fn write(
        &self,
        name: &str,
        cas: Option<(u64, Option<u64>)>,
        tokens: &TokenSet,
        last_refresh_at: Option<Timestamp>,
    ) -> Result<WriteOutcome, StoreError> {
        let sealed = self
            .inner
            .keyring
            .seal(CREDENTIAL_KIND, name, &tokens.to_secret_json())
            .map_err(|e| e.into_store_error(CREDENTIAL_KIND, name))?;
        let mut conn = self.conn();
        // Index first: a credential whose state exists is always listed, even if this process
        // dies between the two calls (a name without state is skipped by `list`).
        let _: i64 = self
            .timed(
                "indexing a credential",
                ::redis::cmd("SADD")
                    .arg(self.inner.keys.index())
                    .arg(name)
                    .query_async(&mut conn),
            )
            .await?;
        let (mode, expected, fence) = match cas {
            Some((expected, fence)) => (
                "cas",
                expected.to_string(),
                fence.map(|f| f.to_string()).unwrap_or_default(),
            ),
            None => ("put", String::new(), String::new()),
        };
        let mut call = self.inner.scripts.write.prepare_invoke();
        call.key(self.inner.keys.state(name))
            .key(self.inner.keys.lease(name))
            .arg(mode)
            .arg(expected)
            .arg(fence)
            .arg(sealed.as_slice())
            .arg(tokens.expires_at.as_millis().to_string())
            .arg(
                last_refresh_at
                    .map(|t| t.as_millis().to_string())
                    .unwrap_or_default(),
            )
            .arg(self.inner.keys.channel())
            .arg(name);
        let reply: Vec<String> = self
            .timed("writing a credential", call.invoke_async(&mut conn))
            .await?;
        match reply.as_slice() {
            [written, generation] => {
                let generation = parse_u64(name, "generation", generation)?;
                Ok(if written == "1" {
                    WriteOutcome::Written { generation }
                } else {
                    WriteOutcome::Conflict {
                        current_generation: generation,
                    }
                })
            }
            _ => Err(error::corrupt(
                name,
                "unexpected reply from the write script",
            )),
        }
    }

    /// Unseals a session record read as `(version, sealed)`; `None` when it does not exist.
    fn open_session(
        &self,
        site: &str,
        id: &str,
        version: Option<String>,
        sealed: Option<Vec<u8>>,
    ) -> Result<Option<StoredSession>, StoreError> {
        let name = session_name(site, id);
        let (version, sealed) = match (version, sealed) {
            (None, _) => return Ok(None),
            (Some(version), Some(sealed)) => (version, sealed),
            (Some(_), None) => return Err(error::corrupt_session(&name, "no sealed document")),
        };
        let version = version
            .parse::<u64>()
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| error::corrupt_session(&name, "version is not a positive number"))?;
        let data = self
            .inner
            .keyring
            .open(SESSION_KIND, &name, &sealed)
            .map_err(|e| e.into_store_error(SESSION_KIND, &name))?;
        Ok(Some(StoredSession {
            site: site.to_owned(),
            id: id.to_owned(),
            data,
            version,
        }))
    }

    /// The members of set `key` that are valid names, sorted.
    async fn valid_members(&self, what: &str, key: String) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn();
        let mut members: Vec<String> = self
            .timed(
                what,
                ::redis::cmd("SMEMBERS").arg(key).query_async(&mut conn),
            )
            .await?;
        members.retain(|member| match validate_name(member) {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!(redis = %self.inner.url, "ignoring an invalid name in a Redis session index");
                false
            }
        });
        members.sort();
        Ok(members)
    }
}

fn parse_u64(name: &str, what: &str, text: &str) -> Result<u64, StoreError> {
    text.parse()
        .map_err(|_| error::corrupt(name, &format!("{what} is not a number")))
}

fn parse_millis(
    name: &str,
    what: &str,
    text: Option<&str>,
) -> Result<Option<Timestamp>, StoreError> {
    text.map(|text| {
        text.parse::<i64>()
            .map(Timestamp::from_millis)
            .map_err(|_| error::corrupt(name, &format!("{what} is not a timestamp")))
    })
    .transpose()
}

fn parse_status(name: &str, raw: RawStatus) -> Result<CredentialStatus, StoreError> {
    let [state, last_refresh_at, failures, reason, next_attempt_at] = raw;
    Ok(CredentialStatus {
        state: match state.as_deref() {
            None => CredentialState::Valid,
            Some(text) => {
                CredentialState::parse(text).ok_or_else(|| error::corrupt(name, "unknown state"))?
            }
        },
        last_refresh_at: parse_millis(name, "last_refresh_at", last_refresh_at.as_deref())?,
        failures: failures
            .as_deref()
            .unwrap_or("0")
            .parse()
            .map_err(|_| error::corrupt(name, "failures is not a number"))?,
        reason,
        next_attempt_at: parse_millis(name, "next_attempt_at", next_attempt_at.as_deref())?,
    })
}

fn optional_millis(time: Option<Timestamp>) -> String {
    time.map(|t| t.as_millis().to_string()).unwrap_or_default()
}

/// An HMGET reply of `generation, X, STATUS_FIELDS...` split into its parts.
struct HashRow {
    generation: Option<Vec<u8>>,
    second: Option<Vec<u8>>,
    status: RawStatus,
}

/// Splits an HMGET reply of `generation, X, STATUS_FIELDS...`.
fn split_status(mut values: Vec<Option<Vec<u8>>>) -> Option<HashRow> {
    if values.len() != 2 + STATUS_FIELDS.len() {
        return None;
    }
    let text = |v: Option<Vec<u8>>| v.map(|b| String::from_utf8_lossy(&b).into_owned());
    let status: Vec<Option<String>> = values.drain(2..).map(text).collect();
    let status: RawStatus = status.try_into().ok()?;
    let second = values.pop()?;
    let generation = values.pop()?;
    Some(HashRow {
        generation,
        second,
        status,
    })
}

#[async_trait]
impl Store for RedisStore {
    async fn load(&self, name: &str) -> Result<Option<StoredCredential>, StoreError> {
        validate_name(name)?;
        let mut conn = self.conn();
        let values: Vec<Option<Vec<u8>>> = self
            .timed(
                "loading a credential",
                ::redis::cmd("HMGET")
                    .arg(self.inner.keys.state(name))
                    .arg("generation")
                    .arg("sealed")
                    .arg(&STATUS_FIELDS[..])
                    .query_async(&mut conn),
            )
            .await?;
        let HashRow {
            generation,
            second: sealed,
            status,
        } = split_status(values)
            .ok_or_else(|| error::corrupt(name, "unexpected reply to HMGET"))?;
        let Some(generation) = generation else {
            return Ok(None);
        };
        let generation = parse_u64(name, "generation", &String::from_utf8_lossy(&generation))?;
        let sealed = sealed.ok_or_else(|| error::corrupt(name, "no sealed token set"))?;
        let status = parse_status(name, status)?;
        let plaintext = self
            .inner
            .keyring
            .open(CREDENTIAL_KIND, name, &sealed)
            .map_err(|e| e.into_store_error(CREDENTIAL_KIND, name))?;
        let tokens = crate::record::decode_token_set(&plaintext)
            .map_err(|what| error::corrupt(name, &what))?;
        Ok(Some(StoredCredential {
            name: name.to_owned(),
            generation,
            tokens,
            status,
        }))
    }

    async fn list(&self) -> Result<Vec<CredentialSummary>, StoreError> {
        let mut conn = self.conn();
        let mut names: Vec<String> = self
            .timed(
                "listing credentials",
                ::redis::cmd("SMEMBERS")
                    .arg(self.inner.keys.index())
                    .query_async(&mut conn),
            )
            .await?;
        names.retain(|name| match validate_name(name) {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!(redis = %self.inner.url, "ignoring an invalid name in the Redis index");
                false
            }
        });
        names.sort();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for name in &names {
            pipe.cmd("HMGET")
                .arg(self.inner.keys.state(name))
                .arg("generation")
                .arg("expires_at")
                .arg(&STATUS_FIELDS[..]);
        }
        let rows: Vec<Vec<Option<Vec<u8>>>> = self
            .timed("listing credentials", pipe.query_async(&mut conn))
            .await?;
        let mut summaries = Vec::with_capacity(names.len());
        for (name, values) in names.into_iter().zip(rows) {
            let HashRow {
                generation,
                second: expires_at,
                status,
            } = split_status(values)
                .ok_or_else(|| error::corrupt(&name, "unexpected reply to HMGET"))?;
            // Indexed but not stored: deleted, or a write that never happened.
            let Some(generation) = generation else {
                continue;
            };
            let generation = parse_u64(&name, "generation", &String::from_utf8_lossy(&generation))?;
            let expires_at = expires_at.map(|b| String::from_utf8_lossy(&b).into_owned());
            let expires_at = parse_millis(&name, "expires_at", expires_at.as_deref())?
                .ok_or_else(|| error::corrupt(&name, "no expires_at"))?;
            summaries.push(CredentialSummary {
                generation,
                expires_at,
                status: parse_status(&name, status)?,
                name,
            });
        }
        Ok(summaries)
    }

    async fn put(&self, name: &str, tokens: &TokenSet, now: Timestamp) -> Result<u64, StoreError> {
        validate_name(name)?;
        let _ = now;
        match self.write(name, None, tokens, None).await? {
            WriteOutcome::Written { generation } => Ok(generation),
            WriteOutcome::Conflict { .. } => Err(error::corrupt(
                name,
                "an unconditional write reported a conflict",
            )),
        }
    }

    async fn compare_and_put(
        &self,
        name: &str,
        expected_generation: u64,
        fence: Option<u64>,
        tokens: &TokenSet,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        validate_name(name)?;
        self.write(name, Some((expected_generation, fence)), tokens, Some(now))
            .await
    }

    async fn set_status(
        &self,
        name: &str,
        generation: u64,
        status: &CredentialStatus,
    ) -> Result<bool, StoreError> {
        validate_name(name)?;
        let mut conn = self.conn();
        let mut call = self.inner.scripts.set_status.prepare_invoke();
        call.key(self.inner.keys.state(name))
            .arg(generation.to_string())
            .arg(status.state.as_str())
            .arg(status.failures.to_string())
            .arg(optional_millis(status.last_refresh_at))
            .arg(if status.reason.is_some() { "1" } else { "0" })
            .arg(status.reason.as_deref().unwrap_or_default())
            .arg(optional_millis(status.next_attempt_at))
            .arg(self.inner.keys.channel())
            .arg(name);
        let written: i64 = self
            .timed("writing a status", call.invoke_async(&mut conn))
            .await?;
        Ok(written == 1)
    }

    async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        validate_name(name)?;
        let mut conn = self.conn();
        let mut call = self.inner.scripts.delete.prepare_invoke();
        call.key(self.inner.keys.state(name))
            .arg(self.inner.keys.channel())
            .arg(name);
        let deleted: i64 = self
            .timed("deleting a credential", call.invoke_async(&mut conn))
            .await?;
        let index = self.inner.keys.index();
        let _: i64 = self
            .timed(
                "unindexing a credential",
                ::redis::cmd("SREM")
                    .arg(&index)
                    .arg(name)
                    .query_async(&mut conn),
            )
            .await?;
        // A concurrent put may have re-created it between the two calls: index it again.
        let exists: i64 = self
            .timed(
                "unindexing a credential",
                ::redis::cmd("EXISTS")
                    .arg(self.inner.keys.state(name))
                    .query_async(&mut conn),
            )
            .await?;
        if exists == 1 {
            let _: i64 = self
                .timed(
                    "indexing a credential",
                    ::redis::cmd("SADD")
                        .arg(&index)
                        .arg(name)
                        .query_async(&mut conn),
                )
                .await?;
        }
        Ok(deleted == 1)
    }

    async fn try_acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<LeaseAttempt, StoreError> {
        validate_name(name)?;
        let expires_at = now + ttl;
        let mut conn = self.conn();
        let mut call = self.inner.scripts.acquire.prepare_invoke();
        call.key(self.inner.keys.lease(name))
            .arg(owner)
            .arg(now.as_millis().to_string())
            .arg(expires_at.as_millis().to_string());
        let reply: Vec<String> = self
            .timed("taking a lease", call.invoke_async(&mut conn))
            .await?;
        match reply.as_slice() {
            [busy, held_until] if busy == "0" => Ok(LeaseAttempt::Busy {
                held_until: parse_millis(name, "lease expires_at", Some(held_until))?
                    .unwrap_or(expires_at),
            }),
            [acquired, fence, abandoned, previous_owner] if acquired == "1" => {
                let took_over_abandoned = abandoned == "1";
                if took_over_abandoned {
                    tracing::warn!(
                        credential = name,
                        previous_owner = previous_owner.as_str(),
                        "took over a refresh lease its holder never released"
                    );
                }
                Ok(LeaseAttempt::Acquired(Lease {
                    name: name.to_owned(),
                    owner: owner.to_owned(),
                    fence: parse_u64(name, "fence", fence)?,
                    expires_at,
                    took_over_abandoned,
                    guard: None,
                }))
            }
            _ => Err(error::corrupt(
                name,
                "unexpected reply from the lease script",
            )),
        }
    }

    async fn release_lease(&self, lease: Lease) -> Result<(), StoreError> {
        validate_name(&lease.name)?;
        let mut conn = self.conn();
        let mut call = self.inner.scripts.release.prepare_invoke();
        call.key(self.inner.keys.lease(&lease.name))
            .arg(&lease.owner)
            .arg(lease.fence.to_string())
            .arg(self.inner.keys.channel())
            .arg(&lease.name);
        let _: i64 = self
            .timed("releasing a lease", call.invoke_async(&mut conn))
            .await?;
        Ok(())
    }

    async fn put_checkpoint(
        &self,
        task: &str,
        data: &[u8],
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        validate_name(task)?;
        let sealed = self
            .inner
            .keyring
            .seal(CHECKPOINT_KIND, task, data)
            .map_err(|e| e.into_store_error(CHECKPOINT_KIND, task))?;
        let key = self.inner.keys.checkpoint(task);
        let mut conn = self.conn();
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("HINCRBY")
            .arg(&key)
            .arg("version")
            .arg(1)
            .cmd("HSET")
            .arg(&key)
            .arg("sealed")
            .arg(sealed.as_slice())
            .arg("updated_at")
            .arg(now.as_millis())
            .ignore();
        let (version,): (i64,) = self
            .timed("saving a checkpoint", pipe.query_async(&mut conn))
            .await?;
        u64::try_from(version).map_err(|_| error::corrupt(task, "negative checkpoint version"))
    }

    async fn get_checkpoint(&self, task: &str) -> Result<Option<StoredCheckpoint>, StoreError> {
        validate_name(task)?;
        let mut conn = self.conn();
        let values: (Option<String>, Option<Vec<u8>>, Option<String>) = self
            .timed(
                "loading a checkpoint",
                ::redis::cmd("HMGET")
                    .arg(self.inner.keys.checkpoint(task))
                    .arg("version")
                    .arg("sealed")
                    .arg("updated_at")
                    .query_async(&mut conn),
            )
            .await?;
        let (Some(version), Some(sealed)) = (values.0, values.1) else {
            return Ok(None);
        };
        let version = parse_u64(task, "version", &version)?;
        let updated_at = parse_millis(task, "updated_at", values.2.as_deref())?
            .ok_or_else(|| error::corrupt(task, "no updated_at"))?;
        let data = self
            .inner
            .keyring
            .open(CHECKPOINT_KIND, task, &sealed)
            .map_err(|e| e.into_store_error(CHECKPOINT_KIND, task))?;
        Ok(Some(StoredCheckpoint {
            task: task.to_owned(),
            data,
            version,
            updated_at,
        }))
    }

    async fn delete_checkpoint(&self, task: &str) -> Result<bool, StoreError> {
        validate_name(task)?;
        let mut conn = self.conn();
        let deleted: i64 = self
            .timed(
                "deleting a checkpoint",
                ::redis::cmd("DEL")
                    .arg(self.inner.keys.checkpoint(task))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(deleted == 1)
    }

    async fn list_sessions(&self, site: &str) -> Result<Vec<StoredSession>, StoreError> {
        validate_name(site)?;
        let ids = self
            .valid_members("listing sessions", self.inner.keys.session_index(site))
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.inner.keys.session(site, id))
                .arg("version")
                .arg("sealed");
        }
        let mut conn = self.conn();
        let rows: Vec<(Option<String>, Option<Vec<u8>>)> = self
            .timed("listing sessions", pipe.query_async(&mut conn))
            .await?;
        let mut sessions = Vec::with_capacity(ids.len());
        for (id, (version, sealed)) in ids.iter().zip(rows) {
            // Indexed but gone: deleted between the two calls.
            if let Some(session) = self.open_session(site, id, version, sealed)? {
                sessions.push(session);
            }
        }
        Ok(sessions)
    }

    async fn list_session_sites(&self) -> Result<Vec<String>, StoreError> {
        let sites = self
            .valid_members("listing session sites", self.inner.keys.session_sites())
            .await?;
        if sites.is_empty() {
            return Ok(Vec::new());
        }
        // The sites set only grows (pruning it could race with a concurrent first write of the
        // site); a site whose index is empty has no records and is not listed.
        let mut pipe = ::redis::pipe();
        for site in &sites {
            pipe.cmd("SCARD").arg(self.inner.keys.session_index(site));
        }
        let mut conn = self.conn();
        let counts: Vec<u64> = self
            .timed("listing session sites", pipe.query_async(&mut conn))
            .await?;
        Ok(sites
            .into_iter()
            .zip(counts)
            .filter(|(_, count)| *count > 0)
            .map(|(site, _)| site)
            .collect())
    }

    async fn load_session(
        &self,
        site: &str,
        id: &str,
    ) -> Result<Option<StoredSession>, StoreError> {
        validate_name(site)?;
        validate_name(id)?;
        let mut conn = self.conn();
        let (version, sealed): (Option<String>, Option<Vec<u8>>) = self
            .timed(
                "loading a session",
                ::redis::cmd("HMGET")
                    .arg(self.inner.keys.session(site, id))
                    .arg("version")
                    .arg("sealed")
                    .query_async(&mut conn),
            )
            .await?;
        self.open_session(site, id, version, sealed)
    }

    async fn compare_and_put_session(
        &self,
        site: &str,
        id: &str,
        expected_version: u64,
        data: &[u8],
    ) -> Result<Option<u64>, StoreError> {
        validate_name(site)?;
        validate_name(id)?;
        let name = session_name(site, id);
        let sealed = self
            .inner
            .keyring
            .seal(SESSION_KIND, &name, data)
            .map_err(|e| e.into_store_error(SESSION_KIND, &name))?;
        let mut conn = self.conn();
        // The site first: a site with a record is always listed, even if this process dies
        // between the two calls (a site without records is skipped by `list_session_sites`).
        let _: i64 = self
            .timed(
                "indexing a session site",
                ::redis::cmd("SADD")
                    .arg(self.inner.keys.session_sites())
                    .arg(site)
                    .query_async(&mut conn),
            )
            .await?;
        let mut call = self.inner.scripts.put_session.prepare_invoke();
        call.key(self.inner.keys.session(site, id))
            .key(self.inner.keys.session_index(site))
            .arg(expected_version.to_string())
            .arg(sealed.as_slice())
            .arg(id);
        let reply: Vec<String> = self
            .timed("writing a session", call.invoke_async(&mut conn))
            .await?;
        match reply.as_slice() {
            [written, version] if written == "1" => version
                .parse()
                .map(Some)
                .map_err(|_| error::corrupt_session(&name, "version is not a number")),
            [written, _] if written == "0" => Ok(None),
            _ => Err(error::corrupt_session(
                &name,
                "unexpected reply from the session write script",
            )),
        }
    }

    async fn delete_session(
        &self,
        site: &str,
        id: &str,
        expected_version: u64,
    ) -> Result<bool, StoreError> {
        validate_name(site)?;
        validate_name(id)?;
        let mut conn = self.conn();
        let mut call = self.inner.scripts.delete_session.prepare_invoke();
        call.key(self.inner.keys.session(site, id))
            .key(self.inner.keys.session_index(site))
            .arg(expected_version.to_string())
            .arg(id);
        let deleted: i64 = self
            .timed("deleting a session", call.invoke_async(&mut conn))
            .await?;
        Ok(deleted == 1)
    }

    async fn mark_in_flight(
        &self,
        name: &str,
        fence: u64,
        generation: u64,
    ) -> Result<Option<u64>, StoreError> {
        validate_name(name)?;
        let mut conn = self.conn();
        let mut call = self.inner.scripts.mark_in_flight.prepare_invoke();
        call.key(self.inner.keys.lease(name))
            .arg(fence.to_string())
            .arg(generation.to_string());
        let reply: Vec<String> = self
            .timed("marking a refresh in flight", call.invoke_async(&mut conn))
            .await?;
        match reply.first().map(String::as_str) {
            None | Some("") => Ok(None),
            Some(previous) => parse_u64(name, "in_flight", previous).map(Some),
        }
    }

    async fn wait_for_change(&self, name: &str, seen_generation: u64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribe before reading, so a change between the two is not missed.
        let mut events = self.changes();
        let moved = |generation: Result<u64, StoreError>| match generation {
            Ok(generation) => generation != seen_generation,
            Err(e) => {
                tracing::debug!(credential = %name, error = %e, "reading the generation failed");
                false
            }
        };
        let check = || async {
            match tokio::time::timeout_at(deadline, self.generation(name)).await {
                Ok(generation) => moved(generation),
                Err(_) => false,
            }
        };
        if check().await {
            return;
        }
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return;
            }
            let poll = if self.inner.events.is_subscribed() {
                SAFETY_POLL
            } else {
                self.inner.options.poll_interval
            };
            let wake_at = deadline.min(now + poll);
            tokio::select! {
                event = events.recv() => match event {
                    Ok(ChangeEvent::Changed { name: changed, generation }) if changed == name => {
                        if generation != seen_generation {
                            return;
                        }
                    }
                    Ok(ChangeEvent::LeaseReleased { name: released }) if released == name => return,
                    Ok(ChangeEvent::Resynced) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        if check().await {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        tokio::time::sleep_until(wake_at).await;
                        if check().await {
                            return;
                        }
                    }
                },
                () = tokio::time::sleep_until(wake_at) => {
                    if check().await {
                        return;
                    }
                }
            }
        }
    }
}
