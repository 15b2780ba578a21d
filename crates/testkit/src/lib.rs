//! Test support shared by authkeeper's crates, for the planted-secret scan of `scripts/test`.
//!
//! Every secret a test handles carries the marker [`MARKER`]: the tests' own values come from
//! [`planted`], and the mock identity provider and login app mark what they mint with
//! [`mark`]. After the test run, `scripts/scan-planted` searches everything the tests left
//! behind (their temporary directories, kept by [`temp_dir`], the logs and the captured test
//! output) for the marker and fails on a hit outside the files a test declared plaintext on
//! purpose with [`expect_plaintext`] (a grant a login command reads, an exported session).
//!
//! The scan is on when `scripts/test` sets [`SCAN_DIR_ENV`]; otherwise [`mark`] changes
//! nothing, [`temp_dir`] cleans up as usual and nothing is recorded.

use std::io::Write as _;
use std::path::Path;

use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// The marker every planted secret contains.
pub const MARKER: &str = "PLANTED";
/// The directory of the scan's records (`planted.txt`, `plaintext-allowed.txt`), set by
/// `scripts/test`. Temporary directories are kept while it is set.
pub const SCAN_DIR_ENV: &str = "AUTHKEEPER_SCAN_DIR";

fn scan_dir() -> Option<std::path::PathBuf> {
    std::env::var_os(SCAN_DIR_ENV).map(Into::into)
}

/// Appends `line` to the scan record `file`, if the scan is on.
fn record(file: &str, line: &str) {
    let Some(dir) = scan_dir() else { return };
    // O_APPEND writes of one short line are atomic across the test processes.
    if let Ok(mut out) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(file))
    {
        let _ = out.write_all(format!("{line}\n").as_bytes());
    }
}

/// Records that `secret` was planted (only a hash of it: the record must not hold the secret).
pub fn register(secret: &str) {
    if scan_dir().is_some() {
        record(
            "planted.txt",
            &hex::encode(&Sha256::digest(secret.as_bytes())[..12]),
        );
    }
}

/// A secret value for a test: `PLANTED-{label}-{16 random hex digits}`, registered.
pub fn planted(label: &str) -> String {
    let mut nonce = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut nonce);
    let secret = format!("{MARKER}-{label}-{}", hex::encode(nonce));
    register(&secret);
    secret
}

/// Marks a secret minted by a test double (mock IdP, mock login app): while the scan is on, the
/// marker is prepended and the value registered; otherwise it is returned unchanged (the demo
/// shows ordinary tokens). `secret` must stay valid with the prefix (opaque tokens, base64url).
pub fn mark(secret: String) -> String {
    if scan_dir().is_none() {
        return secret;
    }
    let marked = format!("{MARKER}{secret}");
    register(&marked);
    marked
}

/// Declares that a test writes planted secrets to `path` in plaintext on purpose (input it feeds
/// a program, an export it asked for): the scan skips that file.
pub fn expect_plaintext(path: &Path) {
    record("plaintext-allowed.txt", &path.display().to_string());
}

/// A temporary directory under `TMPDIR`, removed when dropped, except while the scan is on: then
/// it stays for the scan to inspect (`scripts/test` removes the whole scan tree first).
pub fn temp_dir() -> tempfile::TempDir {
    let mut dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
    if scan_dir().is_some() {
        dir.disable_cleanup(true);
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planted_values_carry_the_marker_and_differ() {
        let (a, b) = (planted("x"), planted("x"));
        assert!(a.starts_with("PLANTED-x-") && a.len() == "PLANTED-x-".len() + 16);
        assert_ne!(a, b);
    }
}
