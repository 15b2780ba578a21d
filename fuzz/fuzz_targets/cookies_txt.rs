//! `parse_cookies_txt` → `to_cookies_txt` → `parse_cookies_txt`, and the same text as
//! `Set-Cookie` lines merged into a state: no panic, round trips exact, errors name the line but
//! never quote a value, merged states stay valid Playwright states.
#![no_main]

use authkeeper_core::Timestamp;
use authkeeper_session::cookies_txt::{parse_cookies_txt, to_cookies_txt};
use authkeeper_session::jar::{cookie_header, merge_set_cookie};
use authkeeper_session::storage_state::{StateError, StorageState};
use libfuzzer_sys::fuzz_target;
use url::Url;

const MIN_LEAK: usize = 8;
const NOW: Timestamp = Timestamp::from_secs(1_795_392_000);

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_cookies_txt(&text) {
        Err(err) => {
            let message = err.to_string();
            if let StateError::CookiesTxt { line, .. } = &err {
                assert!(*line >= 1, "line numbers start at 1");
            }
            // The value is everything after the sixth tab of a line.
            for line in text.split('\n') {
                let fields: Vec<&str> = line.splitn(7, '\t').collect();
                if let [.., value] = fields.as_slice() {
                    if fields.len() == 7 && value.len() >= MIN_LEAK {
                        let elsewhere = text.split('\n').any(|other| {
                            other
                                .splitn(7, '\t')
                                .take(6)
                                .any(|field| field.contains(value))
                        });
                        if !elsewhere {
                            assert!(!message.contains(value), "error quotes a value: {message}");
                        }
                    }
                }
            }
        }
        Ok(cookies) => {
            let written = to_cookies_txt(&cookies);
            let back = parse_cookies_txt(&written).expect("own output parses");
            assert_eq!(back, cookies, "cookies.txt round trip");
            let state = StorageState {
                cookies,
                ..StorageState::default()
            };
            state.validate().expect("imported cookies validate");
            let json = state.to_json();
            assert_eq!(
                StorageState::from_json(json.as_bytes()).expect("export parses"),
                state
            );
        }
    }

    // The same input as Set-Cookie answers from a few sites.
    let mut state = StorageState::default();
    for site in [
        "https://app.example.com/a/b",
        "http://127.0.0.1:8080/",
        "http://example.com/docs/x",
    ] {
        let Ok(url) = Url::parse(site) else { continue };
        merge_set_cookie(&mut state, &url, text.lines(), NOW);
        let _ = cookie_header(&state, &url, NOW);
    }
    state.validate().expect("merged cookies validate");
    let json = state.to_json();
    assert_eq!(
        StorageState::from_json(json.as_bytes()).expect("merged export parses"),
        state
    );
});
