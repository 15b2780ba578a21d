//! `parse_key_file` and `parse_env_key`: errors never quote key text; keys round-trip.
#![no_main]

use std::path::Path;

use authkeeper_store::KeyError;
use authkeeper_store::key::{KEY_ENV, key_file_contents, parse_env_key, parse_key_file};
use libfuzzer_sys::fuzz_target;

const PATH: &str = "/fuzz/store.key";

fn check_origin(err: &KeyError, expected: impl Fn(&str) -> bool) {
    match err {
        KeyError::NotBase64 { origin } | KeyError::WrongLength { origin, .. } => {
            assert!(expected(origin), "origin {origin:?} quotes input");
        }
        KeyError::EmptyKeyFile { path } => assert_eq!(path, Path::new(PATH)),
        other => panic!("unexpected key error from a parser: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new(PATH);

    match parse_key_file(&text, path) {
        Err(err) => {
            let _ = err.to_string();
            // Key errors name the file and line, never the text.
            let prefix = format!("key file {PATH} line ");
            check_origin(&err, |origin| {
                origin
                    .strip_prefix(&prefix)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            });
        }
        Ok(keyring) => {
            let ids: Vec<_> = std::iter::once(keyring.primary())
                .chain(keyring.previous())
                .map(|key| key.id())
                .collect();
            for (i, id) in ids.iter().enumerate() {
                assert!(!ids[..i].contains(id), "duplicate key in a keyring");
            }
            // The key file written for this keyring reads back as the same keys in order.
            let written = key_file_contents(&keyring);
            let again = parse_key_file(&written, path).expect("a written key file must parse");
            let again_ids: Vec<_> = std::iter::once(again.primary())
                .chain(again.previous())
                .map(|key| key.id())
                .collect();
            assert_eq!(ids, again_ids);
        }
    }

    match parse_env_key(&text) {
        Err(err) => {
            let _ = err.to_string();
            check_origin(&err, |origin| origin == KEY_ENV);
        }
        Ok(key) => {
            let again = parse_env_key(&key.to_base64()).expect("to_base64 must parse back");
            assert_eq!(again.id(), key.id());
        }
    }
});
