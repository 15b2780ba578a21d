//! The shared conformance suites (credential store and record store), run on RedisStore (each test its own redis-server).

use authkeeper_store::{Keyring, LeaseClock, RedisOptions, RedisStore, RedisUrl, SealKey};

use crate::redis_server::RedisServer;

async fn make() -> (RedisStore, RedisServer) {
    let server = RedisServer::start();
    // The suite drives lease expiry with its own `now` (a fixed past time): judge leases by the
    // caller's clock here. `redis_leases` tests Redis' own clock, the default.
    let store = RedisStore::connect_with(
        RedisUrl::parse(&server.url()).expect("url"),
        Keyring::new(SealKey::generate()),
        RedisOptions::default()
            .with_prefix("conformance:")
            .with_lease_clock(LeaseClock::Caller),
    )
    .await
    .expect("connect to redis");
    (store, server)
}

authkeeper_core::credential_store_conformance_tests!(make);
authkeeper_core::record_store_conformance_tests!(make);
