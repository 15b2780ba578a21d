//! Measures a login by recipe in real headless Chromium against the mock login app.
//!
//! `cargo run --release -p authkeeper-session --example recipe_login_timing [RUNS]` prints each
//! login's time and the median (default 5 runs).

use std::time::{Duration, Instant};

use authkeeper_mock::login_app::{LoginApp, LoginAppConfig};
use authkeeper_session::RecipeLogin;
use authkeeper_session::config::SiteConfig;
use authkeeper_session::login::{LoginRequest, SessionLogin};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|runs| runs.parse())
        .transpose()?
        .unwrap_or(5);
    let app = LoginApp::start(LoginAppConfig::new(vec![("alice".into(), "pw".into())])).await?;
    let site: SiteConfig = serde_json::from_value(json!({
        "origin": app.base_url(),
        "accounts": [{ "name": "alice", "username": "alice", "password": "pw" }],
        "login": { "steps": [
            { "goto": "/login" },
            { "fill": "#username", "value": "account:username" },
            { "fill": "#password", "value": "account:password" },
            { "click": "button#submit" },
            { "wait_for_url": "/home" },
            { "wait_for": "#welcome" },
        ] },
    }))?;
    let login_config = site.login.clone().ok_or("no login")?;
    let login = RecipeLogin::new(login_config)?;
    let request = LoginRequest {
        identity: None,
        site_name: "portal",
        site: &site,
        account: &site.accounts[0],
    };
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    for run in 1..=runs {
        let started = Instant::now();
        let state = login.login(&request).await?;
        let took = started.elapsed();
        println!(
            "login {run}: {:.0} ms ({} cookies, {} origins)",
            took.as_secs_f64() * 1000.0,
            state.cookies.len(),
            state.origins.len()
        );
        times.push(took);
    }
    times.sort();
    if let Some(median) = times.get(times.len() / 2) {
        println!("median of {runs}: {:.0} ms", median.as_secs_f64() * 1000.0);
    }
    Ok(())
}
