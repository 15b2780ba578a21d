//! The shared conformance suites (credential store and record store), run on RedisStore (each test its own redis-server).

use authkeeper_store::{Keyring, RedisStore, SealKey};

use crate::redis_server::RedisServer;

async fn make() -> (RedisStore, RedisServer) {
    let server = RedisServer::start();
    let store = RedisStore::connect(
        &server.url(),
        "conformance:",
        Keyring::new(SealKey::generate()),
    )
    .await
    .expect("connect to redis");
    (store, server)
}

authkeeper_core::credential_store_conformance_tests!(make);
authkeeper_core::record_store_conformance_tests!(make);
