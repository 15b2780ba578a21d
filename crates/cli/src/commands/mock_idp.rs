//! `authkeeper mock-idp`: the fault-injecting mock identity provider as a server.

use std::process::ExitCode;

use authkeeper_mock::{Knobs, MockConfig, MockIdp};

use crate::cli::MockIdpArgs;

pub async fn run(args: MockIdpArgs) -> anyhow::Result<ExitCode> {
    let knobs = Knobs {
        access_ttl_ms: args.access_ttl.as_millis() as u64,
        rotate_refresh_tokens: !args.no_rotation,
        reuse_revokes_grant: !args.no_reuse_detection,
        reuse_grace_ms: args.reuse_grace.as_millis() as u64,
        fault_503_rate: args.fault_503_rate,
        token_latency_ms: args.latency.as_millis() as u64,
        clock_offset_ms: args.clock_offset_ms,
        ..Knobs::default()
    };
    let idp = MockIdp::start(
        MockConfig::default()
            .with_listen(args.listen)
            .with_knobs(knobs),
    )
    .await?;
    let base = idp.base_url().to_owned();
    println!("mock IdP listening on {base}");
    println!("  token endpoint   {}", idp.token_url());
    println!("  protected API    {}", idp.api_url());
    println!("  new grant        curl -s -X POST {base}/admin/grants | authkeeper import NAME");
    println!("  counters         curl -s {base}/admin/stats");
    println!(
        "  knobs            curl -s -X PUT {base}/admin/knobs -d '{{\"fault_503_rate\":0.5}}'"
    );
    println!(
        "  test client      client_id = \"mock-client\", client_secret = \"mock-secret\" (a fixed test value)"
    );
    tokio::signal::ctrl_c().await?;
    idp.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}
