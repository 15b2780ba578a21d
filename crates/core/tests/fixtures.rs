//! Token responses as real providers send them, and broken ones.

use std::time::Duration;

use authkeeper_core::token::{ExpirySource, JwtTimes, ParsedTokenBody, TokenResponseError};
use authkeeper_core::{
    ExpiryDefaults, ExposeSecret, RefreshError, Timestamp, TokenResponse, TokenSet,
};
use base64::Engine as _;

const NOW: Timestamp = Timestamp::from_secs(1_700_000_000);

fn tokens(body: &str) -> TokenResponse {
    match TokenResponse::parse(body.as_bytes()) {
        Ok(ParsedTokenBody::Tokens(tokens)) => tokens,
        other => panic!("expected tokens from {body}: {other:?}"),
    }
}

fn defaults() -> ExpiryDefaults {
    ExpiryDefaults {
        default_lifetime: Duration::from_secs(7200),
    }
}

fn previous() -> TokenSet {
    TokenSet {
        access_token: authkeeper_core::secret::AccessToken::from("old-access"),
        token_type: "Bearer".into(),
        refresh_token: Some(authkeeper_core::secret::RefreshToken::from("kept-refresh")),
        id_token: None,
        scope: Some("a b".into()),
        issued_at: NOW - Duration::from_secs(3600),
        expires_at: NOW,
        refresh_token_expires_at: None,
        extra: Default::default(),
    }
}

#[test]
fn google_refresh_without_refresh_token_keeps_the_old_one() {
    let body = r#"{"access_token":"ya29.a0AfH6","expires_in":3599,"scope":"https://www.googleapis.com/auth/drive.readonly","token_type":"Bearer","id_token":"eyJhbGciOiJSUzI1NiJ9.e30.sig"}"#;
    let set = previous().refreshed_with(tokens(body), NOW, &defaults());
    assert_eq!(set.access_token.expose_secret(), "ya29.a0AfH6");
    assert_eq!(
        set.refresh_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned())
            .as_deref(),
        Some("kept-refresh")
    );
    assert_eq!(set.expires_at, NOW + Duration::from_secs(3599));
    assert!(set.id_token.is_some());
}

#[test]
fn microsoft_v2_keeps_unknown_fields() {
    let body = r#"{"token_type":"Bearer","scope":"User.Read","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0eXAi","refresh_token":"0.AAAA-new"}"#;
    let set = tokens(body).into_token_set(NOW, &defaults());
    assert_eq!(
        set.refresh_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned())
            .as_deref(),
        Some("0.AAAA-new")
    );
    assert_eq!(
        set.extra.get("ext_expires_in").and_then(|v| v.as_i64()),
        Some(3599)
    );
}

#[test]
fn azure_v1_sends_expires_in_as_a_string() {
    let body = r#"{"token_type":"Bearer","expires_in":"3599","ext_expires_in":"3599","expires_on":"1700003599","resource":"https://graph.windows.net","access_token":"eyJ0","refresh_token":"AQAB"}"#;
    let response = tokens(body);
    assert_eq!(
        response.expiry_source(),
        ExpirySource::ExpiresIn(Duration::from_secs(3599))
    );
    let set = response.into_token_set(NOW, &defaults());
    assert_eq!(set.expires_at, NOW + Duration::from_secs(3599));
    assert_eq!(
        set.extra.get("resource").and_then(|v| v.as_str()),
        Some("https://graph.windows.net")
    );
}

#[test]
fn github_form_encoded_and_refresh_token_expiry() {
    let form =
        "access_token=gho_16C7e42F292c6912E7710c838347Ae178B4a&scope=repo%2Cgist&token_type=bearer";
    let set = tokens(form).into_token_set(NOW, &defaults());
    assert_eq!(set.token_type, "Bearer");
    assert_eq!(set.scope.as_deref(), Some("repo,gist"));
    assert_eq!(
        set.expires_at,
        NOW + Duration::from_secs(7200),
        "no expiry: configured default"
    );
    let json = r#"{"access_token":"ghu_x","expires_in":28800,"refresh_token":"ghr_y","refresh_token_expires_in":15811200,"scope":"","token_type":"bearer"}"#;
    let set = tokens(json).into_token_set(NOW, &defaults());
    assert_eq!(
        set.refresh_token_expires_at,
        Some(NOW + Duration::from_secs(15_811_200))
    );
}

