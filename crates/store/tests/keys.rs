//! Key sources: AUTHKEEPER_KEY parsing, key files, and refusing to re-key a store silently.

use std::os::unix::fs::PermissionsExt as _;

use authkeeper_core::{CredentialStore as _, ExposeSecret as _, Precondition, StoreError};
use authkeeper_store::key::{
    self, KeyError, KeyOrigin, KeySettings, default_key_file, parse_env_key, resolve_key,
};
use authkeeper_store::{Keyring, SealKey, SqliteStore};
use zeroize::Zeroizing;

use crate::common::{fixture, key, now, planted_tokens};
use crate::cred;

#[test]
fn bad_env_keys_are_clear_errors_without_the_key() {
    let err = parse_env_key("this is not base64!").expect_err("not base64");
    assert!(matches!(err, KeyError::NotBase64 { .. }));
    let text = err.to_string();
    assert!(
        text.contains("AUTHKEEPER_KEY") && text.contains("base64"),
        "{text}"
    );
    assert!(!text.contains("this is not"), "{text}");

    let err = parse_env_key("c2hvcnQ=").expect_err("5 bytes");
    assert!(
        matches!(err, KeyError::WrongLength { len: 5, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("exactly 32 bytes"));
    let long = SealKey::generate().to_base64().to_string() + "AAAA";
    assert!(matches!(
        parse_env_key(&long),
        Err(KeyError::WrongLength { .. }) | Err(KeyError::NotBase64 { .. })
    ));

    let good = SealKey::generate();
    assert_eq!(
        parse_env_key(&good.to_base64()).expect("good").id(),
        good.id()
    );
}

#[test]
fn env_key_wins_and_writes_no_key_file() {
    let fx = fixture();
    let env_key = key(9);
    let settings = KeySettings {
        env_key: Some(Zeroizing::new(env_key.to_base64().to_string())),
        key_file: None,
    };
    assert!(!format!("{settings:?}").contains(env_key.to_base64().as_str()));
    let (store, origin) = SqliteStore::open_with_settings(&fx.db, &settings).expect("open");
    assert_eq!(origin, KeyOrigin::Env);
    assert_eq!(store.key_id(), env_key.id());
    assert!(!default_key_file(&fx.db).exists());

    let bad = KeySettings {
        env_key: Some(Zeroizing::new("nope".to_owned())),
        key_file: None,
    };
    let err = resolve_key(&bad, &fx.db).expect_err("bad env key");
    assert!(err.to_string().contains("AUTHKEEPER_KEY"), "{err}");
    let err = SqliteStore::open_with_settings(&fx.db, &bad).expect_err("bad env key");
    assert!(matches!(err, StoreError::Other { .. }), "{err:?}");
}

#[tokio::test]
async fn explicit_key_file_is_used_and_must_exist() {
    let fx = fixture();
    let key_file = fx.dir.path().join("custom.key");
    let settings = KeySettings {
        env_key: None,
        key_file: Some(key_file.clone()),
    };
    assert!(matches!(
        resolve_key(&settings, &fx.db),
        Err(KeyError::Read { .. })
    ));

    key::write_key_file(&key_file, &Keyring::new(key(4))).expect("write");
    // Readable by others: refused, naming the file and what to do, and nothing is created.
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let error = SqliteStore::open_with_settings(&fx.db, &settings).expect_err("insecure");
        let source = std::error::Error::source(&error).map(ToString::to_string);
        let text = error.to_string() + &source.unwrap_or_default();
        assert!(text.contains("chmod 600"), "{text}");
        assert!(!fx.db.exists(), "a store was created with an insecure key");
    }
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (store, origin) = SqliteStore::open_with_settings(&fx.db, &settings).expect("open");
    assert_eq!(origin, KeyOrigin::KeyFile(key_file.clone()));
    assert_eq!(store.key_id(), key(4).id());
    store
        .put(&cred("x"), Precondition::None, &planted_tokens("x"), now())
        .await
        .expect("put");
    assert!(!default_key_file(&fx.db).exists());
}

#[tokio::test]
async fn a_store_whose_key_file_vanished_is_not_silently_rekeyed() {
    let fx = fixture();
    let (store, origin) =
        SqliteStore::open_with_settings(&fx.db, &KeySettings::default()).expect("open");
    assert!(origin.was_generated());
    store
        .put(
            &cred("crm"),
            Precondition::None,
            &planted_tokens("v"),
            now(),
        )
        .await
        .expect("put");
    drop(store);
    let key_file = default_key_file(&fx.db);
    let saved = std::fs::read(&key_file).expect("key");
    std::fs::remove_file(&key_file).expect("remove");

    let err = resolve_key(&KeySettings::default(), &fx.db).expect_err("must refuse");
    assert!(matches!(err, KeyError::MissingKeyFile { .. }), "{err:?}");
    assert!(err.to_string().contains("restore the key file"), "{err}");
    assert!(!key_file.exists(), "a new key file was generated");

    std::fs::write(&key_file, saved).expect("restore");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (store, _) =
        SqliteStore::open_with_settings(&fx.db, &KeySettings::default()).expect("reopen");
    let loaded = store
        .load(&cred("crm"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(
        loaded.tokens.access_token.expose_secret(),
        "PLANTED-ACCESS-v"
    );
}
