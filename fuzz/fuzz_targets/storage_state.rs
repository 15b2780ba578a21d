//! `StorageState::from_json` → `to_json` → `from_json`: no panic, the export is a fixed point,
//! serde embedding round-trips, `Debug` and errors never show a cookie or localStorage value, and
//! the jar helpers accept whatever parsed.
#![no_main]

use authkeeper_core::Timestamp;
use authkeeper_session::jar::{cookie_header, merge_set_cookie};
use authkeeper_session::storage_state::StorageState;
use libfuzzer_sys::fuzz_target;
use url::Url;

const MIN_LEAK: usize = 8;
const NOW: Timestamp = Timestamp::from_secs(1_795_392_000);

/// Strings under a `"value"` key (the secrets) and every other string and key (public text).
fn collect(
    value: &serde_json::Value,
    under_value: bool,
    secrets: &mut Vec<String>,
    public: &mut Vec<String>,
) {
    match value {
        serde_json::Value::String(text) if under_value => secrets.push(text.clone()),
        serde_json::Value::String(text) => public.push(text.clone()),
        serde_json::Value::Number(n) => public.push(n.to_string()),
        serde_json::Value::Array(items) => items
            .iter()
            .for_each(|i| collect(i, false, secrets, public)),
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                public.push(key.clone());
                collect(item, key == "value", secrets, public);
            }
        }
        _ => {}
    }
}

fn blanked(state: &StorageState) -> StorageState {
    let mut copy = state.clone();
    for cookie in &mut copy.cookies {
        cookie.value.clear();
    }
    for origin in &mut copy.origins {
        for entry in &mut origin.local_storage {
            entry.value.clear();
        }
    }
    copy
}

fuzz_target!(|data: &[u8]| {
    match StorageState::from_json(data) {
        Err(err) => {
            let message = err.to_string();
            if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) {
                let (mut secrets, mut public) = (Vec::new(), Vec::new());
                collect(&doc, false, &mut secrets, &mut public);
                for secret in secrets.iter().filter(|s| s.len() >= MIN_LEAK) {
                    if public.iter().any(|p| p.contains(secret.as_str())) {
                        continue;
                    }
                    assert!(
                        !message.contains(secret.as_str()),
                        "error quotes a value: {message}"
                    );
                }
            }
        }
        Ok(state) => {
            state.validate().expect("a parsed state validates");
            let json = state.to_json();
            let back = StorageState::from_json(json.as_bytes()).expect("the export parses");
            assert_eq!(back, state, "export round trip");
            assert_eq!(back.to_json(), json, "export is a fixed point");
            let embedded = serde_json::to_vec(&state).expect("serde export");
            let again: StorageState = serde_json::from_slice(&embedded).expect("serde import");
            assert_eq!(again, state, "serde round trip");
            assert_eq!(
                format!("{state:?}"),
                format!("{:?}", blanked(&state)),
                "Debug shows a value"
            );

            let _ = state.earliest_expiry();
            let _ = state.without_expired(NOW);
            let mut jarred = state.clone();
            for cookie in &state.cookies {
                let host = cookie.host();
                for scheme in ["http", "https"] {
                    if let Ok(url) = Url::parse(&format!("{scheme}://{host}{}", cookie.path)) {
                        let _ = cookie_header(&state, &url, NOW);
                        let _ = state.cookies_for_domain_mismatch(&url);
                        let _ = state.ensure_cookies_for(&url);
                        let line = format!("{}=x; Path=/; Max-Age=0", cookie.name);
                        merge_set_cookie(&mut jarred, &url, [line.as_str()], NOW);
                    }
                }
            }
            jarred.validate().expect("merging keeps a valid state");
        }
    }
});
