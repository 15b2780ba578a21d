//! Where the store key comes from: `AUTHKEEPER_KEY`, an explicit key file, or a key file generated
//! beside the store on first use.
//!
//! Key file format: text, one base64 key (32 bytes) per line. The first key is the primary (it
//! seals); further keys are previous keys still accepted for opening. Blank lines and lines
//! starting with `#` are ignored. Key files are created with mode 0600 and replaced atomically.
//! This module never prints; [`KeyOrigin::Generated`] tells the caller to announce a new key.

use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use rand::RngCore as _;
use zeroize::Zeroizing;

use crate::seal::{Keyring, SealKey};

/// The environment variable holding a base64 key.
pub const KEY_ENV: &str = "AUTHKEEPER_KEY";

/// Why a key could not be loaded or written. Never contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not base64.
    #[error(
        "{origin}: the key is not valid base64 (expected base64 of 32 random bytes, e.g. from `openssl rand -base64 32`)"
    )]
    NotBase64 {
        /// Where the key came from (`AUTHKEEPER_KEY`, or a key file and line).
        origin: String,
    },
    /// The key does not decode to 32 bytes.
    #[error("{origin}: the key decodes to {len} bytes; it must be exactly 32 bytes")]
    WrongLength {
        /// Where the key came from.
        origin: String,
        /// The decoded length.
        len: usize,
    },
    /// A key file without any key line.
    #[error("key file {}: contains no key", path.display())]
    EmptyKeyFile {
        /// The key file.
        path: PathBuf,
    },
    /// The key file could not be read.
    #[error("cannot read key file {}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The key file could not be written.
    #[error("cannot write key file {}", path.display())]
    Write {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The key file can be read by its group or by others.
    #[error(
        "key file {} is readable by other users (mode {mode:o}): run `chmod 600` on it, or start with --allow-insecure-key-file if this is intended",
        path.display()
    )]
    InsecureKeyFile {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The store exists but the key file beside it is gone: generating a new key would leave
    /// every stored credential unreadable.
    #[error(
        "the store {} exists but its key file {} is missing: restore the key file, set {KEY_ENV}, \
         or configure key_file (refusing to generate a new key that cannot open the existing data)",
        store.display(),
        key_file.display()
    )]
    MissingKeyFile {
        /// The store file.
        store: PathBuf,
        /// The expected key file.
        key_file: PathBuf,
    },
}

/// Parses one base64 key; `origin` names where it came from in errors.
pub fn parse_key(text: &str, origin: &str) -> Result<SealKey, KeyError> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    let text = text.trim();
    let decoded = STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text))
        .map(Zeroizing::new)
        .map_err(|_| KeyError::NotBase64 {
            origin: origin.to_owned(),
        })?;
    SealKey::from_slice(&decoded).ok_or_else(|| KeyError::WrongLength {
        origin: origin.to_owned(),
        len: decoded.len(),
    })
}

/// Parses the value of `AUTHKEEPER_KEY`.
pub fn parse_env_key(value: &str) -> Result<SealKey, KeyError> {
    parse_key(value, KEY_ENV)
}

/// Parses the text of a key file read from `path` (used in errors only).
pub fn parse_key_file(text: &str, path: &Path) -> Result<Keyring, KeyError> {
    let mut keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let origin = format!("key file {} line {}", path.display(), index + 1);
        keys.push(parse_key(line, &origin)?);
    }
    let mut keys = keys.into_iter();
    let primary = keys.next().ok_or_else(|| KeyError::EmptyKeyFile {
        path: path.to_owned(),
    })?;
    Ok(Keyring::with_previous(primary, keys.collect()))
}

/// Whether a key file other users can read is refused (the default) or only warned about.
static ALLOW_INSECURE_KEY_FILE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Accept key files that the group or others can read (logged as a warning) instead of refusing
/// them. Set once at startup by `--allow-insecure-key-file`.
pub fn allow_insecure_key_files(allow: bool) {
    ALLOW_INSECURE_KEY_FILE.store(allow, std::sync::atomic::Ordering::Relaxed);
}

