//! The tools an agent gets: call an API through the injecting proxy, follow a credential's
//! state, lease and return a browser session, save and load its checkpoint. The model never
//! sees a token or a cookie value.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use authkeeper_core::{ExposeSecret as _, SecretString};
use bytes::Bytes;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::answer::{broker_problem, json_result, problem_error, tool_error, upstream_summary};
use super::backend::Backend;

/// Request headers a tool call may not set: the broker injects the credential itself.
const REFUSED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "connection",
    "transfer-encoding",
    "content-length",
];

/// Where the client key of a tool call comes from.
#[derive(Clone)]
pub enum KeySource {
    /// One key for every call (`authkeeper mcp` on stdio: `AUTHKEEPER_API_KEY`).
    Fixed(SecretString),
    /// The `Authorization` header of the MCP HTTP request (the broker's `/mcp` route).
    FromRequest,
}

/// The authkeeper MCP server: tools over a [`Backend`].
#[derive(Clone)]
pub struct AuthkeeperMcp {
    backend: Arc<dyn Backend>,
    key: KeySource,
    default_task: Option<String>,
    /// Where leased storage states are written for the agent's browser tool (stdio only).
    lease_dir: Option<PathBuf>,
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for AuthkeeperMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthkeeperMcp")
            .field("default_task", &self.default_task)
            .field("lease_dir", &self.lease_dir)
            .finish_non_exhaustive()
    }
}

/// `call_api` arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CallApi {
    /// The credential whose API to call; the broker adds its token (you never see it).
    pub credential: String,
    /// HTTP method (default GET).
    #[serde(default)]
    pub method: Option<String>,
    /// Path (and query) below the credential's API base, e.g. `/v2/contacts?limit=10`.
    pub path: String,
    /// Extra request headers (not Authorization, Cookie or Host).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body: a JSON value (sent as application/json) or a string (sent as is).
    #[serde(default)]
    pub body: Option<Value>,
}

/// A credential name.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CredentialArg {
    /// The credential.
    pub credential: String,
}

/// `wait_for_reauth` arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct WaitForReauth {
    /// The credential a human must log in again.
    pub credential: String,
    /// How long to wait, in seconds (1-300, default 60).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// `lease_session` arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct LeaseSession {
    /// The site (`[sites.NAME]`).
    pub site: String,
    /// A particular account of the site.
    #[serde(default)]
    pub account: Option<String>,
    /// How long the lease lasts unless renewed, in seconds.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// `renew_session` arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RenewSession {
    /// The lease from `lease_session`.
    pub lease_id: String,
    /// The new TTL in seconds (default: the lease's own).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// `release_session` arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ReleaseSession {
    /// The lease from `lease_session`.
    pub lease_id: String,
    /// How it went: `ok`, `error`, `blocked` or `logged-out` (default `ok`).
    #[serde(default)]
    pub outcome: Option<String>,
}

/// `save_checkpoint` arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SaveCheckpoint {
    /// The task (default: this agent's task).
    #[serde(default)]
    pub task: Option<String>,
    /// Any JSON: the progress to resume from.
    pub data: Value,
}

/// `load_checkpoint` arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct LoadCheckpoint {
    /// The task (default: this agent's task).
    #[serde(default)]
    pub task: Option<String>,
}

/// Percent-encodes one path segment.
fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The bearer key of a tool call (from the HTTP request in the broker's `/mcp` route).
fn request_key(context: &RequestContext<RoleServer>) -> Option<String> {
    context
        .extensions
        .get::<http::request::Parts>()?
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()
        .map(str::to_owned)
}

impl AuthkeeperMcp {
    /// Tools over `backend`, authenticated by `key`. `default_task` is the checkpoint task of
    /// calls that name none; `lease_dir` (stdio only) is where leased storage states are written.
    pub fn new(
        backend: Arc<dyn Backend>,
        key: KeySource,
        default_task: Option<String>,
        lease_dir: Option<PathBuf>,
    ) -> Self {
        AuthkeeperMcp {
            backend,
            key,
            default_task,
            lease_dir,
            tool_router: Self::tool_router(),
        }
    }

    /// Sends a request to the broker with the call's client key.
    async fn broker(
        &self,
        context: &RequestContext<RoleServer>,
        method: http::Method,
        path: &str,
        headers: &[(http::HeaderName, http::HeaderValue)],
        body: Bytes,
    ) -> Result<http::Response<Bytes>, CallToolResult> {
        let authorization = match &self.key {
            KeySource::Fixed(key) => format!("Bearer {}", key.expose_secret()),
            KeySource::FromRequest => request_key(context)
                .ok_or_else(|| tool_error("unauthorized: the MCP request carried no client key"))?,
        };
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::AUTHORIZATION, authorization);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(body)
            .map_err(|e| tool_error(format!("invalid request: {e}")))?;
        self.backend
            .send(request)
            .await
            .map_err(|e| tool_error(e.to_string()))
    }

    /// Calls a broker API route; its problems become tool errors, its JSON the value.
    async fn api(
        &self,
        context: &RequestContext<RoleServer>,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(http::StatusCode, Value), CallToolResult> {
        let (headers, body) = match body {
            Some(body) => (
                vec![(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                )],
                Bytes::from(body.to_string()),
            ),
            None => (Vec::new(), Bytes::new()),
        };
        let response = self.broker(context, method, path, &headers, body).await?;
        if let Some(problem) = broker_problem(&response) {
            return Err(problem_error(&problem, retry_after(&response)));
        }
        let status = response.status();
        let value = if response.body().is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(response.body()).unwrap_or(Value::Null)
        };
        Ok((status, value))
    }

    fn task(&self, task: Option<String>) -> Result<String, CallToolResult> {
        task.or_else(|| self.default_task.clone())
            .ok_or_else(|| tool_error("name the task: this server has no default checkpoint task"))
    }

    fn lease_file(&self, lease_id: &str) -> Option<PathBuf> {
        let safe: String = lease_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.lease_dir
            .as_ref()
            .map(|dir| dir.join(format!("{safe}.json")))
    }
}

