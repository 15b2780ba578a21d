//! Bad input: malformed paths, invalid JSON, wrong content types, oversized bodies, unknown
//! routes and slowloris clients all get a clear answer and never stop the broker serving.

use std::time::{Duration, Instant};

use authkeeper_server::{Listen, ServerConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::common::{KEY_A, knobs, problem, start};

#[tokio::test]
async fn malformed_paths_and_unknown_routes_are_problems() {
    let t = start(knobs(60_000), None).await;
    let long = "x".repeat(5000);
    for path in [
        "/v1/credentials/%00/token".to_owned(),
        "/v1/credentials/%FF%FE/token".to_owned(),
        "/v1/credentials/a%20b/token".to_owned(),
        format!("/v1/credentials/{long}/token"),
    ] {
        let response = t.get(&path, Some(KEY_A)).send().await.expect("send");
        problem(response, 400, "invalid-request").await;
    }
    // `..` (sent raw: HTTP clients normalize dot segments) is a valid name no credential has.
    let raw = raw_get(&t.url, "/v1/credentials/../token").await;
    assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");
    assert!(raw.contains("urn:authkeeper:problem:forbidden"), "{raw}");
    let response = t
        .get("/v1/credentials/crm/token?min_ttl=abc", Some(KEY_A))
        .send()
        .await
        .expect("send");
    problem(response, 400, "invalid-request").await;
    let response = t
        .get("/v1/credentials/crm/token?min_ttl=99999", Some(KEY_A))
        .send()
        .await
        .expect("send");
    let body = problem(response, 400, "invalid-request").await;
    let largest = body["max_min_ttl"]
        .as_u64()
        .expect("the largest min_ttl is named");
    let response = t
        .get(
            &format!("/v1/credentials/crm/token?min_ttl={largest}"),
            Some(KEY_A),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200, "max_min_ttl is accepted");
    // A rejection of a generation never issued is refused and refreshes nothing.
    let response = t
        .http
        .post(format!("{}/v1/credentials/crm/rejected", t.url))
        .bearer_auth(KEY_A)
        .json(&serde_json::json!({ "generation": 99_999 }))
        .send()
        .await
        .expect("send");
    let body = problem(response, 400, "invalid-request").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("never issued"),
        "{body}"
    );
    let response = t
        .get("/v2/nothing", Some(KEY_A))
        .send()
        .await
        .expect("send");
    problem(response, 404, "not-found").await;
    let response = t
        .http
        .delete(format!("{}/v1/credentials/crm/token", t.url))
        .bearer_auth(KEY_A)
        .send()
        .await
        .expect("send");
    problem(response, 405, "method-not-allowed").await;
    // The proxy of a credential without upstream.
    let response = t
        .get("/proxy/other/x", Some(super::common::KEY_B))
        .send()
        .await
        .expect("send");
    problem(response, 404, "not-found").await;
}

#[tokio::test]
async fn rejected_bodies_are_validated() {
    let t = start(knobs(60_000), None).await;
    let post = |body: &'static str, content_type: &'static str| {
        t.http
            .post(format!("{}/v1/credentials/crm/rejected", t.url))
            .bearer_auth(KEY_A)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    for body in [
        "{",
        "{\"generation\": \"1\"}",
        "{\"generation\": -1}",
        "{}",
        "[]",
        "{\"generation\":1,\"x\":2}",
    ] {
        let response = post(body, "application/json").await.expect("send");
        problem(response, 400, "invalid-request").await;
    }
    let response = post("{\"generation\": 1}", "text/plain")
        .await
        .expect("send");
    problem(response, 415, "unsupported-media-type").await;
    let big = format!(
        "{{\"generation\": 1, \"pad\": \"{}\"}}",
        "x".repeat(70 * 1024)
    );
    let response = t
        .http
        .post(format!("{}/v1/credentials/crm/rejected", t.url))
        .bearer_auth(KEY_A)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("send");
    problem(response, 413, "payload-too-large").await;
    // A chunked body without Content-Length is cut at the limit too.
    let chunks =
        futures_util::stream::iter((0..80).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let response = t
        .http
        .post(format!("{}/v1/credentials/crm/rejected", t.url))
        .bearer_auth(KEY_A)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("send");
    problem(response, 413, "payload-too-large").await;
    // Still serving.
    let ok = t
        .get("/v1/credentials/crm/token", Some(KEY_A))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn a_slowloris_client_blocks_nobody_and_is_cut_off() {
    let server = ServerConfig {
        listen: Listen::Tcp("127.0.0.1:0".parse().expect("addr")),
        header_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let t = start(knobs(60_000), Some(server)).await;
    let addr = t.url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let started = Instant::now();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let slow_task = tokio::spawn(async move {
        for byte in request.iter().chain(std::iter::repeat(&b'a')) {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if started.elapsed() > Duration::from_secs(10) {
                return false;
            }
        }
        // The server closed the connection: reading gives EOF or an error.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(1), slow.read_to_end(&mut rest)).await;
        true
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    let ok = t
        .get("/v1/credentials/crm/token", Some(KEY_A))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        slow_task.await.expect("task"),
        "slow client was never cut off"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

/// Sends a raw HTTP/1.1 GET with client a's key and returns the whole answer.
async fn raw_get(url: &str, path: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
}
