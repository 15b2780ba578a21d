//! Connections: credentials created, changed and deleted at runtime through the API
//! (`POST /v1/credentials`, `PATCH`/`DELETE /v1/credentials/{name}`), one per end user and
//! provider. A connection names a `[providers.NAME]` and carries labels (and optionally its own
//! scopes). Its definition is a sealed record of kind `connection` in the shared store, so every
//! replica finds it: loaded at start-up, and looked up on first use of an unknown name.
//!
//! Writing needs the `credentials:write` permission, and a key creates, changes or deletes only
//! connections its own scope (`"*"`, `provider:NAME`, `label:...`) lets it use.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use authkeeper_core::name::CredentialName;
use authkeeper_core::store::{Expect, RecordKey, RecordKind};
use authkeeper_core::{CredentialSettings, TokenResponse};
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::api::{read_json, status_body, summary_of};
use crate::auth::{ClientIdentity, CredentialTags};
use crate::authorize::{Authorized, StatusOf};
use crate::config::Permission;
use crate::problem::{Problem, ProblemType};
use crate::state::AppState;

/// The record kind of connection definitions.
pub const CONNECTION: RecordKind = RecordKind::new("connection");

/// Connection definitions read per page at start-up.
const LOAD_PAGE: usize = 1000;

/// What is stored of a connection (sealed; no secret in it, but labels may be personal data).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Definition {
    provider: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Scopes replacing the provider's, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scopes: Option<Vec<String>>,
}

impl Definition {
    fn tags(&self) -> CredentialTags {
        CredentialTags {
            provider: Some(self.provider.clone()),
            labels: self.labels.clone(),
        }
    }

    /// The credential's settings: the provider's, with this connection's scopes.
    fn settings(&self, state: &AppState) -> Option<Arc<CredentialSettings>> {
        let provider = state.provider(&self.provider)?;
        Some(match &self.scopes {
            None => Arc::clone(provider),
            Some(scopes) => {
                let mut own = CredentialSettings::clone(provider);
                own.client.scopes = scopes.clone();
                Arc::new(own)
            }
        })
    }
}

/// `POST /v1/credentials` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    provider: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// The provider's token response (as its token endpoint answered), stored as generation 1.
    #[serde(default)]
    token_response: Option<serde_json::Value>,
}

/// `PATCH /v1/credentials/{name}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

fn store_problem(error: impl std::fmt::Display) -> Problem {
    tracing::warn!(error = %error, "store call failed");
    Problem::new(ProblemType::StoreUnavailable, "the store did not answer")
        .with_retry_after(Duration::from_secs(1))
}

fn key(name: &CredentialName) -> RecordKey {
    RecordKey::new(name)
}

