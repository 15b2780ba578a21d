//! How the MCP tools reach the broker: its own router, in process (the broker's `/mcp` route),
//! or a broker over HTTP (`authkeeper mcp` on stdio). Either way every call goes through the
//! broker's authentication, permissions and problem answers, exactly as a worker's would.

use async_trait::async_trait;
use bytes::Bytes;
use tower::ServiceExt as _;
use url::Url;

/// The largest broker answer a tool reads (an upstream body through the proxy included).
pub const MAX_ANSWER: usize = 8 << 20;

/// Why a call did not reach the broker or its answer could not be read. Never holds a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The broker could not be reached.
    #[error("the broker could not be reached: {0}")]
    Unreachable(String),
    /// The answer is larger than [`MAX_ANSWER`].
    #[error("the broker's answer is larger than {MAX_ANSWER} bytes")]
    TooLarge,
}

/// Sends one request to the broker and reads its whole answer.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// `request`'s URI is a path and query (`/v1/...`, `/proxy/...`).
    async fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, BackendError>;
}

/// The broker's own router, called in process.
#[derive(Clone)]
pub struct RouterBackend {
    router: axum::Router,
}

impl RouterBackend {
    /// Calls into `router` (the broker's routes without `/mcp`).
    pub fn new(router: axum::Router) -> Self {
        RouterBackend { router }
    }
}

#[async_trait]
impl Backend for RouterBackend {
    async fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, BackendError> {
        let response = match self
            .router
            .clone()
            .oneshot(request.map(axum::body::Body::from))
            .await
        {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, MAX_ANSWER)
            .await
            .map_err(|_| BackendError::TooLarge)?;
        Ok(http::Response::from_parts(parts, body))
    }
}

/// A broker at a URL (`AUTHKEEPER_URL`).
#[derive(Debug, Clone)]
pub struct HttpBackend {
    base: String,
    client: reqwest::Client,
}

impl HttpBackend {
    /// A backend for the broker at `base` (`http://127.0.0.1:7878`); redirects are not followed.
    pub fn new(base: &Url) -> Result<Self, BackendError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BackendError::Unreachable(e.to_string()))?;
        Ok(HttpBackend {
            base: base.as_str().trim_end_matches('/').to_owned(),
            client,
        })
    }
}

#[async_trait]
impl Backend for HttpBackend {
    async fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, BackendError> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut outgoing = self
            .client
            .request(parts.method, format!("{}{path}", self.base))
            .body(body);
        for (name, value) in &parts.headers {
            outgoing = outgoing.header(name, value);
        }
        let mut response = outgoing.send().await.map_err(|e| {
            // reqwest's message names the URL (no secret: the key travels in a header).
            BackendError::Unreachable(e.without_url().to_string())
        })?;
        let mut answer = http::Response::builder().status(response.status());
        if let Some(headers) = answer.headers_mut() {
            headers.extend(response.headers().clone());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| BackendError::Unreachable(e.without_url().to_string()))?
        {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(BackendError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        answer
            .body(Bytes::from(body))
            .map_err(|e| BackendError::Unreachable(e.to_string()))
    }
}
