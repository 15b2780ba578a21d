//! Shared helpers: temp stores, keys, and raw file inspection.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use authkeeper_core::{Timestamp, TokenSet};
use authkeeper_store::{Keyring, SealKey, SqliteStore};
use serde_json::{Map, Value};
use tempfile::TempDir;
use zeroize::Zeroizing;

/// A temp dir and the store path inside it.
pub struct Fixture {
    pub dir: TempDir,
    pub db: PathBuf,
}

pub fn fixture() -> Fixture {
    let dir = authkeeper_testkit::temp_dir();
    let db = dir.path().join("authkeeper.db");
    Fixture { dir, db }
}

pub fn key(byte: u8) -> SealKey {
    SealKey::new(Zeroizing::new([byte; 32]))
}

pub fn now() -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000)
}

pub fn open(db: &Path, key: &SealKey) -> SqliteStore {
    SqliteStore::open(db, Keyring::new(key.clone())).expect("open store")
}

/// A token set whose secrets contain `marker` (registered with the planted-secret scan).
pub fn planted_tokens(marker: &str) -> TokenSet {
    for kind in ["ACCESS", "REFRESH", "ID", "EXTRA"] {
        authkeeper_testkit::register(&format!("PLANTED-{kind}-{marker}"));
    }
    let mut extra = Map::new();
    extra.insert(
        "x_vendor_secret".to_owned(),
        Value::String(format!("PLANTED-EXTRA-{marker}")),
    );
    TokenSet {
        access_token: authkeeper_core::secret::AccessToken::from(format!(
            "PLANTED-ACCESS-{marker}"
        )),
        token_type: "Bearer".to_owned(),
        refresh_token: Some(authkeeper_core::secret::RefreshToken::from(format!(
            "PLANTED-REFRESH-{marker}"
        ))),
        id_token: Some(authkeeper_core::secret::IdToken::from(format!(
            "PLANTED-ID-{marker}"
        ))),
        scope: Some("read".to_owned()),
        issued_at: now(),
        expires_at: Timestamp::from_millis(now().as_millis() + 3_600_000),
        refresh_token_expires_at: None,
        extra,
    }
}

/// Every regular file under `dir`, with its bytes.
pub fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut text = path.as_os_str().to_owned();
    text.push(suffix);
    PathBuf::from(text)
}

/// A realistic Playwright `storageState` document of about 2 KB: 10 cookies with random values
/// (session ids, CSRF and analytics tokens) and localStorage for 2 origins. Every secret value
/// starts with `PLANTED-SESSION-{marker}` so raw-storage checks can look for it.
pub fn realistic_storage_state(marker: &str) -> Vec<u8> {
    use rand::Rng as _;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::thread_rng();
    let mut random = |len: usize| -> String {
        (0..len)
            .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
            .collect()
    };
    // (name, random length, secret): secret values carry the planted marker.
    let cookies: Vec<Value> = [
        ("sessionid", 32, true),
        ("csrftoken", 32, true),
        ("remember_token", 32, true),
        ("_ga", 20, false),
        ("_gid", 20, false),
        ("__cf_bm", 43, false),
        ("auth_state", 16, true),
        ("lang", 5, false),
        ("consent", 10, false),
        ("li_at", 40, true),
    ]
    .iter()
    .enumerate()
    .map(|(i, (name, len, secret))| {
        let value = if *secret {
            let value = format!("PLANTED-SESSION-{marker}-{}", random(*len));
            authkeeper_testkit::register(&value);
            value
        } else {
            random(*len)
        };
        serde_json::json!({
            "name": name,
            "value": value,
            "domain": if i % 3 == 0 { "www.example.com" } else { ".example.com" },
            "path": "/",
            "expires": 1_767_225_600 + i as i64 * 3600,
            "httpOnly": secret,
            "secure": true,
            "sameSite": if i % 2 == 0 { "Lax" } else { "None" },
        })
    })
    .collect();
    let origins = serde_json::json!([
        {
            "origin": "https://www.example.com",
            "localStorage": [
                { "name": "user_prefs", "value": "{\"theme\":\"dark\",\"currency\":\"EUR\"}" },
                { "name": "access_token", "value": format!("PLANTED-SESSION-{marker}-{}", random(32)) },
            ]
        },
        {
            "origin": "https://accounts.example.com",
            "localStorage": [
                { "name": "device_id", "value": random(36) },
            ]
        }
    ]);
    serde_json::to_vec(&serde_json::json!({ "cookies": cookies, "origins": origins }))
        .expect("serialize")
}

/// Turns the file of a new, empty store into one written by authkeeper before sealing format 2
/// (schema 5, no store id, a format-1 key check sealed by `ring`).
pub fn make_format_1(raw: &rusqlite::Connection, ring: &Keyring) {
    use authkeeper_store::seal::{KEY_CHECK_KIND, KEY_CHECK_NAME, KEY_CHECK_PLAINTEXT};
    let check = ring
        .seal_v1(KEY_CHECK_KIND, KEY_CHECK_NAME, KEY_CHECK_PLAINTEXT)
        .expect("seal");
    raw.execute_batch(
        "ALTER TABLE credentials DROP COLUMN sealed_status;
         DELETE FROM meta WHERE key = 'store_id';
         PRAGMA user_version = 5;",
    )
    .expect("downgrade to schema 5");
    raw.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'key_check'",
        [check],
    )
    .expect("format-1 key check");
}

/// The settings of a refresh_token credential of the mock IdP `idp` (basic auth, 5 s timeout).
pub fn mock_credential(
    idp: &authkeeper_mock::MockIdp,
) -> authkeeper_core::config::CredentialSettings {
    use authkeeper_core::grant::{ClientAuth, Endpoint, GrantKind, OAuthClientConfig};
    authkeeper_core::config::CredentialSettings {
        client: OAuthClientConfig {
            endpoint: Endpoint::TokenUrl(idp.token_url().parse().expect("url")),
            client_id: "mock-client".into(),
            client_secret: Some(authkeeper_core::secret::ClientSecret::from("mock-secret")),
            auth: ClientAuth::ClientSecretBasic,
            scopes: Vec::new(),
            audience: None,
            extra_params: Vec::new(),
            timeout: std::time::Duration::from_secs(5),
            proxy: None,
        },
        grant: GrantKind::RefreshToken,
        policy: authkeeper_core::policy::RefreshPolicy::default(),
        expiry: authkeeper_core::ExpiryDefaults::default(),
        heartbeat: false,
    }
}
