//! Versioned schema migrations, tracked in `PRAGMA user_version`.
//!
//! Each step runs in the same `BEGIN IMMEDIATE` transaction as the version bump, so concurrent
//! openers apply it once. A database from a newer version is refused before anything is written.

use rusqlite::{Connection, TransactionBehavior};

use authkeeper_core::StoreError;

use super::errors::sql_error;

/// The SQL of each schema version, in order: step `i` upgrades version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: credentials, leases, and a sealed value that checks the key on open.
    "CREATE TABLE credentials (
        name TEXT PRIMARY KEY NOT NULL,
        generation INTEGER NOT NULL CHECK (generation > 0),
        sealed BLOB NOT NULL,
        expires_at INTEGER NOT NULL,
        state TEXT NOT NULL,
        last_refresh_at INTEGER,
        failures INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
        reason TEXT,
        next_attempt_at INTEGER,
        updated_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE leases (
        name TEXT PRIMARY KEY NOT NULL,
        owner TEXT NOT NULL,
        fence INTEGER NOT NULL CHECK (fence > 0),
        expires_at INTEGER NOT NULL,
        via_flock INTEGER NOT NULL,
        released INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE meta (
        key TEXT PRIMARY KEY NOT NULL,
        value BLOB NOT NULL
    ) STRICT;",
    // 2: task checkpoints (sealed JSON, kind "checkpoint").
    "CREATE TABLE checkpoints (
        task TEXT PRIMARY KEY NOT NULL,
        version INTEGER NOT NULL CHECK (version > 0),
        sealed BLOB NOT NULL,
        updated_at INTEGER NOT NULL
    ) STRICT;",
    // 3: the generation a lease holder is refreshing from (`Store::mark_in_flight`).
    "ALTER TABLE leases ADD COLUMN in_flight INTEGER;",
    // 4: browser session records (sealed documents, kind "session", name "SITE/ID").
    "CREATE TABLE sessions (
        site TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL CHECK (version > 0),
        sealed BLOB NOT NULL,
        PRIMARY KEY (site, id)
    ) STRICT;",
    // 5: one table for every kind of sealed record (`RecordStore`); checkpoints and sessions
    // move there unchanged (their associated data was already kind + `PART[/ITEM]`).
    "CREATE TABLE records (
        kind TEXT NOT NULL,
        part TEXT NOT NULL,
        item TEXT NOT NULL,
        version INTEGER NOT NULL CHECK (version > 0),
        sealed BLOB NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (kind, part, item)
    ) STRICT;
    INSERT INTO records (kind, part, item, version, sealed, updated_at)
        SELECT 'checkpoint', task, '', version, sealed, updated_at FROM checkpoints;
    INSERT INTO records (kind, part, item, version, sealed, updated_at)
        SELECT 'session', site, id, version, sealed, 0 FROM sessions;
    DROP TABLE checkpoints;
    DROP TABLE sessions;",
    // 6: a credential's status and token expiry, sealed and bound to its generation (filled
    // by the upgrade to sealing format 2 when the store is opened with its key).
    "ALTER TABLE credentials ADD COLUMN sealed_status BLOB;",
];

/// The schema version this build writes.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Reads the schema version and refuses databases this build cannot use, without writing.
pub(crate) fn check_version(conn: &Connection) -> Result<i64, StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(sql_error)?;
    if version > LATEST {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {version} but this authkeeper supports up to {LATEST}: \
             upgrade authkeeper (the file was left untouched)"
        )));
    }
    if version < 0 {
        return Err(StoreError::Corrupt(format!(
            "the database has an invalid schema version {version}"
        )));
    }
    if version == 0 {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .map_err(sql_error)?;
        if tables > 0 {
            return Err(StoreError::Corrupt(
                "the file is a SQLite database but not an authkeeper store (it has tables but no schema version)"
                    .to_owned(),
            ));
        }
    }
    Ok(version)
}

/// Applies every missing migration in one immediate transaction.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    let version = check_version(&tx)?;
    if version == LATEST {
        return Ok(());
    }
    for step in &MIGRATIONS[usize::try_from(version).unwrap_or(0)..] {
        tx.execute_batch(step).map_err(sql_error)?;
    }
    tx.pragma_update(None, "user_version", LATEST)
        .map_err(sql_error)?;
    tx.commit().map_err(sql_error)
}
