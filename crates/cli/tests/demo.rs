//! `authkeeper demo` runs end to end and reports exactly-once refresh.

use crate::support::{bin, run_with_input};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_reports_no_401s_and_one_refresh_per_expiry() {
    let mut command = tokio::process::Command::new(bin());
    command
        .args(["demo", "--duration", "5s", "--workers", "20", "--json"])
        .env("AUTHKEEPER_LOG", "warn");
    let out = run_with_input(command, b"").await;
    assert!(
        out.status.success(),
        "demo failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json summary");
    assert_eq!(summary["worker_visible_401s"], 0);
    assert_eq!(summary["grant_survived"], true);
    assert_eq!(summary["reuse_detected"], 0);
    assert!(summary["requests"].as_u64().unwrap_or(0) > 100, "{summary}");
    assert!(
        summary["generations"].as_u64().unwrap_or(0) >= 2,
        "{summary}"
    );
    assert_eq!(summary["refreshes_per_expiry"], 1.0, "{summary}");
}
