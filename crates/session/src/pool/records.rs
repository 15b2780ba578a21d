//! Session records in a [`RecordStore`]: kind `session`, key `SITE/ID`, a JSON document
//! written only over the version read.

use authkeeper_core::name::{SessionId, SiteName};
use authkeeper_core::store::{
    Expect, Record, RecordKey, RecordKind, RecordStore, decode_json, encode_json,
};
use authkeeper_core::{StoreError, Timestamp};

use crate::model::Session;

/// The record kind of browser sessions (part of the sealed value's associated data).
pub const SESSION: RecordKind = RecordKind::new("session");

/// A session as read, with the version a write must name.
#[derive(Debug, Clone)]
pub(crate) struct Versioned {
    pub session: Session,
    pub version: u64,
}

/// Decodes one record. A record that does not decode is reported, never half-read.
fn decode(record: &Record) -> Result<Versioned, StoreError> {
    Ok(Versioned {
        session: decode_json(SESSION, record)?,
        version: record.version,
    })
}

/// Every session of `site`. Records that fail to decode are skipped with an error log, so one
/// bad record cannot take the site's pool down.
pub(crate) async fn load_site(
    store: &dyn RecordStore,
    site: &SiteName,
) -> Result<Vec<Versioned>, StoreError> {
    let records = store.list_children(SESSION, &RecordKey::new(site)).await?;
    let mut sessions = Vec::with_capacity(records.len());
    for record in &records {
        match decode(record) {
            Ok(versioned) => sessions.push(versioned),
            Err(error) => {
                tracing::error!(%site, session = %record.key, %error, "skipping a session record")
            }
        }
    }
    Ok(sessions)
}

/// One session, or `None`.
pub(crate) async fn load_one(
    store: &dyn RecordStore,
    site: &SiteName,
    id: &SessionId,
) -> Result<Option<Versioned>, StoreError> {
    match store.get(SESSION, &RecordKey::with_item(site, id)).await? {
        Some(record) => decode(&record).map(Some),
        None => Ok(None),
    }
}

/// Writes `session` over `expected_version` (0: new). `Ok(None)`: someone else wrote first.
pub(crate) async fn write(
    store: &dyn RecordStore,
    session: &Session,
    expected_version: u64,
    now: Timestamp,
) -> Result<Option<u64>, StoreError> {
    let key = RecordKey::with_item(&session.site, &session.id);
    let data = encode_json(SESSION, &key, session)?;
    let expect = match expected_version {
        0 => Expect::Absent,
        version => Expect::Version(version),
    };
    store
        .compare_and_put(SESSION, &key, expect, &data, now)
        .await
}
