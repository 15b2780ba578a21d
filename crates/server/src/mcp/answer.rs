//! Turning broker answers into tool results: problems become tool errors an agent can act on
//! (needs-reauth names the login a human must run), upstream answers become a compact JSON
//! summary without secrets (no `Set-Cookie`, no credential).

use bytes::Bytes;
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{Map, Value, json};

/// The most characters of an upstream body a tool result carries.
pub const MAX_BODY_CHARS: usize = 64 * 1024;

/// Upstream response headers worth showing an agent (never `Set-Cookie`).
const SHOWN_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "location",
    "retry-after",
    "etag",
    "last-modified",
    "link",
];

/// A successful tool result holding `value` as pretty JSON text.
pub fn json_result(value: &Value) -> CallToolResult {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    CallToolResult::success(vec![ContentBlock::text(text)])
}

/// A tool error with `text`.
pub fn tool_error(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text.into())])
}

/// Whether the answer is one of the broker's own problems (`urn:authkeeper:problem:*`).
pub fn broker_problem(response: &http::Response<Bytes>) -> Option<Value> {
    let is_problem = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    if !is_problem {
        return None;
    }
    let problem: Value = serde_json::from_slice(response.body()).ok()?;
    problem["type"]
        .as_str()
        .is_some_and(|t| t.starts_with("urn:authkeeper:problem:"))
        .then_some(problem)
}

/// The tool error for a broker problem: what happened and what to do.
pub fn problem_error(problem: &Value, retry_after: Option<&str>) -> CallToolResult {
    let kind = problem["type"]
        .as_str()
        .and_then(|t| t.strip_prefix("urn:authkeeper:problem:"))
        .unwrap_or("problem");
    let detail = problem["detail"].as_str().unwrap_or("");
    let status = problem["status"].as_u64().unwrap_or(0);
    let text = match kind {
        "needs-reauth" => {
            let credential = problem["credential"].as_str().unwrap_or("the credential");
            let hint = problem["login_hint"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("authkeeper login {credential}"));
            format!(
                "needs-reauth: {detail}. Refreshing cannot help: a human must log in again with `{hint}`. Save your progress (save_checkpoint) and stop, or call wait_for_reauth to continue once they have."
            )
        }
        "unavailable"
        | "store-unavailable"
        | "timeout"
        | "upstream-unavailable"
        | "upstream-timeout" => match retry_after {
            Some(after) => {
                format!("{kind} ({status}): {detail}. Temporary: retry after {after} s.")
            }
            None => format!("{kind} ({status}): {detail}. Temporary: retry later."),
        },
        "forbidden" => format!(
            "forbidden ({status}): {detail}. This agent's client key may not do this; ask the operator to allow it."
        ),
        _ => format!("{kind} ({status}): {detail}"),
    };
    tool_error(text)
}

/// The JSON summary of an upstream answer (through the injecting proxy): status, the headers
/// in [`SHOWN_HEADERS`] and `x-ratelimit-*`/`ratelimit-*`, and the body (JSON when it parses,
/// else text, truncated at [`MAX_BODY_CHARS`]; binary bodies are described, not included).
pub fn upstream_summary(response: &http::Response<Bytes>) -> Value {
    let mut headers = Map::new();
    for (name, value) in response.headers() {
        let name = name.as_str();
        let shown = SHOWN_HEADERS.contains(&name)
            || name.starts_with("x-ratelimit-")
            || name.starts_with("ratelimit");
        if let (true, Ok(value)) = (shown, value.to_str()) {
            headers.insert(name.to_owned(), Value::String(value.to_owned()));
        }
    }
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let raw = response.body();
    let mut summary = json!({ "status": response.status().as_u16(), "headers": headers });
    let json_body = content_type.contains("json")
        && raw.len() <= MAX_BODY_CHARS
        && serde_json::from_slice::<Value>(raw).is_ok();
    if json_body {
        summary["body"] = serde_json::from_slice(raw).unwrap_or(Value::Null);
    } else if let Ok(text) = std::str::from_utf8(raw) {
        if text.chars().count() > MAX_BODY_CHARS {
            summary["body"] = Value::String(text.chars().take(MAX_BODY_CHARS).collect());
            summary["truncated"] = Value::Bool(true);
        } else {
            summary["body"] = Value::String(text.to_owned());
        }
    } else {
        summary["body"] = Value::String(format!(
            "<{} bytes of binary {}>",
            raw.len(),
            if content_type.is_empty() {
                "data"
            } else {
                content_type
            }
        ));
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, content_type: &str, body: &str) -> http::Response<Bytes> {
        http::Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("set-cookie", "sid=SECRET")
            .header("x-ratelimit-remaining", "9")
            .body(Bytes::from(body.to_owned()))
            .unwrap()
    }

    #[test]
    fn upstream_answers_are_summarised_without_cookies() {
        let summary = upstream_summary(&response(200, "application/json", r#"{"a":1}"#));
        assert_eq!(summary["status"], 200);
        assert_eq!(summary["body"]["a"], 1);
        assert_eq!(summary["headers"]["x-ratelimit-remaining"], "9");
        assert!(!summary.to_string().contains("SECRET"));
        let long = "x".repeat(MAX_BODY_CHARS + 10);
        let summary = upstream_summary(&response(200, "text/plain", &long));
        assert_eq!(summary["truncated"], true);
    }

    #[test]
    fn needs_reauth_names_the_login() {
        let problem = json!({
            "type": "urn:authkeeper:problem:needs-reauth",
            "status": 409,
            "detail": "credential `crm` needs re-authentication: invalid_grant",
            "credential": "crm",
            "login_hint": "authkeeper login crm",
        });
        let result = problem_error(&problem, None);
        assert_eq!(result.is_error, Some(true));
        let text = serde_json::to_string(&result.content).unwrap();
        assert!(text.contains("authkeeper login crm"), "{text}");
        assert!(broker_problem(&response(409, "application/json", "{}")).is_none());
    }
}
