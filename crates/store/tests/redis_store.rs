//! RedisStore beyond the conformance suite: fencing between two replicas racing on an expired
//! lease, pub/sub propagation latency, a Redis restart mid-run, sealing exactly as the embedded
//! store, the key check, and password redaction. Each test starts its own redis-server.

use std::time::{Duration, Instant, SystemTime};

use authkeeper_core::{
    CredentialStore as _, ExposeSecret as _, LeaseAttempt, Precondition, StoreError, Timestamp,
    TokenSet, WriteOutcome,
};
use authkeeper_store::Binding;
use authkeeper_store::redis::ChangeEvent;
use authkeeper_store::seal::CREDENTIAL_KIND;
use authkeeper_store::{Keyring, RedisOptions, RedisStore, RedisUrl};

use crate::common::{contains, key, planted_tokens};
use crate::cred;
use crate::redis_server::RedisServer;

fn wall_now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

fn tokens(tag: &str) -> TokenSet {
    planted_tokens(tag)
}

async fn connect(server: &RedisServer, prefix: &str) -> RedisStore {
    RedisStore::connect(&server.url(), prefix, Keyring::new(key(1)))
        .await
        .expect("connect to redis")
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_rejects_the_stale_replica_after_its_lease_expired() {
    let server = RedisServer::start();
    let replica_a = connect(&server, "ak:").await;
    let replica_b = connect(&server, "ak:").await;
    assert_eq!(
        replica_a
            .put(
                &cred("crm"),
                Precondition::None,
                &tokens("gen1"),
                wall_now()
            )
            .await
            .unwrap(),
        WriteOutcome::Written { generation: 1 }
    );

    // A takes the lease with a short TTL, then its refresh is slow: it outlives the TTL.
    let ttl = Duration::from_millis(300);
    let LeaseAttempt::Acquired(lease_a) = replica_a
        .try_acquire_lease(&cred("crm"), "replica-a", wall_now(), ttl)
        .await
        .unwrap()
    else {
        panic!("A could not take a free lease");
    };
    let started = Instant::now();
    // B polls for the lease; it is busy until A's TTL has passed.
    let mut busy_seen = 0;
    let lease_b = loop {
        match replica_b
            .try_acquire_lease(
                &cred("crm"),
                "replica-b",
                wall_now(),
                Duration::from_secs(30),
            )
            .await
            .unwrap()
        {
            LeaseAttempt::Acquired(lease) => break lease,
            LeaseAttempt::Busy { held_until } => {
                busy_seen += 1;
                assert_eq!(held_until, lease_a.expires_at);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "B never got the lease"
        );
    };
    assert!(busy_seen > 0, "B took a lease that was still held");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(
        lease_b.took_over_abandoned,
        "B must see that A never released"
    );
    assert!(lease_b.fence > lease_a.fence);

    // B refreshes and writes under its fence.
    let written = replica_b
        .put(
            &cred("crm"),
            Precondition::Fenced {
                generation: 1,
                fence: lease_b.fence,
            },
            &tokens("from-B"),
            wall_now(),
        )
        .await
        .unwrap();
    assert_eq!(written, WriteOutcome::Written { generation: 2 });

    // A's IdP call finally returns; its write, fenced by the old lease, is rejected.
    let stale = replica_a
        .put(
            &cred("crm"),
            Precondition::Fenced {
                generation: 1,
                fence: lease_a.fence,
            },
            &tokens("from-A"),
            wall_now(),
        )
        .await
        .unwrap();
    println!(
        "rejected stale write: replica A (fence {}) after B (fence {}) -> {stale:?}",
        lease_a.fence, lease_b.fence
    );
    assert_eq!(
        stale,
        WriteOutcome::Conflict {
            current_generation: 2
        }
    );
    // Even with the right generation, the old fence alone is refused.
    let stale = replica_a
        .put(
            &cred("crm"),
            Precondition::Fenced {
                generation: 2,
                fence: lease_a.fence,
            },
            &tokens("from-A"),
            wall_now(),
        )
        .await
        .unwrap();
    assert_eq!(
        stale,
        WriteOutcome::Conflict {
            current_generation: 2
        }
    );

    // A can neither renew nor release B's lease.
    assert!(
        replica_a
            .renew_lease(&lease_a, wall_now(), ttl)
            .await
            .unwrap()
            .is_none()
    );
    replica_a.release_lease(lease_a).await.unwrap();
    assert!(matches!(
        replica_a
            .try_acquire_lease(&cred("crm"), "replica-c", wall_now(), ttl)
            .await
            .unwrap(),
        LeaseAttempt::Busy { .. }
    ));

    let stored = replica_a.load(&cred("crm")).await.unwrap().expect("stored");
    assert_eq!(stored.generation, 2);
    assert_eq!(
        stored.tokens.access_token.expose_secret(),
        "PLANTED-ACCESS-from-B"
    );
    assert_eq!(
        stored
            .tokens
            .refresh_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned()),
        Some("PLANTED-REFRESH-from-B".to_owned())
    );

    // B renews while its refresh runs, then releases; the next holder is not a takeover.
    assert!(
        replica_b
            .renew_lease(&lease_b, wall_now(), Duration::from_secs(60))
            .await
            .unwrap()
            .is_some()
    );
    replica_b.release_lease(lease_b).await.unwrap();
    let LeaseAttempt::Acquired(next) = replica_a
        .try_acquire_lease(&cred("crm"), "replica-a", wall_now(), ttl)
        .await
        .unwrap()
    else {
        panic!("lease not free after release");
    };
    assert!(!next.took_over_abandoned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_wakes_the_other_replica_within_milliseconds() {
    const WRITES: u64 = 200;
    let server = RedisServer::start();
    let writer = connect(&server, "ak:").await;
    let waiter = connect(&server, "ak:").await;
    assert!(
        waiter.is_subscribed(),
        "the waiter is not subscribed after connect"
    );
    let mut changes = waiter.changes();
    writer
        .put(&cred("p"), Precondition::None, &tokens("0"), wall_now())
        .await
        .unwrap();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<u64>(1);
    let (woke_tx, mut woke_rx) = tokio::sync::mpsc::channel::<Instant>(1);
    let waiting = tokio::spawn({
        let waiter = waiter.clone();
        async move {
            for seen in 1..=WRITES {
                ready_tx.send(seen).await.unwrap();
                waiter
                    .wait_for_change(&cred("p"), seen, Duration::from_secs(5))
                    .await;
                woke_tx.send(Instant::now()).await.unwrap();
            }
        }
    });
    let mut latencies = Vec::new();
    for generation in 1..=WRITES {
        assert_eq!(ready_rx.recv().await, Some(generation));
        // Let the waiter get past its initial read and block on events.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let written_at = Instant::now();
        let outcome = writer
            .put(
                &cred("p"),
                Precondition::Generation(generation),
                &tokens("n"),
                wall_now(),
            )
            .await
            .unwrap();
        assert_eq!(
            outcome,
            WriteOutcome::Written {
                generation: generation + 1
            }
        );
        let woke_at = woke_rx.recv().await.unwrap();
        latencies.push(woke_at.saturating_duration_since(written_at));
    }
    waiting.await.unwrap();
    latencies.sort();
    let (p50, p99, max) = (
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    println!(
        "propagation write -> other replica woken, {WRITES} writes: p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");

    // The broker-facing stream saw every generation, in order.
    let mut generations = Vec::new();
    while let Ok(event) = changes.try_recv() {
        if let ChangeEvent::Changed { name, generation } = event {
            assert_eq!(name, "p");
            generations.push(generation);
        }
    }
    assert_eq!(generations, (1..=WRITES + 1).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_fails_fast_and_recovers_by_itself() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let timeout = Duration::from_millis(800);
    let options = || {
        RedisOptions::default()
            .with_prefix("ak:")
            .with_op_timeout(timeout)
            .with_connect_timeout(Duration::from_millis(500))
    };
    let url = || RedisUrl::parse(&server.url()).unwrap();
    let writer = RedisStore::connect_with(url(), Keyring::new(key(1)), options())
        .await
        .unwrap();
    let waiter = RedisStore::connect_with(url(), Keyring::new(key(1)), options())
        .await
        .unwrap();
    writer
        .put(
            &cred("r"),
            Precondition::None,
            &tokens("before"),
            wall_now(),
        )
        .await
        .unwrap();
    let mut changes = waiter.changes();

    server.stop();
    let bound = timeout + Duration::from_millis(500);
    let unavailable = |what: &str, result: Result<(), StoreError>, took: Duration| {
        println!("{what} with Redis down: {took:?}");
        assert!(took < bound, "{what} took {took:?}");
        match result {
            Err(StoreError::Unavailable { message, .. }) => message,
            other => panic!("{what} gave {other:?}, expected Unavailable"),
        }
    };
    let t = Instant::now();
    let r = writer.load(&cred("r")).await.map(|_| ());
    unavailable("load", r, t.elapsed());
    let t = Instant::now();
    let r = writer
        .put(&cred("r"), Precondition::None, &tokens("lost"), wall_now())
        .await
        .map(|_| ());
    unavailable("put", r, t.elapsed());
    let t = Instant::now();
    let r = writer
        .try_acquire_lease(&cred("r"), "me", wall_now(), Duration::from_secs(10))
        .await
        .map(|_| ());
    let message = unavailable("try_acquire_lease", r, t.elapsed());
    println!("error: {message}");
    let t = Instant::now();
    let r = writer.list().await.map(|_| ());
    unavailable("list", r, t.elapsed());
    let t = Instant::now();
    waiter
        .wait_for_change(&cred("r"), 1, Duration::from_millis(300))
        .await;
    assert!(
        t.elapsed() < Duration::from_millis(300) + bound,
        "wait_for_change hung"
    );
    let health = writer.health().await;
    println!("health with Redis down: {health:?}");
    assert!(!health.is_ready());
    assert!(health.reason.is_some());

    let down_at = Instant::now();
    server.restart();
    let recovered = loop {
        match writer.load(&cred("r")).await {
            Ok(stored) => break stored,
            Err(e) => {
                assert!(
                    down_at.elapsed() < Duration::from_secs(15),
                    "no recovery: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    println!(
        "commands recovered {:?} after the restart",
        down_at.elapsed()
    );
    let stored = recovered.expect("the AOF kept the credential");
    assert_eq!(stored.generation, 1);
    assert_eq!(
        stored.tokens.access_token.expose_secret(),
        "PLANTED-ACCESS-before"
    );
    while !waiter.is_subscribed() {
        assert!(
            down_at.elapsed() < Duration::from_secs(15),
            "pub/sub never resubscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "pub/sub resubscribed {:?} after the restart",
        down_at.elapsed()
    );
    let mut saw = (false, false);
    while let Ok(event) = changes.try_recv() {
        saw.0 |= event == ChangeEvent::Disconnected;
        saw.1 |= event == ChangeEvent::Resynced;
    }
    assert_eq!(saw, (true, true), "Disconnected then Resynced expected");
    assert!(writer.health().await.is_ready());

    // Scripts are loaded again (NOSCRIPT is handled) and events flow again.
    let wake = tokio::spawn({
        let waiter = waiter.clone();
        async move {
            let t = Instant::now();
            waiter
                .wait_for_change(&cred("r"), 1, Duration::from_secs(5))
                .await;
            t.elapsed()
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let lease = match writer
        .try_acquire_lease(&cred("r"), "me", wall_now(), Duration::from_secs(10))
        .await
        .unwrap()
    {
        LeaseAttempt::Acquired(lease) => lease,
        LeaseAttempt::Busy { .. } => panic!("busy after restart"),
    };
    let outcome = writer
        .put(
            &cred("r"),
            Precondition::Fenced {
                generation: 1,
                fence: lease.fence,
            },
            &tokens("after"),
            wall_now(),
        )
        .await
        .unwrap();
    assert_eq!(outcome, WriteOutcome::Written { generation: 2 });
    let woke_after = wake.await.unwrap();
    assert!(
        woke_after < Duration::from_secs(1),
        "waiter woke after {woke_after:?}"
    );
    writer.release_lease(lease).await.unwrap();
}

#[tokio::test]
async fn values_are_sealed_exactly_like_the_embedded_store() {
    let server = RedisServer::start();
    let store = connect(&server, "ak:").await;
    let planted = planted_tokens("redis");
    authkeeper_core::store::import(&store, &cred("crm"), &planted, wall_now())
        .await
        .unwrap();
    let lease = match store
        .try_acquire_lease(&cred("crm"), "me", wall_now(), Duration::from_secs(30))
        .await
        .unwrap()
    {
        LeaseAttempt::Acquired(lease) => lease,
        LeaseAttempt::Busy { .. } => panic!("busy"),
    };

    let mut conn = raw(&server).await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("ak:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "ak:index",
            "ak:key-check",
            "ak:layout",
            "ak:store-id",
            "ak:{cred:crm}:lease",
            "ak:{cred:crm}:state"
        ]
    );
    // No secret in any key, in any form Redis holds it.
    for key in &keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        for secret in [
            "PLANTED-ACCESS",
            "PLANTED-REFRESH",
            "PLANTED-ID",
            "PLANTED-EXTRA",
        ] {
            assert!(!contains(&dump, secret.as_bytes()), "{secret} in {key}");
        }
    }
    // The sealed value opens with the keyring and binding of the embedded store.
    let sealed: Vec<u8> = redis::cmd("HGET")
        .arg("ak:{cred:crm}:state")
        .arg("sealed")
        .query_async(&mut conn)
        .await
        .unwrap();
    let ring = Keyring::new(key(1));
    let generation = store.load(&cred("crm")).await.unwrap().unwrap().generation;
    let bound =
        |name, generation| Binding::new(store.store_id(), CREDENTIAL_KIND, name, generation);
    let opened = ring
        .open(&bound("crm", generation), &sealed)
        .expect("open like sqlite");
    let tokens = TokenSet::from_secret_json(&opened).unwrap();
    assert_eq!(tokens.access_token.expose_secret(), "PLANTED-ACCESS-redis");
    assert!(
        ring.open(&bound("other", generation), &sealed).is_err(),
        "AAD must bind the name"
    );
    assert!(
        ring.open(&bound("crm", generation + 1), &sealed).is_err(),
        "AAD must bind the generation"
    );

    // Sealed values copied to another credential do not open (associated data).
    let sealed_status: Vec<u8> = redis::cmd("HGET")
        .arg("ak:{cred:crm}:state")
        .arg("sealed_status")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("ak:{cred:copy}:state")
        .arg(
            &[
                "generation",
                "1",
                "expires_at",
                "0",
                "state",
                "valid",
                "failures",
                "0",
            ][..],
        )
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("ak:{cred:copy}:state")
        .arg("sealed")
        .arg(&sealed)
        .arg("sealed_status")
        .arg(&sealed_status)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(matches!(
        store.load(&cred("copy")).await,
        Err(StoreError::Decrypt { .. })
    ));

    for key in ["ak:{cred:crm}:state", "ak:{cred:crm}:lease"] {
        let bytes: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        println!("MEMORY USAGE {key}: {bytes} bytes");
    }
    store.release_lease(lease).await.unwrap();
}

#[tokio::test]
async fn another_key_is_refused_at_connect() {
    let server = RedisServer::start();
    let _first = connect(&server, "ak:").await;
    let err = RedisStore::connect(&server.url(), "ak:", Keyring::new(key(2)))
        .await
        .expect_err("a replica with another key must not connect");
    assert!(matches!(err, StoreError::Decrypt { .. }), "{err:?}");
    assert!(err.to_string().contains("AUTHKEEPER_KEY"), "{err}");
    // Another prefix is another deployment: its own key check.
    RedisStore::connect(&server.url(), "other:", Keyring::new(key(2)))
        .await
        .expect("another prefix");
    for bad in ["a{b}", "with space"] {
        assert!(
            RedisStore::connect(&server.url(), bad, Keyring::new(key(1)))
                .await
                .is_err()
        );
    }
}

#[tokio::test]
async fn a_password_never_shows() {
    const PASSWORD: &str = "S3cret-PW-zq81";
    let server = RedisServer::start_with(&[
        "--user",
        "default",
        "off",
        "--user",
        "alice",
        "on",
        ">S3cret-PW-zq81",
        "~*",
        "&*",
        "+@all",
    ]);
    let port = server.port();
    let good = format!("redis://alice:{PASSWORD}@127.0.0.1:{port}/0");
    let store = RedisStore::connect(&good, "ak:", Keyring::new(key(1)))
        .await
        .unwrap();
    store
        .put(
            &cred("crm"),
            Precondition::None,
            &planted_tokens("pw"),
            wall_now(),
        )
        .await
        .unwrap();
    let mut shown = vec![
        format!("{store:?}"),
        format!("{}", store.url()),
        format!("{:?}", store.url()),
        format!("{:?}", RedisOptions::default()),
    ];
    assert!(shown[0].contains("alice:***@127.0.0.1"), "{}", shown[0]);

    let wrong = format!("redis://alice:{PASSWORD}x@127.0.0.1:{port}/0");
    let err = RedisStore::connect(&wrong, "ak:", Keyring::new(key(1)))
        .await
        .unwrap_err();
    shown.push(format!("{err} / {err:?}"));
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        shown.push(format!("{cause} / {cause:?}"));
        source = cause.source();
    }

    let closed = format!("redis://alice:{PASSWORD}@127.0.0.1:1/0");
    let err = RedisStore::connect(&closed, "ak:", Keyring::new(key(1)))
        .await
        .unwrap_err();
    shown.push(format!("{err} / {err:?}"));

    drop(server);
    let err = store.load(&cred("crm")).await.unwrap_err();
    shown.push(format!("{err} / {err:?}"));
    shown.push(format!("{:?}", store.health().await));
    for text in &shown {
        println!("{text}");
        assert!(!text.contains(PASSWORD), "password shown in: {text}");
    }
}
