use std::process::ExitCode;

use health_service::Settings;
use rl_contract::settings::exit_on_error;

#[tokio::main]
async fn main() -> ExitCode {
    rl_contract::telemetry::init("health-service");
    let settings = exit_on_error(Settings::from_env());
    match health_service::run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "health-service stopped");
            ExitCode::FAILURE
        }
    }
}
