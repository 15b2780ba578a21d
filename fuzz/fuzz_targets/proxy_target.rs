//! The credential-injecting proxy's path normalization, query injection and `Location`
//! rewriting (`authkeeper_server::proxy::fuzzing`) on arbitrary input: never a panic, never a
//! request outside the upstream's base path, never a dot segment (with or without `;params`)
//! left for the upstream to resolve, the token only where it was injected, and no rewritten
//! location that carries it.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use authkeeper_server::proxy::fuzzing::run;
use libfuzzer_sys::fuzz_target;

const TOKEN: &str = "FUZZ-TOKEN-SECRET";

/// The path of an absolute `http(s)://host/path?query` URI.
fn path_of(uri: &str) -> &str {
    let after_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
    path.split('?').next().unwrap_or(path)
}

fuzz_target!(|data: &[u8]| {
    let (selector, rest) = common::take_u16(data);
    let text = String::from_utf8_lossy(rest);
    // The token checks count occurrences: an input that carries the token's text itself (as
    // caller data) would be counted too.
    if text.contains(TOKEN) {
        return;
    }
    let (path, location) = text.split_once('\n').unwrap_or((&text, "/api/v1/next"));
    let (base, param) = match selector % 3 {
        0 => ("http://upstream.test/api/v1/", None),
        1 => ("https://upstream.test/", None),
        _ => ("http://upstream.test:8080/api", Some("api_key")),
    };
    let Some(outcome) = run(base, param, path, TOKEN, location.as_bytes()) else {
        panic!("a valid upstream was refused");
    };
    if let Some(uri) = &outcome.uri {
        let upstream_path = path_of(uri);
        let base_path = path_of(base).trim_end_matches('/');
        assert!(
            upstream_path.starts_with(base_path),
            "{uri} escapes the base {base_path}"
        );
        for segment in upstream_path.split('/') {
            let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
            let before_params = decoded.split([';']).next().unwrap_or("");
            let before_params = before_params.split("%3b").next().unwrap_or("");
            assert!(
                before_params != "." && before_params != "..",
                "dot segment {segment:?} reaches the upstream in {uri}"
            );
        }
        let tokens = uri.matches(TOKEN).count();
        match param {
            Some(_) => assert_eq!(tokens, 1, "the token is injected exactly once: {uri}"),
            None => assert_eq!(tokens, 0, "a header-injected token leaked into {uri}"),
        }
    }
    if let Some(location) = &outcome.location {
        assert!(
            !location.contains(TOKEN),
            "a rewritten Location carries the token: {location}"
        );
    }
});
