//! Listeners: a Unix socket with mode 0600 (stale file replaced) and TLS with a self-signed
//! certificate.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};

use authkeeper_server::{Listen, ServerConfig, TlsConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::common::{KEY_A, knobs, start};

#[tokio::test]
async fn unix_socket_is_private_and_serves_http() {
    let dir = authkeeper_testkit::temp_dir();
    let path = dir.path().join("broker.sock");
    // A stale socket left by a crashed broker is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("stale socket"));
    let server = ServerConfig {
        listen: Listen::Unix(path.clone()),
        ..ServerConfig::default()
    };
    let t = start(knobs(60_000), Some(server)).await;
    assert_eq!(t.url, format!("unix:{}", path.display()));
    let meta = std::fs::metadata(&path).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let mut stream = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let request = format!(
        "GET /v1/credentials/crm/token HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY_A}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"access_token\""), "{response}");

    t.broker.shutdown().await.expect("shutdown");
    assert!(!path.exists(), "socket file removed at shutdown");
}

#[tokio::test]
async fn tls_listener_serves_https() {
    let dir = authkeeper_testkit::temp_dir();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).expect("write key");
    let server = ServerConfig {
        listen: Listen::Tcp("127.0.0.1:0".parse().expect("addr")),
        tls: Some(TlsConfig {
            cert: cert_path,
            key: key_path,
        }),
        ..ServerConfig::default()
    };
    let t = start(knobs(60_000), Some(server)).await;
    assert!(t.url.starts_with("https://127.0.0.1:"), "{}", t.url);
    let port = t.url.rsplit(':').next().expect("port");
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).expect("pem"),
        )
        .resolve(
            "localhost",
            ([127, 0, 0, 1], port.parse().expect("port")).into(),
        )
        .build()
        .expect("client");
    let response = client
        .get(format!("https://localhost:{port}/v1/credentials/crm/token"))
        .bearer_auth(KEY_A)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    // Plain HTTP to the TLS port gets no answer but does not disturb the listener.
    let plain = t
        .http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != 200));
    let again = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .expect("send");
    assert_eq!(again.status(), 200);
}
