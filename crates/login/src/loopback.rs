//! The loopback redirect listener of a native app (RFC 8252 §7.3): binds `127.0.0.1` on an
//! ephemeral (or configured) port, waits for the browser's `GET /callback?...`, answers a small
//! page, and hands the query parameters over.
//!
//! One request at a time, each read with a short timeout and a size limit; anything that is
//! not the callback (a favicon request, a probe) gets a 404 and waiting goes on. This is not a
//! web server: it reads one request head per connection and closes it.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use zeroize::Zeroizing;

use super::LoginError;

/// The redirect path.
pub const CALLBACK_PATH: &str = "/callback";
/// Largest request head read.
const MAX_REQUEST: usize = 16 * 1024;
/// Time allowed to one connection to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The query parameters of the redirect. Holds the authorization code: `Debug` shows only the
/// parameter names.
pub struct CallbackParams {
    params: HashMap<String, Zeroizing<String>>,
}

impl CallbackParams {
    /// Parses a query string.
    pub fn from_query(query: &str) -> CallbackParams {
        let mut params = HashMap::new();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            // A repeated parameter keeps its first value; `state` and `code` are checked anyway.
            params
                .entry(key.into_owned())
                .or_insert_with(|| Zeroizing::new(value.into_owned()));
        }
        CallbackParams { params }
    }

    /// One parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(|v| v.as_str())
    }
}

impl fmt::Debug for CallbackParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.params.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("CallbackParams")
            .field("names", &names)
            .finish_non_exhaustive()
    }
}

/// A bound loopback listener.
#[derive(Debug)]
pub struct LoopbackListener {
    listener: TcpListener,
    port: u16,
}

impl LoopbackListener {
    /// Binds `127.0.0.1:port` (0: any free port).
    pub async fn bind(port: u16) -> Result<LoopbackListener, LoginError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| LoginError::Loopback {
                message: format!("cannot listen on {addr}"),
                source,
            })?;
        let port = listener
            .local_addr()
            .map_err(|source| LoginError::Loopback {
                message: "cannot read the bound address".into(),
                source,
            })?
            .port();
        Ok(LoopbackListener { listener, port })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/callback`.
    pub fn redirect_uri(&self) -> String {
        format!("http://127.0.0.1:{}{CALLBACK_PATH}", self.port)
    }

    /// Waits for the callback request, judges it with `check` and answers the browser with a
    /// page saying whether the login worked. Returns `check`'s result.
    pub async fn wait_for_callback<T>(
        &self,
        mut check: impl FnMut(&CallbackParams) -> Result<T, LoginError>,
    ) -> Result<T, LoginError> {
        loop {
            let (stream, _) =
                self.listener
                    .accept()
                    .await
                    .map_err(|source| LoginError::Loopback {
                        message: "accept failed".into(),
                        source,
                    })?;
            let Ok(Some(target)) = tokio::time::timeout(READ_TIMEOUT, read_target(&stream)).await
            else {
                continue;
            };
            let mut stream = stream;
            let Some(query) = callback_query(&target) else {
                let _ = respond(&mut stream, "404 Not Found", "Not found.").await;
                continue;
            };
            let params = CallbackParams::from_query(&query);
            let outcome = check(&params);
            let page = match &outcome {
                Ok(_) => page(
                    "Login complete",
                    "authkeeper received the authorization. You can close this tab.",
                ),
                Err(error) => page(
                    "Login failed",
                    &format!(
                        "authkeeper could not complete the login: {}. You can close this tab.",
                        html_escape(&error.to_string())
                    ),
                ),
            };
            let status = if outcome.is_ok() {
                "200 OK"
            } else {
                "400 Bad Request"
            };
            let _ = respond(&mut stream, status, &page).await;
            return outcome;
        }
    }
}

/// Reads the request head and returns the request target of a `GET`.
async fn read_target(stream: &TcpStream) -> Option<Zeroizing<String>> {
    let mut head = Zeroizing::new(Vec::with_capacity(1024));
    let mut buf = [0u8; 2048];
    loop {
        stream.readable().await.ok()?;
        match stream.try_read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => {
                head.extend_from_slice(&buf[..n]);
                buf.fill(0);
                if head.windows(4).any(|w| w == b"\r\n\r\n")
                    || head.windows(2).any(|w| w == b"\n\n")
                {
                    break;
                }
                if head.len() > MAX_REQUEST {
                    return None;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
    }
    let text = std::str::from_utf8(&head).ok()?;
    let line = text.lines().next()?;
    let mut parts = line.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    (method == "GET").then(|| Zeroizing::new(target.to_owned()))
}

/// The query of a request target for the callback path.
fn callback_query(target: &str) -> Option<Zeroizing<String>> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    (path == CALLBACK_PATH).then(|| Zeroizing::new(query.to_owned()))
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    // Drain what the client may still send so the close does not reset the connection.
    let mut sink = [0u8; 512];
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut sink)).await;
    Ok(())
}

fn page(title: &str, message: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title} - authkeeper</title></head>\
         <body style=\"font-family: sans-serif; margin: 3em\"><h1>{title}</h1><p>{message}</p></body></html>"
    )
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_callback_path_is_accepted() {
        assert_eq!(
            callback_query("/callback?code=x&state=y")
                .as_deref()
                .map(String::as_str),
            Some("code=x&state=y")
        );
        assert!(callback_query("/favicon.ico").is_none());
        assert!(callback_query("/callbackx?code=1").is_none());
    }

    #[test]
    fn params_debug_hides_values() {
        let params = CallbackParams::from_query("code=secret-code&state=s1");
        assert_eq!(params.get("code"), Some("secret-code"));
        assert!(!format!("{params:?}").contains("secret-code"));
    }
}
