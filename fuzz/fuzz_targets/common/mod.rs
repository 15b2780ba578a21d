//! Helpers shared by the fuzz targets (included with `#[path]`, not a crate).
#![allow(dead_code)]

/// The shortest run of a secret that may not appear in an error message.
pub const MIN_LEAK: usize = 8;

/// Byte spans (start, end) in `text` of the raw values of `access_token` fields: JSON
/// (`"access_token" : "..."`, up to the closing unescaped quote or the end) and, unless the text
/// is JSON, form-encoded (`access_token=...` at the start or after `&`, up to the next `&`).
pub fn access_token_spans(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let key = "\"access_token\"";
    let mut from = 0;
    while let Some(found) = text[from..].find(key) {
        let mut i = from + found + key.len();
        from = from + found + 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b':' {
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'"' {
            continue;
        }
        let start = i + 1;
        let mut end = start;
        let mut escaped = false;
        while end < bytes.len() {
            match bytes[end] {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => break,
                _ => {}
            }
            end += 1;
        }
        spans.push((start, end));
    }
    // Form parameters only where the parser reads form bodies: not inside a JSON document.
    if text.trim_start().starts_with(['{', '[', '"']) {
        return spans;
    }
    let form = "access_token=";
    let mut from = 0;
    while let Some(found) = text[from..].find(form) {
        let at = from + found;
        from = at + 1;
        if at != 0 && bytes[at - 1] != b'&' {
            continue;
        }
        let start = at + form.len();
        let end = text[start..].find('&').map_or(text.len(), |n| start + n);
        spans.push((start, end));
    }
    spans
}

/// Panics if `message` contains a run of at least [`MIN_LEAK`] characters that, in `input`,
/// occurs only inside an `access_token` value (so it cannot have come from another field).
///
/// `message` should be only the part of an error taken from the input, not its fixed wording,
/// which may coincide with a token by chance. Inputs with JSON escapes or percent-encoding are
/// skipped: a decoded field can match a token's raw text without having come from it.
pub fn assert_no_token_leak(input: &str, message: &str, what: &str) {
    if input.contains('\\') || input.contains('%') || input.contains('+') {
        return;
    }
    let spans = access_token_spans(input);
    for &(start, end) in &spans {
        let value = &input[start..end];
        let chars: Vec<(usize, char)> = value.char_indices().collect();
        if chars.len() < MIN_LEAK {
            continue;
        }
        for w in 0..=chars.len() - MIN_LEAK {
            let from = chars[w].0;
            let to = chars.get(w + MIN_LEAK).map_or(value.len(), |c| c.0);
            let window = &value[from..to];
            if !message.contains(window) {
                continue;
            }
            // Every occurrence of the window in the input must be inside a token value for
            // the message to be a leak; otherwise another field may legitimately be quoted.
            let mut only_in_tokens = true;
            let mut search = 0;
            while let Some(found) = input[search..].find(window) {
                let at = search + found;
                let inside = spans
                    .iter()
                    .any(|&(s, e)| s <= at && at + window.len() <= e);
                if !inside {
                    only_in_tokens = false;
                    break;
                }
                search = at + input[at..].chars().next().map_or(1, char::len_utf8);
            }
            assert!(
                !only_in_tokens,
                "{what} leaks {window:?} of an access_token value: {message:?}"
            );
        }
    }
}

/// Reads a big-endian u16 from the front of `data`, returning it and the rest.
pub fn take_u16(data: &[u8]) -> (u16, &[u8]) {
    match data {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => (0, data),
    }
}
