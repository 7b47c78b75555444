use std::process::ExitCode;

use audit_service::Settings;
use rl_contract::settings::exit_on_error;

#[tokio::main]
async fn main() -> ExitCode {
    rl_contract::telemetry::init("audit-service");
    let settings = exit_on_error(Settings::from_env());
    match audit_service::run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "audit-service stopped");
            ExitCode::FAILURE
        }
    }
}
