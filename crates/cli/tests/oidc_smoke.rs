//! Temporary smoke test for the oidc-provider test helper (moves into tests.rs later).

use std::time::{Duration, Instant};

use crate::support::oidc_provider::{OidcProvider, base64url, sha256};
use serde_json::Value;

#[test]
fn sha256_and_base64url_match_rfc7636_example() {
    // RFC 7636 appendix B.
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    assert_eq!(
        base64url(&sha256(verifier.as_bytes())),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
    assert_eq!(
        base64url(&sha256(b"")),
        base64url(&[
            0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f,
            0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b,
            0x78, 0x52, 0xb8, 0x55
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_provider_rotates_and_revokes_grant_on_replay() -> anyhow::Result<()> {
    let started = Instant::now();
    let idp = OidcProvider::start(5)?;
    let ready = started.elapsed();
    let tokens = idp.login().await?;
    eprintln!(
        "oidc-provider ready in {ready:?}, login done in {:?}",
        started.elapsed() - ready
    );

    let access = tokens["access_token"].as_str().expect("access_token");
    let first_rt = tokens["refresh_token"].as_str().expect("refresh_token");
    let expires_in = tokens["expires_in"].as_u64().expect("expires_in");
    assert!((4..=5).contains(&expires_in), "expires_in {expires_in}");
    assert!(tokens["id_token"].is_string());
    assert_eq!(idp.userinfo_status(access).await?, 200);

    // Rotation: a refresh answers a new refresh token.
    let resp = idp.refresh(first_rt).await?;
    assert_eq!(resp.status(), 200);
    let refreshed: Value = resp.json().await?;
    let second_rt = refreshed["refresh_token"]
        .as_str()
        .expect("rotated refresh_token");
    assert_ne!(second_rt, first_rt);
    let second_access = refreshed["access_token"].as_str().unwrap();
    assert_eq!(idp.userinfo_status(second_access).await?, 200);

    // Replaying the consumed refresh token fails and revokes the whole grant...
    let resp = idp.refresh(first_rt).await?;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await?;
    assert_eq!(err["error"], "invalid_grant");
    // ...so the newest refresh token and its access token are dead too.
    let resp = idp.refresh(second_rt).await?;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await?["error"], "invalid_grant");
    assert_eq!(idp.userinfo_status(second_access).await?, 401);
    assert!(
        idp.stderr_log().contains("grant.revoked"),
        "{}",
        idp.stderr_log()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_expires_on_time_at_userinfo() -> anyhow::Result<()> {
    let idp = OidcProvider::start(2)?;
    let tokens = idp.login_as("bob").await?;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(idp.userinfo_status(access).await?, 200);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(idp.userinfo_status(access).await?, 401);
    assert_eq!(idp.introspect(access).await?["active"], false);
    let cc = idp.client_credentials().await?;
    assert!(cc["access_token"].is_string());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_flow_can_be_approved_by_the_helper() -> anyhow::Result<()> {
    let idp = OidcProvider::start(5)?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let device: Value = http
        .post(idp.device_authorization_url())
        .basic_auth(idp.client_id(), Some(idp.client_secret()))
        .form(&[("scope", "openid offline_access api")])
        .send()
        .await?
        .json()
        .await?;
    let device_code = device["device_code"].as_str().expect("device_code");
    let user_code = device["user_code"].as_str().expect("user_code");
    let poll = || async {
        http.post(idp.token_url())
            .basic_auth(idp.client_id(), Some(idp.client_secret()))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device_code),
            ])
            .send()
            .await
    };
    let pending: Value = poll().await?.json().await?;
    assert_eq!(pending["error"], "authorization_pending");
    idp.approve_device(user_code, "carol").await?;
    let resp = poll().await?;
    assert_eq!(resp.status(), 200);
    let tokens: Value = resp.json().await?;
    assert!(tokens["refresh_token"].is_string(), "{tokens}");
    Ok(())
}
