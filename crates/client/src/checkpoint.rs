//! Checkpoints: a task's progress saved as JSON, sealed in the same store as the credentials, so
//! a worker that hits `needs_reauth` saves, exits cleanly, and a later worker resumes after the
//! login instead of starting over.
//!
//! [`Checkpoint`] is the typed handle. It talks either to a [`RecordStore`] directly (a worker in the
//! same process as the Keeper) or to a broker's `PUT/GET/DELETE /v1/checkpoints/{task}` (a worker
//! started by `authkeeper exec`, which sets `AUTHKEEPER_CHECKPOINT_URL` and
//! `AUTHKEEPER_API_KEY`; see [`Checkpoint::from_env`]). A checkpoint may hold secrets of the task:
//! its contents never appear in an error or in `Debug` output.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use authkeeper_core::clock::{SharedClock, Timestamp};
use authkeeper_core::name::TaskName;
use authkeeper_core::store::{Expect, Record, RecordKey, RecordKind, RecordStore, StoreError};

/// The environment variable with the URL of a task's checkpoint (set by `authkeeper exec`).
pub const CHECKPOINT_URL_ENV: &str = "AUTHKEEPER_CHECKPOINT_URL";
/// The environment variable with the broker client key (set by `authkeeper exec`).
pub const API_KEY_ENV: &str = "AUTHKEEPER_API_KEY";

/// The record kind of checkpoints in a [`RecordStore`] (part of the sealed value's associated
/// data); the key is the task name.
pub const CHECKPOINT: RecordKind = RecordKind::new("checkpoint");

/// Saves `data` (a JSON document) as the checkpoint of `task`, replacing any previous one;
/// returns its new version.
pub async fn save(
    store: &dyn RecordStore,
    task: &TaskName,
    data: &[u8],
    now: Timestamp,
) -> Result<u64, StoreError> {
    store
        .compare_and_put(CHECKPOINT, &RecordKey::new(task), Expect::Any, data, now)
        .await?
        .ok_or_else(|| StoreError::other("the store refused an unconditional checkpoint write"))
}

/// The checkpoint of `task`, or `None` when none is saved.
pub async fn load(store: &dyn RecordStore, task: &TaskName) -> Result<Option<Record>, StoreError> {
    store.get(CHECKPOINT, &RecordKey::new(task)).await
}

/// Deletes the checkpoint of `task`; returns whether one was deleted.
pub async fn delete(store: &dyn RecordStore, task: &TaskName) -> Result<bool, StoreError> {
    store
        .remove(CHECKPOINT, &RecordKey::new(task), Expect::Any)
        .await
}

/// Why a checkpoint could not be loaded or saved. Never quotes the checkpoint's contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The store failed.
    #[error("checkpoint store error: {0}")]
    Store(#[from] StoreError),
    /// The task name is not a valid name.
    #[error(transparent)]
    Name(#[from] authkeeper_core::name::NameError),
    /// The value could not be turned into JSON, or the saved JSON is not a `T`.
    #[error("the checkpoint of `{task}` is not valid for this type (line {line}, column {column})")]
    Json {
        /// The task.
        task: String,
        /// Where the JSON stopped fitting.
        line: usize,
        /// Where the JSON stopped fitting.
        column: usize,
    },
    /// The broker refused or failed the request.
    #[error("the broker answered {status} for the checkpoint of `{task}`: {detail}")]
    Http {
        /// The task.
        task: String,
        /// The HTTP status.
        status: u16,
        /// The problem's detail.
        detail: String,
    },
    /// The broker could not be reached.
    #[error("cannot reach the broker for the checkpoint of `{task}`: {message}")]
    Transport {
        /// The task.
        task: String,
        /// What failed.
        message: String,
    },
    /// `AUTHKEEPER_CHECKPOINT_URL` or `AUTHKEEPER_API_KEY` is missing or invalid.
    #[error("{0}")]
    Environment(String),
}

enum Backend {
    Store {
        store: Arc<dyn RecordStore>,
        clock: SharedClock,
    },
    Http {
        client: reqwest::Client,
        url: Url,
        key: SecretString,
    },
}

/// The saved progress of one task, typed as `T`.
pub struct Checkpoint<T> {
    task: TaskName,
    backend: Backend,
    _type: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Checkpoint<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match &self.backend {
            Backend::Store { .. } => "store",
            Backend::Http { .. } => "broker",
        };
        f.debug_struct("Checkpoint")
            .field("task", &self.task)
            .field("backend", &backend)
            .finish_non_exhaustive()
    }
}

impl<T: Serialize + DeserializeOwned> Checkpoint<T> {
    /// The checkpoint of `task` in `store` (timestamps from `clock`).
    pub fn in_store(
        store: Arc<dyn RecordStore>,
        clock: SharedClock,
        task: TaskName,
    ) -> Result<Self, CheckpointError> {
        Ok(Checkpoint {
            task,
            backend: Backend::Store { store, clock },
            _type: PhantomData,
        })
    }

