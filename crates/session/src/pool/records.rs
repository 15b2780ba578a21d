//! Session records in the store: JSON documents, versioned, written only over the version read.

use authkeeper_core::{Store, StoreError, StoredSession};

use crate::model::Session;

/// A session as read, with the version a write must name.
#[derive(Debug, Clone)]
pub(crate) struct Versioned {
    pub session: Session,
    pub version: u64,
}

/// Decodes one record. A record that does not decode is reported, never half-read.
pub(crate) fn decode(record: &StoredSession) -> Result<Versioned, StoreError> {
    let session: Session = serde_json::from_slice(&record.data).map_err(|error| {
        StoreError::Corrupt(format!(
            "session record {}/{} does not decode (line {}, column {})",
            record.site,
            record.id,
            error.line(),
            error.column()
        ))
    })?;
    Ok(Versioned {
        session,
        version: record.version,
    })
}

/// Every session of `site`. Records that fail to decode are skipped with an error log, so one
/// bad record cannot take the site's pool down.
pub(crate) async fn load_site(store: &dyn Store, site: &str) -> Result<Vec<Versioned>, StoreError> {
    let records = store.list_sessions(site).await?;
    let mut sessions = Vec::with_capacity(records.len());
    for record in &records {
        match decode(record) {
            Ok(versioned) => sessions.push(versioned),
            Err(error) => {
                tracing::error!(site, session = %record.id, %error, "skipping a session record")
            }
        }
    }
    Ok(sessions)
}

/// One session, or `None`.
pub(crate) async fn load_one(
    store: &dyn Store,
    site: &str,
    id: &str,
) -> Result<Option<Versioned>, StoreError> {
    match store.load_session(site, id).await? {
        Some(record) => decode(&record).map(Some),
        None => Ok(None),
    }
}

/// Writes `session` over `expected_version` (0: new). `Ok(None)`: someone else wrote first.
pub(crate) async fn write(
    store: &dyn Store,
    session: &Session,
    expected_version: u64,
) -> Result<Option<u64>, StoreError> {
    let data = zeroize::Zeroizing::new(serde_json::to_vec(session).map_err(|error| {
        StoreError::Other {
            message: format!(
                "cannot encode session {}/{}: {error}",
                session.site, session.id
            ),
            source: None,
        }
    })?);
    store
        .compare_and_put_session(&session.site, &session.id, expected_version, &data)
        .await
}
