//! Redis values are bound like the embedded store's: an older sealed token set or status put
//! back does not open, the plaintext status copies are never read back, and a prefix sealed in
//! format 1 is upgraded when a replica connects.

use authkeeper_core::{
    CredentialState, CredentialStatus, CredentialStore as _, ExposeSecret as _, Precondition,
    StoreError,
};
use authkeeper_store::seal::{KEY_CHECK_KIND, KEY_CHECK_NAME, KEY_CHECK_PLAINTEXT};
use authkeeper_store::{Keyring, RedisStore};

use crate::common::{key, now, planted_tokens};
use crate::cred;
use crate::redis_server::RedisServer;

async fn connect(server: &RedisServer) -> RedisStore {
    RedisStore::connect(&server.url(), "bind:", Keyring::new(key(1)))
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

const STATE: &str = "bind:{cred:crm}:state";

#[tokio::test]
async fn an_older_sealed_value_put_back_does_not_open_and_plaintext_copies_are_ignored() {
    let server = RedisServer::start();
    let store = connect(&server).await;
    let mut conn = raw(&server).await;
    store
        .put(
            &cred("crm"),
            Precondition::None,
            &planted_tokens("one"),
            now(),
        )
        .await
        .expect("put 1");
    let old: Vec<u8> = redis::cmd("HGET")
        .arg(STATE)
        .arg("sealed")
        .query_async(&mut conn)
        .await
        .expect("hget");
    store
        .put(
            &cred("crm"),
            Precondition::Generation(1),
            &planted_tokens("two"),
            now(),
        )
        .await
        .expect("put 2");
    let needs_reauth = CredentialStatus {
        state: CredentialState::NeedsReauth,
        ..CredentialStatus::default()
    };
    assert!(
        store
            .set_status(&cred("crm"), 2, &needs_reauth)
            .await
            .expect("status")
    );
    let _: () = redis::cmd("HSET")
        .arg(STATE)
        .arg("state")
        .arg("valid")
        .arg("expires_at")
        .arg("0")
        .query_async(&mut conn)
        .await
        .expect("tamper");
    let loaded = store
        .load(&cred("crm"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(loaded.status.state, CredentialState::NeedsReauth);
    assert_eq!(
        store.list().await.expect("list")[0].expires_at,
        planted_tokens("two").expires_at
    );
    let _: () = redis::cmd("HSET")
        .arg(STATE)
        .arg("sealed")
        .arg(&old)
        .query_async(&mut conn)
        .await
        .expect("roll back");
    match store.load(&cred("crm")).await {
        Err(StoreError::Decrypt { reason, .. }) => assert!(!reason.contains("PLANTED")),
        other => panic!("an older token set opened: {other:?}"),
    }
}

#[tokio::test]
async fn a_format_1_prefix_is_upgraded_when_a_replica_connects() {
    let server = RedisServer::start();
    drop(connect(&server).await);
    let ring = Keyring::new(key(1));
    let tokens = planted_tokens("v1");
    let sealed = ring
        .seal_v1("credential", "crm", &tokens.to_secret_json())
        .expect("seal");
    let check = ring
        .seal_v1(KEY_CHECK_KIND, KEY_CHECK_NAME, KEY_CHECK_PLAINTEXT)
        .expect("seal");
    let mut conn = raw(&server).await;
    let _: () = redis::pipe()
        .cmd("DEL")
        .arg("bind:store-id")
        .ignore()
        .cmd("SET")
        .arg("bind:key-check")
        .arg(&check)
        .ignore()
        .cmd("SADD")
        .arg("bind:index")
        .arg("crm")
        .ignore()
        .cmd("HSET")
        .arg(STATE)
        .arg("generation")
        .arg("5")
        .arg("sealed")
        .arg(&sealed)
        .arg("expires_at")
        .arg(tokens.expires_at.as_millis().to_string())
        .arg("state")
        .arg("needs_reauth")
        .arg("failures")
        .arg("1")
        .arg("reason")
        .arg("invalid_grant")
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("plant format 1");
    let store = connect(&server).await;
    let loaded = store
        .load(&cred("crm"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(loaded.generation, 5);
    assert_eq!(
        loaded.tokens.access_token.expose_secret(),
        tokens.access_token.expose_secret()
    );
    assert_eq!(loaded.status.state, CredentialState::NeedsReauth);
    assert_eq!(loaded.status.reason.as_deref(), Some("invalid_grant"));
    let check: Vec<u8> = redis::cmd("GET")
        .arg("bind:key-check")
        .query_async(&mut conn)
        .await
        .expect("get");
    assert!(
        check.starts_with(b"AKS2"),
        "the key check was upgraded last"
    );
    // A format-1 value put back afterwards is refused.
    let _: () = redis::cmd("HSET")
        .arg(STATE)
        .arg("sealed")
        .arg(&sealed)
        .query_async(&mut conn)
        .await
        .expect("put back");
    let error = store.load(&cred("crm")).await.expect_err("refused");
    assert!(error.to_string().contains("format 1"), "{error}");
}