    /// The checkpoint at `url` (`.../v1/checkpoints/{task}`) of a broker, with a client `key`.
    pub fn remote(url: Url, key: SecretString) -> Result<Self, CheckpointError> {
        let task = url
            .path_segments()
            .and_then(|mut segments| segments.next_back())
            .unwrap_or_default();
        let task = TaskName::new(task)?;
        Ok(Checkpoint {
            task,
            backend: Backend::Http {
                client: reqwest::Client::new(),
                url,
                key,
            },
            _type: PhantomData,
        })
    }

    /// The checkpoint named by `AUTHKEEPER_CHECKPOINT_URL`, with `AUTHKEEPER_API_KEY` (what
    /// `authkeeper exec` gives its child).
    pub fn from_env() -> Result<Self, CheckpointError> {
        let url = std::env::var(CHECKPOINT_URL_ENV).map_err(|_| {
            CheckpointError::Environment(format!("{CHECKPOINT_URL_ENV} is not set"))
        })?;
        let url = Url::parse(&url).map_err(|e| {
            CheckpointError::Environment(format!("{CHECKPOINT_URL_ENV} is not a URL: {e}"))
        })?;
        let key = std::env::var(API_KEY_ENV)
            .map_err(|_| CheckpointError::Environment(format!("{API_KEY_ENV} is not set")))?;
        Self::remote(url, SecretString::from(key))
    }

    /// The task name.
    pub fn task(&self) -> &TaskName {
        &self.task
    }

    fn json_error(&self, error: &serde_json::Error) -> CheckpointError {
        CheckpointError::Json {
            task: self.task.to_string(),
            line: error.line(),
            column: error.column(),
        }
    }

    fn transport_error(&self, error: &reqwest::Error) -> CheckpointError {
        CheckpointError::Transport {
            task: self.task.to_string(),
            message: if error.is_timeout() {
                "timed out".to_owned()
            } else if error.is_connect() {
                "connection failed".to_owned()
            } else {
                "request failed".to_owned()
            },
        }
    }

    async fn http_error(&self, response: reqwest::Response) -> CheckpointError {
        let status = response.status().as_u16();
        let detail = response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
            .unwrap_or_default();
        CheckpointError::Http {
            task: self.task.to_string(),
            status,
            detail: detail.chars().take(200).collect(),
        }
    }

    /// The saved progress, or `None` when nothing is saved.
    pub async fn load(&self) -> Result<Option<T>, CheckpointError> {
        let bytes = match &self.backend {
            Backend::Store { store, .. } => match load(&**store, &self.task).await? {
                Some(saved) => saved.data.to_vec(),
                None => return Ok(None),
            },
            Backend::Http { client, url, key } => {
                let response = client
                    .get(url.clone())
                    .bearer_auth(key.expose_secret())
                    .send()
                    .await
                    .map_err(|e| self.transport_error(&e))?;
                if response.status() == reqwest::StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                if !response.status().is_success() {
                    return Err(self.http_error(response).await);
                }
                response
                    .bytes()
                    .await
                    .map_err(|e| self.transport_error(&e))?
                    .to_vec()
            }
        };
        let bytes = zeroize::Zeroizing::new(bytes);
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| self.json_error(&e))
    }

    /// Saves `value` as the task's progress; returns the checkpoint's new version.
    pub async fn save(&self, value: &T) -> Result<u64, CheckpointError> {
        let bytes =
            zeroize::Zeroizing::new(serde_json::to_vec(value).map_err(|e| self.json_error(&e))?);
        match &self.backend {
            Backend::Store { store, clock } => {
                Ok(save(&**store, &self.task, &bytes, clock.now()).await?)
            }
            Backend::Http { client, url, key } => {
                let response = client
                    .put(url.clone())
                    .bearer_auth(key.expose_secret())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(bytes.to_vec())
                    .send()
                    .await
                    .map_err(|e| self.transport_error(&e))?;
                if !response.status().is_success() {
                    return Err(self.http_error(response).await);
                }
                let body: serde_json::Value = response
                    .json()
                    .await
                    .map_err(|e| self.transport_error(&e))?;
                Ok(body
                    .get("version")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0))
            }
        }
    }

    /// Deletes the saved progress (the task is done); returns whether there was some.
    pub async fn clear(&self) -> Result<bool, CheckpointError> {
        match &self.backend {
            Backend::Store { store, .. } => Ok(delete(&**store, &self.task).await?),
            Backend::Http { client, url, key } => {
                let response = client
                    .delete(url.clone())
                    .bearer_auth(key.expose_secret())
                    .send()
                    .await
                    .map_err(|e| self.transport_error(&e))?;
                match response.status() {
                    reqwest::StatusCode::NOT_FOUND => Ok(false),
                    status if status.is_success() => Ok(true),
                    _ => Err(self.http_error(response).await),
                }
            }
        }
    }
}
