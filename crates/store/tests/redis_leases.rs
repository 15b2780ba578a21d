//! Refresh leases on Redis are judged by Redis' own clock: a replica whose clock runs 30 s ahead
//! cannot take a live lease over, so the provider sees one redemption per generation even while
//! a slow token request outlives what the fast replica believes is the lease's expiry.

use std::sync::Arc;
use std::time::Duration;

use authkeeper_core::{
    Clock as _, ExpiryDefaults, Keeper, KeeperSettings, SystemClock, TokenResponse,
};
use authkeeper_mock::{Knobs, MockConfig, MockIdp};
use authkeeper_store::{Keyring, RedisStore};

use crate::common::{key, mock_credential};
use crate::cred;
use crate::redis_server::RedisServer;

fn keeper(store: &RedisStore, idp: &MockIdp, offset: Duration) -> Keeper {
    let clock = Arc::new(SystemClock::with_offset_millis(offset.as_millis() as i64));
    Keeper::builder(Arc::new(store.clone()), clock)
        .settings(KeeperSettings {
            // The shortest lease the floor allows (2 × 5 s + 5 s): the fast replica's clock is
            // 30 s ahead, so by its clock the slow holder's lease expired long ago.
            lease_ttl: Duration::from_secs(15),
            ..KeeperSettings::default()
        })
        .credential(cred("api"), mock_credential(idp))
        .build()
        .expect("keeper")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_with_a_clock_30s_ahead_never_takes_a_live_lease() {
    let server = RedisServer::start();
    let idp = MockIdp::start(MockConfig::default().with_knobs(Knobs {
        access_ttl_ms: 3_600_000,
        rotate_refresh_tokens: true,
        reuse_revokes_grant: true,
        token_latency_ms: 2_000,
        ..Knobs::default()
    }))
    .await
    .expect("idp");
    let store_a = RedisStore::connect(&server.url(), "skew:", Keyring::new(key(1)))
        .await
        .expect("connect");
    let store_b = RedisStore::connect(&server.url(), "skew:", Keyring::new(key(1)))
        .await
        .expect("connect");
    let grant = serde_json::to_vec(&idp.mint_grant(None, None).expect("grant")).expect("json");
    let now = SystemClock::new().now();
    let tokens = TokenResponse::parse_tokens(&grant)
        .expect("tokens")
        .into_token_set(now, &ExpiryDefaults::default());
    authkeeper_core::store::import(&store_a, &cred("api"), &tokens, now)
        .await
        .expect("import");
    let on_time = keeper(&store_a, &idp, Duration::ZERO);
    let ahead = keeper(&store_b, &idp, Duration::from_secs(30));
    // The on-time replica starts a refresh that takes 2 s at the provider...
    let slow = tokio::spawn({
        let keeper = on_time.clone();
        async move { keeper.rejected("api", 1).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...and the replica whose clock runs 30 s ahead asks for a newer token meanwhile: it must
    // wait for the holder, not take the lease over and redeem the same refresh token again.
    let fast = ahead
        .rejected("api", 1)
        .await
        .expect("the fast replica's token");
    let slow = slow.await.expect("task").expect("the slow replica's token");
    assert_eq!(slow.generation(), 2);
    assert_eq!(
        fast.generation(),
        2,
        "the fast replica got the holder's token"
    );
    let stats = idp.stats();
    assert_eq!(
        stats.refresh_calls, 1,
        "one redemption per generation: {stats:?}"
    );
    assert_eq!(stats.reuse_detected, 0, "{stats:?}");
    assert_eq!(stats.grants_revoked, 0, "{stats:?}");
}