/// Reads a key file. A file readable by its group or others is refused
/// ([`KeyError::InsecureKeyFile`]) unless [`allow_insecure_key_files`] was called.
pub fn read_key_file(path: &Path) -> Result<Keyring, KeyError> {
    let read_error = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let mode = std::fs::metadata(path)
        .map_err(read_error)?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        if !ALLOW_INSECURE_KEY_FILE.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(KeyError::InsecureKeyFile {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", mode & 0o777),
            "the store key file is accessible by other users; run `chmod 600` on it"
        );
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(read_error)?);
    parse_key_file(&text, path)
}

/// The text of a key file holding `keyring`.
pub fn key_file_contents(keyring: &Keyring) -> Zeroizing<String> {
    let mut text = Zeroizing::new(String::from(
        "# authkeeper store key. Keep it secret and backed up: without it the stored credentials are lost.\n\
         # The first key seals; further keys are previous keys kept for opening older data.\n",
    ));
    for key in std::iter::once(keyring.primary()).chain(keyring.previous()) {
        text.push_str(&key.to_base64());
        text.push('\n');
    }
    text
}

/// Replaces (or creates) the key file at `path` atomically: a mode-0600 temporary file beside it
/// is written and fsynced, renamed over `path`, and the directory is fsynced.
pub fn write_key_file(path: &Path, keyring: &Keyring) -> Result<(), KeyError> {
    let write_error = |source| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    let temp = write_temp_beside(path, &key_file_contents(keyring)).map_err(write_error)?;
    if let Err(source) = std::fs::rename(&temp, path) {
        let _ = std::fs::remove_file(&temp);
        return Err(write_error(source));
    }
    sync_parent_dir(path).map_err(write_error)
}

/// Creates a key file with a fresh key at `path` unless one exists. Returns the keyring and
/// whether this call created it (`false`: another process won the race and its file is read).
pub fn create_key_file(path: &Path) -> Result<(Keyring, bool), KeyError> {
    let write_error = |source| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    let keyring = Keyring::new(SealKey::generate());
    let temp = write_temp_beside(path, &key_file_contents(&keyring)).map_err(write_error)?;
    // A hard link never replaces an existing file, and the key file appears complete or not at all.
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            sync_parent_dir(path).map_err(write_error)?;
            Ok((keyring, true))
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok((read_key_file(path)?, false)),
        Err(err) => Err(write_error(err)),
    }
}

fn write_temp_beside(path: &Path, contents: &str) -> io::Result<PathBuf> {
    let mut suffix = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut suffix);
    let mut temp = OsString::from(path.as_os_str());
    temp.push(format!(".tmp-{}", hex::encode(suffix)));
    let temp = PathBuf::from(temp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    })();
    match result {
        Ok(()) => Ok(temp),
        Err(err) => {
            let _ = std::fs::remove_file(&temp);
            Err(err)
        }
    }
}

fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// The key file used beside a store when nothing else is configured: `<db path>.key`.
pub fn default_key_file(db_path: &Path) -> PathBuf {
    let mut path = OsString::from(db_path.as_os_str());
    path.push(".key");
    PathBuf::from(path)
}

/// Where to look for the store key, in order: `env_key`, `key_file`, then `<db path>.key`
/// (generated when neither it nor the store exists).
#[derive(Clone, Default)]
pub struct KeySettings {
    /// The value of `AUTHKEEPER_KEY`, when set. Wins over every key file.
    pub env_key: Option<Zeroizing<String>>,
    /// An explicit key file (config `store.key_file`); it must exist.
    pub key_file: Option<PathBuf>,
}

impl KeySettings {
    /// Settings with `env_key` read from the `AUTHKEEPER_KEY` environment variable.
    pub fn from_env(key_file: Option<PathBuf>) -> Self {
        KeySettings {
            env_key: std::env::var(KEY_ENV).ok().map(Zeroizing::new),
            key_file,
        }
    }
}

impl fmt::Debug for KeySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySettings")
            .field("env_key", &self.env_key.as_ref().map(|_| "[redacted]"))
            .field("key_file", &self.key_file)
            .finish()
    }
}

