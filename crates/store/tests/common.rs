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
    let dir = tempfile::tempdir().expect("temp dir");
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

/// A token set whose secrets contain `marker`.
pub fn planted_tokens(marker: &str) -> TokenSet {
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
            format!("PLANTED-SESSION-{marker}-{}", random(*len))
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
