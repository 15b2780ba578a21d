//! `parse_challenges` and `classify_api_response` on arbitrary UTF-8.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use authkeeper_core::www_authenticate::{ApiVerdict, classify_api_response, parse_challenges};
use libfuzzer_sys::fuzz_target;

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fuzz_target!(|data: &[u8]| {
    let (selector, rest) = common::take_u16(data);
    let text = String::from_utf8_lossy(rest);

    let challenges = parse_challenges(&text);
    // Every challenge consumed at least its scheme, so there cannot be more than one per
    // character of input.
    assert!(challenges.len() <= text.len());
    for challenge in &challenges {
        assert!(!challenge.scheme.is_empty(), "empty scheme");
        assert!(
            challenge.scheme.chars().all(is_tchar),
            "scheme {:?}",
            challenge.scheme
        );
        assert!(text.contains(challenge.scheme.as_str()));
        for (name, _) in &challenge.params {
            assert!(!name.is_empty(), "empty parameter name");
            assert!(name.chars().all(is_tchar), "parameter name {name:?}");
            assert_eq!(*name, name.to_ascii_lowercase());
            assert!(challenge.param(name).is_some());
        }
    }

    // Several header values, one a line, as a response may carry.
    let status = match selector % 5 {
        0 => 400,
        1 => 401,
        2 => 403,
        3 => 200,
        _ => selector,
    };
    let verdict = classify_api_response(status, text.split('\n'));
    if !matches!(status, 400 | 401 | 403) {
        assert_eq!(verdict, ApiVerdict::Accepted);
    }
    if verdict.should_refresh() {
        assert_eq!(status, 401, "only a 401 may ask for a refresh");
    }
    if status == 403 {
        assert!(!verdict.should_refresh());
        assert_ne!(verdict, ApiVerdict::Accepted, "a 403 is never accepted");
    }
    if status == 401 {
        assert_ne!(verdict, ApiVerdict::Accepted, "a 401 is never accepted");
    }
});