/// Where the key in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// `AUTHKEEPER_KEY`: rotating it is the caller's job (see `SqliteStore::rekey`).
    Env,
    /// An existing key file.
    KeyFile(PathBuf),
    /// A key file generated just now: the caller should tell the user to back it up.
    Generated(PathBuf),
}

impl KeyOrigin {
    /// Whether the key was generated by this call.
    pub fn was_generated(&self) -> bool {
        matches!(self, KeyOrigin::Generated(_))
    }

    /// The key file, unless the key came from the environment.
    pub fn key_file(&self) -> Option<&Path> {
        match self {
            KeyOrigin::Env => None,
            KeyOrigin::KeyFile(path) | KeyOrigin::Generated(path) => Some(path),
        }
    }
}

/// A key found by [`resolve_key`].
#[derive(Debug, Clone)]
pub struct ResolvedKey {
    /// The keys.
    pub keyring: Keyring,
    /// Where they came from.
    pub origin: KeyOrigin,
}

/// Finds the key of the store at `db_path` following [`KeySettings`].
///
/// A key is generated only when neither `<db path>.key` nor the store file exists (or the store
/// file is empty): a store whose key file went missing is an error, never silently re-keyed.
pub fn resolve_key(settings: &KeySettings, db_path: &Path) -> Result<ResolvedKey, KeyError> {
    if let Some(value) = &settings.env_key {
        return Ok(ResolvedKey {
            keyring: Keyring::new(parse_env_key(value)?),
            origin: KeyOrigin::Env,
        });
    }
    if let Some(path) = &settings.key_file {
        return Ok(ResolvedKey {
            keyring: read_key_file(path)?,
            origin: KeyOrigin::KeyFile(path.clone()),
        });
    }
    let path = default_key_file(db_path);
    if path.exists() {
        return Ok(ResolvedKey {
            keyring: read_key_file(&path)?,
            origin: KeyOrigin::KeyFile(path),
        });
    }
    let store_has_data = std::fs::metadata(db_path)
        .map(|m| m.len() > 0)
        .unwrap_or(false);
    if store_has_data {
        return Err(KeyError::MissingKeyFile {
            store: db_path.to_owned(),
            key_file: path,
        });
    }
    let (keyring, created) = create_key_file(&path)?;
    let origin = if created {
        KeyOrigin::Generated(path)
    } else {
        KeyOrigin::KeyFile(path)
    };
    Ok(ResolvedKey { keyring, origin })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn parses_keys_and_rejects_bad_ones_clearly() {
        assert!(parse_env_key(GOOD).is_ok());
        assert!(parse_env_key(&format!("  {GOOD}\n")).is_ok());
        assert!(parse_env_key(GOOD.trim_end_matches('=')).is_ok());
        let err = parse_env_key("not base64!!").unwrap_err();
        assert!(matches!(err, KeyError::NotBase64 { .. }));
        assert!(err.to_string().contains("AUTHKEEPER_KEY"), "{err}");
        let err = parse_env_key("AAECAwQFBgcICQoLDA0ODw==").unwrap_err();
        assert!(
            matches!(err, KeyError::WrongLength { len: 16, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("exactly 32 bytes"));
        assert!(matches!(
            parse_env_key(""),
            Err(KeyError::WrongLength { len: 0, .. })
        ));
    }

    #[test]
    fn key_file_has_primary_then_previous_keys_and_comments() {
        let a = SealKey::generate();
        let b = SealKey::generate();
        let text = format!(
            "# comment\n\n{}\n  {}  \n",
            a.to_base64().as_str(),
            b.to_base64().as_str()
        );
        let ring = parse_key_file(&text, Path::new("k")).unwrap();
        assert_eq!(ring.primary().id(), a.id());
        assert_eq!(ring.previous()[0].id(), b.id());
        let back = parse_key_file(&key_file_contents(&ring), Path::new("k")).unwrap();
        assert_eq!(back.primary().id(), a.id());
        assert!(matches!(
            parse_key_file("# only\n", Path::new("k")),
            Err(KeyError::EmptyKeyFile { .. })
        ));
        let err = parse_key_file(&format!("{GOOD}\nxx\n"), Path::new("k")).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