#[test]
fn github_error_inside_http_200() {
    let body = r#"{"error":"bad_refresh_token","error_description":"The refresh token passed is incorrect or expired.","error_uri":"https://docs.github.com"}"#;
    let Ok(ParsedTokenBody::Error(error)) = TokenResponse::parse(body.as_bytes()) else {
        panic!("expected an embedded error");
    };
    assert_eq!(error.error, "bad_refresh_token");
    let form = "error=bad_verification_code&error_description=The+code+passed+is+incorrect";
    assert!(matches!(
        TokenResponse::parse(form.as_bytes()),
        Ok(ParsedTokenBody::Error(_))
    ));
}

#[test]
fn salesforce_has_no_expires_in() {
    let body = r#"{"access_token":"00Dxx0000001gPL!AR8AQJXg","signature":"CMJ4l+CCaPQiKjoOEwEig9H4wqhpuLSk4J2urAe+fVg=","scope":"refresh_token full","instance_url":"https://yourInstance.salesforce.com","id":"https://login.salesforce.com/id/00Dx/005x","token_type":"Bearer","issued_at":"1278448384422"}"#;
    let response = tokens(body);
    assert_eq!(response.expiry_source(), ExpirySource::Default);
    let set = response.into_token_set(NOW, &defaults());
    assert_eq!(set.expires_at, NOW + Duration::from_secs(7200));
    assert_eq!(
        set.extra.get("instance_url").and_then(|v| v.as_str()),
        Some("https://yourInstance.salesforce.com")
    );
}

#[test]
fn slack_rotation_and_ok_false_errors() {
    let body = r#"{"ok":true,"access_token":"xoxe.xoxp-1-Mi0y","token_type":"user","expires_in":43200,"refresh_token":"xoxe-1-My0x","team":{"id":"T1"}}"#;
    let set = tokens(body).into_token_set(NOW, &defaults());
    assert_eq!(set.token_type, "user");
    assert_eq!(set.expires_at, NOW + Duration::from_secs(43200));
    let failure = br#"{"ok":false,"error":"invalid_refresh_token"}"#;
    let Ok(ParsedTokenBody::Error(error)) = TokenResponse::parse(failure) else {
        panic!("embedded error")
    };
    let classified = RefreshError::OAuth {
        status: 200,
        code: error.error,
        description: None,
        retry_after: None,
    };
    assert_eq!(classified.class(), authkeeper_core::ErrorClass::NeedsReauth);
}

fn jwt_with(claims: &str) -> String {
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.as_bytes());
    format!(r#"{{"access_token":"eyJhbGciOiJIUzI1NiJ9.{payload}.c2ln","token_type":"Bearer"}}"#)
}

