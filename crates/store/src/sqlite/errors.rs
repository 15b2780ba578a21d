//! SQLite errors and column values turned into [`StoreError`]s that say what to do.

use rusqlite::ErrorCode;

use authkeeper_core::StoreError;

/// Maps a SQLite error to a [`StoreError`] that says what to do.
pub(crate) fn sql_error(err: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    match &err {
        E::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::NotADatabase => {
                StoreError::Corrupt("the file is not a SQLite database".to_owned())
            }
            ErrorCode::DatabaseCorrupt => StoreError::Corrupt(
                "the database file is damaged (SQLite reports it malformed)".to_owned(),
            ),
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::unavailable(
                "the store is busy: another process held its write lock for too long",
                err,
            ),
            ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::NoLargeFileSupport => {
                StoreError::unavailable("cannot use the store file", err)
            }
            _ => StoreError::Other {
                message: "store database error".to_owned(),
                source: Some(Box::new(err)),
            },
        },
        E::InvalidColumnType(..)
        | E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..) => {
            StoreError::Corrupt(format!("unexpected value in the database: {err}"))
        }
        _ => StoreError::Other {
            message: "store database error".to_owned(),
            source: Some(Box::new(err)),
        },
    }
}

/// A row of `what` named `name` holds something this version cannot use.
pub(crate) fn corrupt_row(what: &str, name: &str, problem: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} `{name}`: {problem}"))
}

/// A non-negative column value as a `u64`.
pub(crate) fn to_u64(what: &str, name: &str, column: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt_row(what, name, &format!("negative {column}")))
}

/// A `u64` as a SQLite integer (saturating).
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
