//! `parse_retry_after` and `RefreshError::from_error_response` (+ class, Display, cause).
#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use authkeeper_core::error::parse_retry_after;
use authkeeper_core::{ErrorClass, RefreshError, Timestamp};
use libfuzzer_sys::fuzz_target;

const DAY: Duration = Duration::from_secs(24 * 3600);

fuzz_target!(|data: &[u8]| {
    let (status, rest) = common::take_u16(data);

    // Retry-After: the first line of the input (header values are one line), at two "now"s:
    // a realistic one and one taken from the input.
    let header_end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let header = String::from_utf8_lossy(&rest[..header_end]);
    for now in [
        Timestamp::from_secs(1_700_000_000),
        Timestamp::from_millis(i64::from(status) * 86_400_000 * 1000 - 1),
        Timestamp::from_millis(i64::MIN),
        Timestamp::from_millis(i64::MAX),
    ] {
        if let Some(delay) = parse_retry_after(&header, now) {
            assert!(delay <= DAY, "Retry-After above the one-day cap: {delay:?}");
        }
    }
    if let Ok(seconds) = header.trim().parse::<u64>() {
        assert_eq!(
            parse_retry_after(&header, Timestamp::EPOCH),
            Some(Duration::from_secs(seconds.min(DAY.as_secs())))
        );
    }

    // The body is everything after the first line.
    let body = rest.get(header_end + 1..).unwrap_or(&[]);
    let error = RefreshError::from_error_response(status, body, None);
    let class = error.class();
    let message = error.to_string();
    let cause = error.cause();
    assert!(cause.chars().count() <= 200);
    assert!(!cause.chars().any(char::is_control), "cause {cause:?}");
    assert_eq!(error.retry_after(), None);
    if let RefreshError::Status { .. } = error {
        assert_eq!(cause, format!("http_{status}"));
        if matches!(status, 408 | 425 | 429 | 500..=599) {
            assert_eq!(class, ErrorClass::Transient);
        }
    }
    // Only the provider's error code and description reach the message.
    if let (
        Ok(text),
        RefreshError::OAuth {
            code, description, ..
        },
    ) = (std::str::from_utf8(body), &error)
    {
        assert!(message.contains(code.as_str()));
        common::assert_no_token_leak(text, code, "RefreshError code");
        if let Some(description) = description {
            common::assert_no_token_leak(text, description, "RefreshError description");
        }
    }

    let with_delay = RefreshError::from_error_response(status, body, Some(Duration::from_secs(7)));
    assert_eq!(with_delay.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(with_delay.class(), class);
});