#[test]
fn jwt_exp_is_used_when_expires_in_is_missing() {
    let response = tokens(&jwt_with(r#"{"sub":"x","exp":1700000900}"#));
    assert_eq!(
        response.expiry_source(),
        ExpirySource::Jwt(JwtTimes {
            exp: 1_700_000_900,
            iat: None
        })
    );
    assert_eq!(
        response.into_token_set(NOW, &defaults()).expires_at,
        Timestamp::from_secs(1_700_000_900)
    );
}

#[test]
fn jwt_lifetime_survives_a_provider_clock_ten_minutes_ahead() {
    // The provider's clock is 600 s ahead: iat and exp are both shifted; the lifetime is 300 s.
    let response = tokens(&jwt_with(
        r#"{"sub":"x","iat":1700000600,"exp":1700000900}"#,
    ));
    let set = response.into_token_set(NOW, &defaults());
    assert_eq!(set.expires_at, NOW + Duration::from_secs(300));
}

#[test]
fn broken_bodies_give_clear_errors_without_secrets() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "empty"),
        (b"   \n", "empty"),
        (
            b"<html><head><title>502 Bad Gateway</title></head></html>",
            "not JSON",
        ),
        (
            br#"{"access_token":"SECRET-TRUNC","expires_in":36"#,
            "malformed",
        ),
        (
            br#"{"token_type":"Bearer","expires_in":3600}"#,
            "no access_token",
        ),
        (
            br#"{"access_token":"","expires_in":3600}"#,
            "no access_token",
        ),
        (br#"{"access_token":12345}"#, "invalid value"),
        (
            br#"{"access_token":"SECRET-NEG","expires_in":-5}"#,
            "unusable expires_in",
        ),
        (
            br#"{"access_token":"SECRET-ZERO","expires_in":0}"#,
            "unusable expires_in",
        ),
        (
            br#"{"access_token":"SECRET-HUGE","expires_in":1e15}"#,
            "unusable expires_in",
        ),
        (
            br#"{"access_token":"SECRET-STR","expires_in":"soon"}"#,
            "unusable expires_in",
        ),
        (br#"["access_token"]"#, "malformed"),
        (b"\xff\xfe\x00garbage", "not JSON"),
    ];
    for (body, expected) in cases {
        let error = match TokenResponse::parse(body) {
            Err(error) => error,
            Ok(other) => panic!("{:?} parsed as {other:?}", String::from_utf8_lossy(body)),
        };
        let message = error.to_string();
        assert!(
            message.contains(expected),
            "{message:?} should mention {expected:?}"
        );
        assert!(
            !message.contains("SECRET"),
            "error message leaks a token: {message}"
        );
    }
    assert!(matches!(
        TokenResponse::parse(b""),
        Err(TokenResponseError::Empty)
    ));
}

#[test]
fn random_bodies_never_panic() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let pieces = [
        "{",
        "}",
        "\"access_token\"",
        ":",
        "\"x\"",
        ",",
        "\"expires_in\"",
        "1e308",
        "-1",
        "\"3600\"",
        "[",
        "]",
        "null",
        "&",
        "=",
        "access_token=",
        "error=",
        "<",
        "\u{feff}",
        "\"refresh_token\"",
        "true",
    ];
    for _ in 0..20_000 {
        let body: String = (0..rng.gen_range(0..14))
            .map(|_| pieces[rng.gen_range(0..pieces.len())])
            .collect();
        if let Ok(ParsedTokenBody::Tokens(tokens)) = TokenResponse::parse(body.as_bytes()) {
            let _ = tokens.into_token_set(NOW, &defaults());
        }
    }
}

#[test]
fn debug_output_never_shows_secrets() {
    let mut set = previous();
    set.extra.insert(
        "custom_secret".into(),
        serde_json::Value::String("PLANTED-EXTRA".into()),
    );
    let shown = format!(
        "{set:?} {:?}",
        tokens(r#"{"access_token":"PLANTED-ACCESS","refresh_token":"PLANTED-REFRESH"}"#)
    );
    for secret in ["old-access", "kept-refresh", "PLANTED"] {
        assert!(!shown.contains(secret), "Debug shows {secret}: {shown}");
    }
    assert!(
        shown.contains("custom_secret"),
        "extra field names are shown"
    );
}

#[test]
fn secret_json_round_trips() {
    let mut set = previous();
    set.extra
        .insert("instance_url".into(), serde_json::json!("https://x"));
    let bytes = set.to_secret_json();
    let back = TokenSet::from_secret_json(&bytes).expect("round trip");
    assert_eq!(back.access_token.expose_secret(), "old-access");
    assert_eq!(
        back.refresh_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned())
            .as_deref(),
        Some("kept-refresh")
    );
    assert_eq!(back.expires_at, set.expires_at);
    assert_eq!(back.extra, set.extra);
}
