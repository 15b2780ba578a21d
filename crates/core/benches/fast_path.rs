//! The fresh-token fast path: a cached, fresh token is handed out without a lock and without
//! allocating. Target: ≤ 50 ns median for `Keeper::cached_token`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use authkeeper_core::config::CredentialSettings;
use authkeeper_core::grant::{ClientAuth, Endpoint, GrantKind, OAuthClientConfig};
use authkeeper_core::policy::RefreshPolicy;
use authkeeper_core::secret::{AccessToken, ClientSecret, RefreshToken};
use authkeeper_core::{
    Clock as _, CredentialName, ExpiryDefaults, Keeper, MemoryStore, SystemClock, TokenSet,
};
use criterion::{Criterion, criterion_group, criterion_main};

fn keeper(runtime: &tokio::runtime::Runtime) -> Keeper {
    let store = Arc::new(MemoryStore::new());
    let now = SystemClock::new().now();
    let tokens = TokenSet {
        access_token: AccessToken::from("bench-access-token"),
        token_type: "Bearer".into(),
        refresh_token: Some(RefreshToken::from("bench-refresh-token")),
        id_token: None,
        scope: None,
        issued_at: now,
        expires_at: now + Duration::from_secs(24 * 3600),
        refresh_token_expires_at: None,
        extra: Default::default(),
    };
    let settings = CredentialSettings {
        client: OAuthClientConfig {
            endpoint: Endpoint::TokenUrl("http://127.0.0.1:9/token".parse().expect("url")),
            client_id: "bench".into(),
            client_secret: Some(ClientSecret::from("secret")),
            auth: ClientAuth::ClientSecretBasic,
            scopes: Vec::new(),
            audience: None,
            extra_params: Vec::new(),
            timeout: Duration::from_secs(5),
            proxy: None,
        },
        grant: GrantKind::RefreshToken,
        policy: RefreshPolicy::default(),
        expiry: ExpiryDefaults::default(),
        heartbeat: false,
    };
    let name = CredentialName::new("crm").expect("valid name");
    runtime.block_on(async {
        authkeeper_core::store::import(&*store, &name, &tokens, now)
            .await
            .expect("put");
        let keeper = Keeper::builder(store, SystemClock::shared())
            .credential(name.clone(), settings)
            .build()
            .expect("keeper");
        keeper.token("crm", Duration::ZERO).await.expect("warm");
        keeper
    })
}

fn fast_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let keeper = keeper(&runtime);
    c.bench_function("cached_token (sync fast path)", |b| {
        b.iter(|| black_box(keeper.cached_token(black_box("crm"), Duration::from_secs(60))))
    });
    c.bench_function("token().await on a fresh token", |b| {
        b.iter(|| {
            runtime
                .block_on(keeper.token(black_box("crm"), Duration::from_secs(60)))
                .map(|t| t.generation())
        })
    });
    let threads = 2;
    c.bench_function("cached_token, 2 threads contending", |b| {
        b.iter_custom(|iterations| {
            let start = std::time::Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    let keeper = &keeper;
                    scope.spawn(move || {
                        for _ in 0..iterations {
                            black_box(
                                keeper.cached_token(black_box("crm"), Duration::from_secs(60)),
                            );
                        }
                    });
                }
            });
            start.elapsed() / threads
        })
    });
}

criterion_group!(benches, fast_path);
criterion_main!(benches);
