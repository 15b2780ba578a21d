//! The one authorization extractor: [`Authorized<R>`] reads the caller (authenticated by the
//! client-key middleware) and the resource named in the path, validates the name once, and
//! checks that the caller may use it — or answers the problem.
//!
//! A resource kind says how its name is parsed, which permission of the client key it needs, and
//! who may use it ([`Resource`]): [`TokenOf`], [`ProxyTo`] and [`StatusOf`] a credential
//! (`{name}`), [`Task`] (`{task}`), [`Site`] (`{site}`) and [`Lease`] (`{lease_id}`). An unknown
//! resource gets the same answer as a forbidden one, so a client cannot probe which names
//! exist.

use axum::extract::{FromRequestParts, Path};
use http::request::Parts;

use authkeeper_core::name::{CredentialName, SiteName, TaskName};

use crate::auth::ClientIdentity;
use crate::config::Permission;
use crate::problem::{Problem, ProblemType};
use crate::state::AppState;

/// A kind of resource named in a request path.
pub(crate) trait Resource {
    /// The validated name.
    type Name;
    /// The path parameter holding the name.
    const PARAM: &'static str;
    /// Whether the name is a credential's (a connection another replica created is looked up
    /// in the store before authorizing).
    const CREDENTIAL: bool = false;

    /// Validates `text` and checks that `client` may use what it names.
    fn authorize(
        state: &AppState,
        client: &ClientIdentity,
        text: &str,
    ) -> Result<Self::Name, Problem>;
}

/// The caller and the resource of kind `R` it may use.
pub(crate) struct Authorized<R: Resource> {
    /// Who calls.
    pub client: ClientIdentity,
    /// What it names in the path, validated and allowed.
    pub name: R::Name,
}

impl<R: Resource> FromRequestParts<AppState> for Authorized<R> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let client = parts
            .extensions
            .get::<ClientIdentity>()
            .cloned()
            .ok_or_else(|| Problem::unauthorized("a client key is required"))?;
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| Problem::invalid_request(format!("malformed {}", R::PARAM)))?;
        let text = params
            .iter()
            .find(|(key, _)| key == R::PARAM)
            .map(|(_, value)| value.as_str())
            .unwrap_or_default();
        if R::CREDENTIAL && !state.is_configured(text) {
            crate::connections::discover(state, text).await;
        }
        let name = R::authorize(state, &client, text)?;
        Ok(Authorized { client, name })
    }
}

fn missing(permission: Permission) -> Problem {
    Problem::new(
        ProblemType::Forbidden,
        format!(
            "this client key lacks the `{}` permission",
            permission.as_str()
        ),
    )
}

fn invalid_name(what: &str) -> Problem {
    Problem::invalid_request(format!(
        "a {what} is 1-128 ASCII letters, digits, '.', '_' or '-'"
    ))
}

/// `name` as a configured credential the client may use.
fn credential(
    state: &AppState,
    client: &ClientIdentity,
    text: &str,
) -> Result<CredentialName, Problem> {
    let name = CredentialName::new(text).map_err(|_| invalid_name("credential name"))?;
    if !client.may_use(&name, state.tags(&name).as_deref()) || !state.is_configured(&name) {
        return Err(Problem::forbidden());
    }
    Ok(name)
}

/// A credential's tokens (`/v1/credentials/{name}/token`, `rejected`): permission `token`.
pub(crate) struct TokenOf;

impl Resource for TokenOf {
    type Name = CredentialName;
    const PARAM: &'static str = "name";
    const CREDENTIAL: bool = true;

    fn authorize(
        state: &AppState,
        client: &ClientIdentity,
        text: &str,
    ) -> Result<CredentialName, Problem> {
        if !client.can(Permission::Token) {
            return Err(missing(Permission::Token));
        }
        credential(state, client, text)
    }
}

/// A credential's upstream (`/proxy/{name}/...`): permission `proxy`.
pub(crate) struct ProxyTo;

impl Resource for ProxyTo {
    type Name = CredentialName;
    const PARAM: &'static str = "name";
    const CREDENTIAL: bool = true;

    fn authorize(
        state: &AppState,
        client: &ClientIdentity,
        text: &str,
    ) -> Result<CredentialName, Problem> {
        if !client.can(Permission::Proxy) {
            return Err(missing(Permission::Proxy));
        }
        credential(state, client, text)
    }
}

/// A credential's status (`/v1/credentials/{name}`): permission `token` or `proxy`.
pub(crate) struct StatusOf;

impl Resource for StatusOf {
    type Name = CredentialName;
    const PARAM: &'static str = "name";
    const CREDENTIAL: bool = true;

    fn authorize(
        state: &AppState,
        client: &ClientIdentity,
        text: &str,
    ) -> Result<CredentialName, Problem> {
        if !client.can(Permission::Token) && !client.can(Permission::Proxy) {
            return Err(missing(Permission::Token));
        }
        credential(state, client, text)
    }
}

/// A task's checkpoint (`/v1/checkpoints/{task}`): the client's own tasks and those listed in
/// its `checkpoints`.
pub(crate) struct Task;

impl Resource for Task {
    type Name = TaskName;
    const PARAM: &'static str = "task";

    fn authorize(
        _state: &AppState,
        client: &ClientIdentity,
        text: &str,
    ) -> Result<TaskName, Problem> {
        if !client.can(Permission::Checkpoints) {
            return Err(missing(Permission::Checkpoints));
        }
        let task = TaskName::new(text).map_err(|_| invalid_name("task name"))?;
        if !client.may_use_checkpoint(&task) {
            return Err(Problem::new(
                ProblemType::Forbidden,
                "this client key may not use the checkpoint of this task",
            ));
        }
        Ok(task)
    }
}

/// A browser-session site (`/v1/sessions/{site}/lease`, `?site=`): configured and in the
/// client's `sites`.
pub(crate) struct Site;

impl Resource for Site {
    type Name = SiteName;
    const PARAM: &'static str = "site";

    fn authorize(
        state: &AppState,
        client: &ClientIdentity,
        text: &str,
    ) -> Result<SiteName, Problem> {
        if !client.can(Permission::Sessions) {
            return Err(missing(Permission::Sessions));
        }
        let site = SiteName::new(text).map_err(|_| invalid_name("site name"))?;
        let configured = state
            .sessions()
            .is_some_and(|pool| pool.site_names().any(|name| *name == site));
        if !configured || !client.may_use_site(&site) {
            return Err(Problem::new(
                ProblemType::Forbidden,
                "this client key may not use the requested site",
            ));
        }
        Ok(site)
    }
}

/// A session lease (`/v1/leases/{lease_id}/...`): its site must be one the client may use; any
/// other lease looks unknown.
pub(crate) struct Lease;

impl Resource for Lease {
    type Name = String;
    const PARAM: &'static str = "lease_id";

    fn authorize(state: &AppState, client: &ClientIdentity, text: &str) -> Result<String, Problem> {
        let unknown = || Problem::new(ProblemType::UnknownLease, "no such lease");
        let site = text.split('~').next().unwrap_or_default();
        if site.is_empty() || text.len() > 400 || state.sessions().is_none() {
            return Err(unknown());
        }
        Site::authorize(state, client, site).map_err(|_| unknown())?;
        Ok(text.to_owned())
    }
}
