//! Per-credential OS advisory locks: one lock file per credential in `<db path>.locks/`.
//!
//! The kernel releases such a lock the instant its holder dies (even on `kill -9`), and two
//! opens of the same file conflict even inside one process. The lock only says "someone is
//! refreshing"; the lease row in the database carries the fence.

use std::ffi::OsString;
use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use authkeeper_core::StoreError;

/// The directory of lock files of the store at `db_path`: `<db path>.locks`.
pub fn lock_dir(db_path: &Path) -> PathBuf {
    let mut path = OsString::from(db_path.as_os_str());
    path.push(".locks");
    PathBuf::from(path)
}

/// The lock file name of a credential: the first 32 hex digits of SHA-256 of its name.
pub fn lock_file_name(name: &str) -> String {
    let mut text = hex::encode(Sha256::digest(name.as_bytes()));
    text.truncate(32);
    text
}

/// A held OS lock; dropping it closes the file and so releases the lock.
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

/// The lock files of one store.
#[derive(Debug, Clone)]
pub(crate) struct LockDir {
    path: PathBuf,
}

impl LockDir {
    /// Creates (mode 0700) or opens the lock directory of the store at `db_path`.
    pub(crate) fn open(db_path: &Path) -> Result<Self, StoreError> {
        let path = lock_dir(db_path);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(|e| {
                StoreError::unavailable(
                    format!("cannot create lock directory {}", path.display()),
                    e,
                )
            })?;
        if let Ok(meta) = std::fs::metadata(&path)
            && meta.permissions().mode() & 0o077 != 0
            && let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot restrict the lock directory to its owner");
        }
        Ok(LockDir { path })
    }

    /// Tries to take the lock of `name` without waiting; `None` when someone holds it.
    pub(crate) fn try_lock(&self, name: &str) -> Result<Option<LockGuard>, StoreError> {
        let path = self.path.join(lock_file_name(name));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                StoreError::unavailable(format!("cannot open lock file {}", path.display()), e)
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(LockGuard { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(StoreError::unavailable(
                format!("cannot lock {}", path.display()),
                e,
            )),
        }
    }
}