fn retry_after(response: &http::Response<Bytes>) -> Option<&str> {
    response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
}

/// Unwraps a step that answers with a tool result when it fails.
macro_rules! attempt {
    ($step:expr) => {
        match $step {
            Ok(value) => value,
            Err(result) => return Ok(result),
        }
    };
}

#[tool_router]
impl AuthkeeperMcp {
    /// Calls an API through the broker's credential-injecting proxy.
    #[tool(
        description = "Call the API behind a credential. The broker adds the credential's token, refreshes it when needed and retries once on a rejected token; you never see the token. Returns the status, selected headers and the body."
    )]
    async fn call_api(
        &self,
        Parameters(call): Parameters<CallApi>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        if authkeeper_core::CredentialName::new(&call.credential).is_err() {
            return Ok(tool_error(format!(
                "invalid credential name {:?}",
                call.credential
            )));
        }
        if !call.path.starts_with('/') {
            return Ok(tool_error("path must start with `/`"));
        }
        let method = call.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
        let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
            return Ok(tool_error(format!("invalid HTTP method {method:?}")));
        };
        let mut headers = Vec::new();
        for (name, value) in &call.headers {
            let lower = name.to_ascii_lowercase();
            if REFUSED_HEADERS.contains(&lower.as_str()) {
                return Ok(tool_error(format!(
                    "header {name} may not be set: the broker authenticates the call"
                )));
            }
            match (
                http::HeaderName::from_bytes(lower.as_bytes()),
                http::HeaderValue::from_str(value),
            ) {
                (Ok(name), Ok(value)) => headers.push((name, value)),
                _ => return Ok(tool_error(format!("invalid header {name:?}"))),
            }
        }
        let has_type = headers.iter().any(|(n, _)| n == http::header::CONTENT_TYPE);
        let body = match call.body {
            None | Some(Value::Null) => Bytes::new(),
            Some(Value::String(text)) => Bytes::from(text),
            Some(value) => {
                if !has_type {
                    headers.push((
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    ));
                }
                Bytes::from(value.to_string())
            }
        };
        let path = format!("/proxy/{}{}", call.credential, call.path);
        let response = attempt!(self.broker(&context, method, &path, &headers, body).await);
        if let Some(problem) = broker_problem(&response) {
            return Ok(problem_error(&problem, retry_after(&response)));
        }
        Ok(json_result(&upstream_summary(&response)))
    }

    /// The state of a credential (never a secret).
    #[tool(
        description = "Show a credential's state: valid, backing_off, needs_reauth; its expiry, generation, last refresh, failures and the reason it is not valid."
    )]
    async fn credential_status(
        &self,
        Parameters(arg): Parameters<CredentialArg>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let path = format!("/v1/credentials/{}", segment(&arg.credential));
        let (_, status) = attempt!(self.api(&context, http::Method::GET, &path, None).await);
        Ok(json_result(&status))
    }

    /// Waits until a human has logged a credential in again.
    #[tool(
        description = "After a needs-reauth error: wait until a human has logged the credential in again (up to timeout_seconds, default 60). Returns whether it works again."
    )]
    async fn wait_for_reauth(
        &self,
        Parameters(arg): Parameters<WaitForReauth>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let timeout = Duration::from_secs(arg.timeout_seconds.unwrap_or(60).clamp(1, 300));
        let deadline = tokio::time::Instant::now() + timeout;
        let path = format!("/v1/credentials/{}", segment(&arg.credential));
        loop {
            let (_, status) = attempt!(self.api(&context, http::Method::GET, &path, None).await);
            if status["state"] == "valid" {
                return Ok(json_result(&json!({
                    "credential": arg.credential,
                    "works": true,
                    "generation": status["generation"],
                })));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(json_result(&json!({
                    "credential": arg.credential,
                    "works": false,
                    "state": status["state"],
                    "login_hint": status["login_hint"],
                })));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Leases a logged-in browser session.
    #[tool(
        description = "Lease a logged-in browser session of a site for this agent alone. Returns the lease id, account and expiry and, when this server runs beside the agent, the path of a Playwright storageState file to open a browser context with (cookie values are never shown). Release it with release_session."
    )]
    async fn lease_session(
        &self,
        Parameters(arg): Parameters<LeaseSession>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let body = json!({ "account": arg.account, "lease_ttl": arg.ttl_seconds });
        let path = format!("/v1/sessions/{}/lease", segment(&arg.site));
        let (_, mut lease) = attempt!(
            self.api(&context, http::Method::POST, &path, Some(&body))
                .await
        );
        let state = lease
            .as_object_mut()
            .and_then(|fields| fields.remove("storage_state"))
            .unwrap_or(Value::Null);
        let had_proxy = lease
            .as_object_mut()
            .and_then(|fields| fields.remove("proxy"))
            .is_some_and(|proxy| !proxy.is_null());
        lease["uses_proxy"] = Value::Bool(had_proxy);
        let lease_id = lease["lease_id"].as_str().unwrap_or_default().to_owned();
        if let Some(file) = self.lease_file(&lease_id) {
            if let Err(error) = write_private(&file, &state) {
                return Ok(tool_error(format!(
                    "the session was leased but its state could not be written: {error}"
                )));
            }
            lease["storage_state_path"] = Value::String(file.display().to_string());
        }
        Ok(json_result(&lease))
    }

    /// Renews a lease.
    #[tool(description = "Keep a leased session for longer (renews the lease).")]
    async fn renew_session(
        &self,
        Parameters(arg): Parameters<RenewSession>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let body = json!({ "lease_ttl": arg.ttl_seconds });
        let path = format!("/v1/leases/{}/heartbeat", segment(&arg.lease_id));
        let (_, answer) = attempt!(
            self.api(&context, http::Method::POST, &path, Some(&body))
                .await
        );
        Ok(json_result(&answer))
    }

    /// Returns a leased session.
    #[tool(
        description = "Return a leased session with how it went: ok, error, blocked (the site refused this identity) or logged-out. The storageState file, if any, is sent back (the session keeps the cookies the work earned) and deleted."
    )]
    async fn release_session(
        &self,
        Parameters(arg): Parameters<ReleaseSession>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let outcome = arg.outcome.unwrap_or_else(|| "ok".to_owned());
        let mut body = json!({ "outcome": outcome });
        let file = self.lease_file(&arg.lease_id);
        if let Some(file) = &file
            && let Ok(text) = std::fs::read(file)
            && let Ok(state) = serde_json::from_slice::<Value>(&text)
            && state.is_object()
            && matches!(outcome.as_str(), "ok" | "error")
        {
            body["storage_state"] = state;
        }
        let path = format!("/v1/leases/{}/release", segment(&arg.lease_id));
        let result = self
            .api(&context, http::Method::POST, &path, Some(&body))
            .await;
        if let Some(file) = &file {
            let _ = std::fs::remove_file(file);
        }
        let (_, answer) = attempt!(result);
        Ok(json_result(&answer))
    }

    /// Saves the task's progress.
    #[tool(
        description = "Save this task's progress (any JSON) so that it can resume after a restart or a re-login."
    )]
    async fn save_checkpoint(
        &self,
        Parameters(arg): Parameters<SaveCheckpoint>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let task = attempt!(self.task(arg.task));
        let path = format!("/v1/checkpoints/{}", segment(&task));
        let (_, answer) = attempt!(
            self.api(&context, http::Method::PUT, &path, Some(&arg.data))
                .await
        );
        Ok(json_result(&answer))
    }

    /// Loads the task's progress.
    #[tool(description = "Load this task's saved progress; `found: false` when nothing is saved.")]
    async fn load_checkpoint(
        &self,
        Parameters(arg): Parameters<LoadCheckpoint>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let task = attempt!(self.task(arg.task));
        let path = format!("/v1/checkpoints/{}", segment(&task));
        let response = attempt!(
            self.broker(&context, http::Method::GET, &path, &[], Bytes::new())
                .await
        );
        if response.status() == http::StatusCode::NOT_FOUND {
            return Ok(json_result(&json!({ "task": task, "found": false })));
        }
        if let Some(problem) = broker_problem(&response) {
            return Ok(problem_error(&problem, retry_after(&response)));
        }
        let data: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        Ok(json_result(
            &json!({ "task": task, "found": true, "data": data }),
        ))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for AuthkeeperMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("authkeeper", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "authkeeper keeps this agent's credentials and browser sessions alive. Call APIs with call_api (the token is added for you), lease browser sessions with lease_session/release_session, and save progress with save_checkpoint. A needs-reauth error means a human must log in again: save progress, then stop or wait_for_reauth.",
            )
    }
}

/// Writes `value` to `file` readable by its owner only.
fn write_private(file: &std::path::Path, value: &Value) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)?;
    out.write_all(value.to_string().as_bytes())
}
