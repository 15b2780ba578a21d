//! Maps Redis client failures to [`StoreError`]s whose messages never carry the password.

use std::time::Duration;

use authkeeper_core::StoreError;

use super::url::RedisUrl;

/// A Redis failure as text, scrubbed of the URL's password (kept as the error source instead of
/// the client's error, whose text this crate does not control).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RedisFailure {
    message: String,
}

impl RedisFailure {
    pub(crate) fn new(url: &RedisUrl, err: &::redis::RedisError) -> Self {
        RedisFailure {
            message: url.scrub(&err.to_string()),
        }
    }
}

/// The [`StoreError`] for a failed Redis call doing `what`.
pub(crate) fn from_redis(url: &RedisUrl, what: &str, err: ::redis::RedisError) -> StoreError {
    use ::redis::ErrorKind as K;
    let failure = RedisFailure::new(url, &err);
    match err.kind() {
        K::Parse | K::UnexpectedReturnType => StoreError::Corrupt(format!(
            "{what}: unexpected reply from Redis at {url}: {failure}"
        )),
        K::InvalidClientConfig => StoreError::Other {
            message: format!("{what}: invalid Redis configuration for {url}: {failure}"),
            source: Some(Box::new(failure)),
        },
        _ => StoreError::Unavailable {
            message: format!("{what}: Redis at {url}: {failure}"),
            source: Some(Box::new(failure)),
        },
    }
}

/// The [`StoreError`] for a Redis call that did not answer in time.
pub(crate) fn timed_out(url: &RedisUrl, what: &str, after: Duration) -> StoreError {
    StoreError::Unavailable {
        message: format!("{what}: Redis at {url} did not answer within {after:?}"),
        source: None,
    }
}

/// A [`StoreError::Corrupt`] about credential `name`.
pub(crate) fn corrupt(name: &str, what: &str) -> StoreError {
    StoreError::Corrupt(format!("credential `{name}` in Redis: {what}"))
}

/// A [`StoreError::Corrupt`] about record `name` (`PART[/ITEM]`) of `kind`.
pub(crate) fn corrupt_record(
    kind: authkeeper_core::store::RecordKind,
    name: &str,
    what: &str,
) -> StoreError {
    StoreError::Corrupt(format!("{kind} record `{name}` in Redis: {what}"))
}
