//! The store file itself: created private, kept private, checked before use.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use rusqlite::Connection;

use authkeeper_core::StoreError;

use super::errors::sql_error;

/// Creates an empty store file with mode 0600 unless it exists (SQLite treats an empty file as
/// an empty database).
pub(super) fn create_private_file(path: &Path) -> Result<(), StoreError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::unavailable(
            format!("cannot create the store {}", path.display()),
            e,
        )),
    }
}

/// Removes group and other permissions from `path` when it exists.
pub(super) fn restrict_permissions(path: &Path) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0
        && let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot restrict the store file to its owner");
    }
}

/// `PRAGMA quick_check`: refuses a damaged file before anything is written to it.
pub(super) fn quick_check(conn: &Connection) -> Result<(), StoreError> {
    let result: String = conn
        .query_row("PRAGMA quick_check(1)", [], |row| row.get(0))
        .map_err(sql_error)?;
    if result == "ok" {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "the database file is damaged (integrity check: {result})"
        )))
    }
}
