//! `authkeeper credentials list|show|add|rm`: connections through a running broker's API
//! (`AUTHKEEPER_URL` or `--url`, client key in `AUTHKEEPER_API_KEY`, never an argument).

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::cli::CredentialsCommand;
use crate::exit::ConfigurationError;

/// The broker's address and the key to call it with.
struct Broker {
    url: url::Url,
    key: String,
    http: reqwest::Client,
}

impl Broker {
    fn from_env(url: Option<url::Url>) -> anyhow::Result<Broker> {
        let url = match url {
            Some(url) => url,
            None => std::env::var("AUTHKEEPER_URL")
                .map_err(|_| {
                    ConfigurationError(
                        "set AUTHKEEPER_URL (or --url) to the broker's address".into(),
                    )
                })?
                .parse()
                .map_err(|e| ConfigurationError(format!("AUTHKEEPER_URL: {e}")))?,
        };
        let key = std::env::var("AUTHKEEPER_API_KEY").map_err(|_| {
            ConfigurationError(
                "set AUTHKEEPER_API_KEY to a client key with the `credentials:write` permission (never pass it as an argument)".into(),
            )
        })?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Broker { url, key, http })
    }

    /// Sends a request and returns the JSON answer, or the broker's problem as the error.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = self.url.join(path).context("invalid broker URL")?;
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(&self.key)
            .query(query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the broker at {}", self.url))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        if status.is_success() {
            return Ok(value);
        }
        let detail = value["detail"].as_str().unwrap_or("no detail");
        let kind = value["type"]
            .as_str()
            .and_then(|t| t.rsplit(':').next())
            .unwrap_or("error");
        anyhow::bail!("the broker answered {status} {kind}: {detail}")
    }
}

fn segment(name: &str) -> String {
    // Names are [A-Za-z0-9._-]: nothing to escape, but never let a slash through.
    name.replace('/', "%2F")
}

fn print_row(out: &mut impl std::io::Write, credential: &Value) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<32} {:<13} gen {:<5} expires {}",
        credential["name"].as_str().unwrap_or("?"),
        credential["state"].as_str().unwrap_or("?"),
        credential["generation"].as_u64().unwrap_or(0),
        credential["expires_at"].as_str().unwrap_or("-"),
    )
}

pub async fn run(command: CredentialsCommand) -> anyhow::Result<ExitCode> {
    match command {
        CredentialsCommand::List {
            url,
            provider,
            label,
            state,
            json: as_json,
        } => {
            let broker = Broker::from_env(url)?;
            let mut query: Vec<(&str, String)> = vec![("limit", "1000".to_owned())];
            for (key, value) in [("provider", provider), ("label", label), ("state", state)] {
                if let Some(value) = value {
                    query.push((key, value));
                }
            }
            let mut out = std::io::stdout().lock();
            let mut cursor: Option<String> = None;
            loop {
                let mut page_query = query.clone();
                if let Some(cursor) = &cursor {
                    page_query.push(("cursor", cursor.clone()));
                }
                let page = broker
                    .call(reqwest::Method::GET, "/v1/credentials", &page_query, None)
                    .await?;
                for credential in page["credentials"].as_array().into_iter().flatten() {
                    if as_json {
                        writeln!(out, "{credential}")?;
                    } else {
                        print_row(&mut out, credential)?;
                    }
                }
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => break,
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CredentialsCommand::Show { url, name } => {
            let broker = Broker::from_env(url)?;
            let status = broker
                .call(
                    reqwest::Method::GET,
                    &format!("/v1/credentials/{}", segment(&name)),
                    &[],
                    None,
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(ExitCode::SUCCESS)
        }
        CredentialsCommand::Add {
            url,
            name,
            provider,
            labels,
            scopes,
            token_response,
        } => {
            let broker = Broker::from_env(url)?;
            let mut label_map = serde_json::Map::new();
            for label in labels {
                let (key, value) = label.split_once('=').ok_or_else(|| {
                    ConfigurationError(format!("--label {label:?}: write KEY=VALUE"))
                })?;
                label_map.insert(key.to_owned(), Value::String(value.to_owned()));
            }
            let mut body = json!({ "name": name, "provider": provider, "labels": label_map });
            if !scopes.is_empty() {
                body["scopes"] = json!(scopes);
            }
            if token_response {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("cannot read the token response from stdin")?;
                let response: Value =
                    serde_json::from_str(&text).context("stdin is not a JSON token response")?;
                body["token_response"] = response;
            }
            let status = broker
                .call(reqwest::Method::POST, "/v1/credentials", &[], Some(body))
                .await?;
            print_row(&mut std::io::stdout().lock(), &status)?;
            Ok(ExitCode::SUCCESS)
        }
        CredentialsCommand::Rm { url, name } => {
            let broker = Broker::from_env(url)?;
            broker
                .call(
                    reqwest::Method::DELETE,
                    &format!("/v1/credentials/{}", segment(&name)),
                    &[],
                    None,
                )
                .await?;
            println!("deleted {name}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