/// Labels: at most 64, keys 1-64 of `A-Z a-z 0-9 . _ -`, values up to 256 characters.
fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), Problem> {
    let key_ok = |k: &str| {
        !k.is_empty()
            && k.len() <= 64
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if labels.len() > 64 || labels.iter().any(|(k, v)| !key_ok(k) || v.len() > 256) {
        return Err(Problem::invalid_request(
            "labels: at most 64, keys 1-64 of letters, digits, '.', '_' or '-', values up to 256 characters",
        ));
    }
    Ok(())
}

fn check_scopes(scopes: &Option<Vec<String>>) -> Result<(), Problem> {
    let bad = |s: &String| s.is_empty() || s.len() > 256 || s.chars().any(char::is_whitespace);
    if scopes
        .as_ref()
        .is_some_and(|s| s.len() > 64 || s.iter().any(bad))
    {
        return Err(Problem::invalid_request(
            "scopes: at most 64, each 1-256 characters without spaces",
        ));
    }
    Ok(())
}

fn may_write(client: &ClientIdentity) -> Result<(), Problem> {
    if client.can(Permission::CredentialsWrite) {
        Ok(())
    } else {
        Err(Problem::new(
            ProblemType::Forbidden,
            "this client key lacks the `credentials:write` permission",
        ))
    }
}

/// `POST /v1/credentials`: creates a connection from a provider, with labels and, optionally,
/// the token response of a finished login; `201` with its status.
pub(crate) async fn create(
    State(state): State<AppState>,
    axum::Extension(client): axum::Extension<ClientIdentity>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    may_write(&client)?;
    let request: CreateBody = read_json(&headers, body, state.config().max_body).await?;
    let name = CredentialName::new(&request.name).map_err(|_| {
        Problem::invalid_request(
            "a credential name is 1-128 ASCII letters, digits, '.', '_' or '-'",
        )
    })?;
    check_labels(&request.labels)?;
    check_scopes(&request.scopes)?;
    let definition = Definition {
        provider: request.provider,
        labels: request.labels,
        scopes: request.scopes,
    };
    let tags = definition.tags();
    if !client.may_use(name.as_str(), Some(&tags)) {
        return Err(Problem::new(
            ProblemType::Forbidden,
            "this client key may not create a credential of this provider or with these labels",
        ));
    }
    let settings = definition.settings(&state).ok_or_else(|| {
        Problem::invalid_request(format!(
            "provider `{}` is not configured ([providers.NAME])",
            definition.provider
        ))
    })?;
    if state.keeper().credential(name.as_str()).is_some() {
        return Err(exists(&name));
    }
    let now = state.keeper().clock().now();
    let tokens = match &request.token_response {
        None => None,
        Some(response) => {
            let body = serde_json::to_vec(response).unwrap_or_default();
            let parsed = TokenResponse::parse_tokens(&body).map_err(|error| {
                Problem::invalid_request(format!("token_response: {error}"))
                    .with_credential(name.as_str())
            })?;
            Some(parsed.into_token_set(now, &settings.expiry))
        }
    };
    let document = serde_json::to_vec(&definition)
        .map_err(|_| Problem::internal("cannot encode the connection"))?;
    let written = state
        .records()
        .compare_and_put(CONNECTION, &key(&name), Expect::Absent, &document, now)
        .await
        .map_err(store_problem)?;
    if written.is_none() {
        return Err(exists(&name));
    }
    if let Some(tokens) = &tokens
        && let Err(error) =
            authkeeper_core::store::import(&**state.keeper().store(), &name, tokens, now).await
    {
        // Nothing half-made stays behind.
        let _ = state
            .records()
            .remove(CONNECTION, &key(&name), Expect::Any)
            .await;
        return Err(store_problem(error));
    }
    state.set_tags(name.as_str(), Some(tags));
    if let Err(error) = state.keeper().add_credential(name.clone(), settings).await {
        return Err(Problem::from_keeper(&error, now));
    }
    if tokens.is_some() {
        let _ = state.keeper().reload(name.as_str()).await;
    }
    tracing::info!(client = client.name(), credential = %name, provider = %definition.provider, "connection created");
    let summary = summary_of(&state, &name).await?;
    let mut response = axum::Json(status_body(&state, &name, summary.as_ref())).into_response();
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

fn exists(name: &CredentialName) -> Problem {
    Problem::new(
        ProblemType::AlreadyExists,
        format!("credential `{name}` exists already"),
    )
    .with_credential(name.as_str())
}

/// A connection's stored definition and its version; a configured credential is refused.
async fn definition_of(
    state: &AppState,
    name: &CredentialName,
) -> Result<(Definition, u64), Problem> {
    if !state.keeper().is_connection(name.as_str()) {
        return Err(Problem::new(
            ProblemType::AlreadyExists,
            "this credential is declared in the configuration: change it there",
        )
        .with_credential(name.as_str()));
    }
    let record = state
        .records()
        .get(CONNECTION, &key(name))
        .await
        .map_err(store_problem)?
        .ok_or_else(Problem::forbidden)?;
    let definition = serde_json::from_slice(&record.data)
        .map_err(|_| Problem::internal("a stored connection is unreadable"))?;
    Ok((definition, record.version))
}

/// `PATCH /v1/credentials/{name}`: replaces a connection's labels and/or scopes.
pub(crate) async fn update(
    State(state): State<AppState>,
    Authorized { client, name }: Authorized<StatusOf>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    may_write(&client)?;
    let request: UpdateBody = read_json(&headers, body, state.config().max_body).await?;
    let (mut definition, version) = definition_of(&state, &name).await?;
    if let Some(labels) = request.labels {
        check_labels(&labels)?;
        definition.labels = labels;
    }
    let scopes_changed = request.scopes.is_some();
    if request.scopes.is_some() {
        check_scopes(&request.scopes)?;
        definition.scopes = request.scopes;
    }
    let tags = definition.tags();
    if !client.may_use(name.as_str(), Some(&tags)) {
        return Err(Problem::new(
            ProblemType::Forbidden,
            "these labels would take the credential out of this client key's scope",
        ));
    }
    let now = state.keeper().clock().now();
    let document = serde_json::to_vec(&definition)
        .map_err(|_| Problem::internal("cannot encode the connection"))?;
    let written = state
        .records()
        .compare_and_put(
            CONNECTION,
            &key(&name),
            Expect::Version(version),
            &document,
            now,
        )
        .await
        .map_err(store_problem)?;
    if written.is_none() {
        return Err(Problem::new(
            ProblemType::Unavailable,
            "the connection changed meanwhile: try again",
        )
        .with_retry_after(Duration::from_secs(1)));
    }
    state.set_tags(name.as_str(), Some(tags));
    if scopes_changed && let Some(settings) = definition.settings(&state) {
        // The next refresh asks for the new scopes; the stored tokens stay.
        state.keeper().remove_credential(name.as_str());
        let _ = state.keeper().add_credential(name.clone(), settings).await;
    }
    let summary = summary_of(&state, &name).await?;
    Ok(axum::Json(status_body(&state, &name, summary.as_ref())).into_response())
}

/// `DELETE /v1/credentials/{name}`: deletes a connection, its tokens and its definition.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Authorized { client, name }: Authorized<StatusOf>,
) -> Result<Response, Problem> {
    may_write(&client)?;
    definition_of(&state, &name).await?;
    state
        .records()
        .remove(CONNECTION, &key(&name), Expect::Any)
        .await
        .map_err(store_problem)?;
    state
        .keeper()
        .store()
        .delete(&name)
        .await
        .map_err(store_problem)?;
    state.keeper().remove_credential(name.as_str());
    state.set_tags(name.as_str(), None);
    tracing::info!(client = client.name(), credential = %name, "connection deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Adds the connection called `text` if the store defines one this process does not know yet
/// (created through another replica); `true` when it did.
pub(crate) async fn discover(state: &AppState, text: &str) -> bool {
    let Ok(name) = CredentialName::new(text) else {
        return false;
    };
    match state.records().get(CONNECTION, &key(&name)).await {
        Ok(Some(record)) => add_defined(state, name, &record.data).await,
        _ => false,
    }
}

/// Adds a connection from its stored definition; `false` when it is unusable here (unknown
/// provider, unreadable, or a configured credential of that name).
async fn add_defined(state: &AppState, name: CredentialName, data: &[u8]) -> bool {
    let Ok(definition) = serde_json::from_slice::<Definition>(data) else {
        tracing::warn!(credential = %name, "ignoring an unreadable connection definition");
        return false;
    };
    let Some(settings) = definition.settings(state) else {
        tracing::warn!(credential = %name, provider = %definition.provider, "ignoring a connection of a provider this broker does not configure");
        return false;
    };
    state.set_tags(name.as_str(), Some(definition.tags()));
    match state.keeper().add_credential(name, settings).await {
        Ok(()) => true,
        Err(authkeeper_core::KeeperError::AlreadyExists(_)) => true,
        Err(error) => {
            tracing::warn!(error = %error, "connection not added");
            false
        }
    }
}

/// Adds every connection the store defines (at start-up, before warm-up loads their tokens).
pub async fn load_all(state: &AppState) -> usize {
    let mut after: Option<RecordKey> = None;
    let mut added = 0;
    loop {
        let page = match state
            .records()
            .list_kind(CONNECTION, after.as_ref(), LOAD_PAGE)
            .await
        {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, "cannot list connections; they are added on first use");
                return added;
            }
        };
        let Some(last) = page.last() else {
            return added;
        };
        after = Some(last.key.clone());
        for record in page {
            let Ok(name) = CredentialName::new(record.key.part()) else {
                continue;
            };
            if state.keeper().is_connection(name.as_str())
                || state.keeper().credential(name.as_str()).is_some()
            {
                continue;
            }
            if add_defined(state, name, &record.data).await {
                added += 1;
            }
        }
    }
}
