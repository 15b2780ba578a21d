//! Memory per credential held by the Keeper: `cargo bench -p authkeeper-core --bench memory --
//! [--credentials N]` (default 100 000). Builds N credentials (one token endpoint, 43-character
//! opaque tokens as the mock IdP issues) over a MemoryStore and prints the resident memory each
//! phase adds, per credential: the store's records, the Keeper's entries, the cached tokens
//! (after warm-up), and the proactive schedule (heartbeat). Credentials share one provider's
//! settings unless `--unshared`.

use std::sync::Arc;
use std::time::Duration;

use authkeeper_core::config::CredentialSettings;
use authkeeper_core::grant::{ClientAuth, Endpoint, GrantKind, OAuthClientConfig};
use authkeeper_core::policy::RefreshPolicy;
use authkeeper_core::secret::{AccessToken, ClientSecret, RefreshToken};
use authkeeper_core::{
    Clock as _, CredentialName, ExpiryDefaults, Keeper, MemoryStore, SystemClock, TokenSet,
};

/// Resident memory of this process in bytes (Linux `/proc/self/statm`).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn settings() -> CredentialSettings {
    CredentialSettings {
        client: OAuthClientConfig {
            endpoint: Endpoint::TokenUrl("http://127.0.0.1:9/oauth/token".parse().expect("url")),
            client_id: "bench-client".into(),
            client_secret: Some(ClientSecret::from("bench-secret")),
            auth: ClientAuth::ClientSecretBasic,
            scopes: vec!["api.read".into()],
            audience: None,
            extra_params: Vec::new(),
            timeout: Duration::from_secs(10),
            proxy: None,
        },
        grant: GrantKind::RefreshToken,
        policy: RefreshPolicy::default(),
        expiry: ExpiryDefaults::default(),
        heartbeat: true,
    }
}

fn main() {
    let mut credentials = 100_000usize;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--credentials")
        && let Some(n) = args.get(i + 1).and_then(|n| n.parse().ok())
    {
        credentials = n;
    }
    let unshared = args.iter().any(|a| a == "--unshared");
    if args.iter().any(|a| a == "--smoke") {
        credentials = 2_000;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let n = credentials as f64;
        let per = |from: u64, to: u64| to.saturating_sub(from) as f64 / n;
        let start = rss();
        let store = Arc::new(MemoryStore::new());
        let now = SystemClock::new().now();
        let names: Vec<CredentialName> = (0..credentials)
            .map(|i| CredentialName::new(format!("c{i:07}")).expect("name"))
            .collect();
        for (i, name) in names.iter().enumerate() {
            let tokens = TokenSet {
                access_token: AccessToken::from(format!("{i:0>43}")),
                token_type: "Bearer".into(),
                refresh_token: Some(RefreshToken::from(format!("r{i:0>42}"))),
                id_token: None,
                scope: None,
                issued_at: now,
                expires_at: now + Duration::from_secs(3600),
                refresh_token_expires_at: None,
                extra: Default::default(),
            };
            authkeeper_core::store::import(&*store, name, &tokens, now)
                .await
                .expect("put");
        }
        let stored = rss();
        let mut builder = Keeper::builder(store, SystemClock::shared());
        // Credentials of one provider share their settings (`--unshared`: each its own copy,
        // as credentials with their own tables).
        let shared = Arc::new(settings());
        for name in &names {
            builder = if unshared {
                builder.credential(name.clone(), settings())
            } else {
                builder.credential_shared(name.clone(), Arc::clone(&shared))
            };
        }
        let keeper = builder.build().expect("keeper");
        let built = rss();
        let failures = keeper.warm_up().await;
        assert!(failures.is_empty(), "warm-up failed");
        let warm = rss();
        let heartbeat = keeper.spawn_heartbeat();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let scheduled = rss();
        heartbeat.abort();
        println!(
            "credentials: {credentials} ({} settings)",
            if unshared { "own" } else { "shared provider" }
        );
        println!(
            "store records (MemoryStore):   {:>7.0} B/credential",
            per(start, stored)
        );
        println!(
            "keeper entries (no tokens):    {:>7.0} B/credential",
            per(stored, built)
        );
        println!(
            "cached tokens (after warm-up): {:>7.0} B/credential",
            per(built, warm)
        );
        println!(
            "proactive schedule:            {:>7.0} B/credential",
            per(warm, scheduled)
        );
        println!(
            "keeper total:                  {:>7.0} B/credential ({:.1} MiB)",
            per(stored, scheduled),
            scheduled.saturating_sub(stored) as f64 / 1048576.0
        );
    });
}
