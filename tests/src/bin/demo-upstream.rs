//! The local stack's stand-in for the product's own services: echoes what it received.

use std::net::SocketAddr;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    rl_contract::telemetry::init("demo-upstream");
    let addr: SocketAddr = rl_contract::settings::exit_on_error(rl_contract::settings::parse(
        "DEMO_UPSTREAM_LISTEN_ADDR",
        ([127, 0, 0, 1], 8090).into(),
    ));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo-upstream: cannot listen on {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(%addr, "demo-upstream listening");
    match axum::serve(listener, e2e::echo_router())
        .with_graceful_shutdown(rl_contract::shutdown::signal())
        .await
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-upstream: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
