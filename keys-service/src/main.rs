use std::process::ExitCode;

use keys_service::Settings;
use rl_contract::settings::exit_on_error;

#[tokio::main]
async fn main() -> ExitCode {
    rl_contract::telemetry::init("keys-service");
    let settings = exit_on_error(Settings::from_env());
    let result = if std::env::args().nth(1).as_deref() == Some("migrate") {
        keys_service::migrate(&settings).await
    } else {
        keys_service::run(settings).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "keys-service stopped");
            ExitCode::FAILURE
        }
    }
}
