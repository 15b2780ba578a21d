//! Unit tests of the storage-state codec.

use super::js_json::write_js_string;
use super::*;

#[test]
fn numbers_are_written_like_javascript() {
    let cases: &[(f64, &str)] = &[
        (-1.0, "-1"),
        (0.0, "0"),
        (-0.0, "0"),
        (1735689600.5, "1735689600.5"),
        (1830000661.128193, "1830000661.128193"),
        (1830000000.0, "1830000000"),
        (0.1, "0.1"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1.5e-7, "1.5e-7"),
        (0.000001, "0.000001"),
        (123e-20, "1.23e-18"),
        (-2.5e300, "-2.5e+300"),
        (f64::NAN, "null"),
        // Ties go to the even digit, as in V8 (the exact value is ...26953125).
        (2550897251.2695312, "2550897251.2695312"),
        (-887318481354381.2, "-887318481354381.2"),
        (2116000000000000.2, "2116000000000000.2"),
    ];
    for (number, text) in cases {
        assert_eq!(js_number(*number), *text, "{number}");
    }
}

#[test]
fn strings_are_escaped_like_json_stringify() {
    let mut out = String::new();
    write_js_string(&mut out, "a\"b\\c\n\t\u{1}\u{7f}\u{2028}é");
    assert_eq!(out, "\"a\\\"b\\\\c\\n\\t\\u0001\u{7f}\u{2028}é\"");
}

#[test]
fn belongs_to_host() {
    assert!(cookie_belongs_to_host("example.com", "app.example.com"));
    assert!(cookie_belongs_to_host("sso.example.com", "app.example.com"));
    assert!(cookie_belongs_to_host(
        "x.app.example.com",
        "app.example.com"
    ));
    assert!(!cookie_belongs_to_host("other.org", "app.example.com"));
    assert!(!cookie_belongs_to_host("xexample.com", "example.com"));
    assert!(cookie_belongs_to_host("127.0.0.1", "127.0.0.1"));
    assert!(!cookie_belongs_to_host("0.0.1", "127.0.0.1"));
}
