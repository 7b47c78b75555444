use std::process::ExitCode;

use keys_service::Settings;
use rl_contract::settings::exit_on_error;

#[tokio::main]
async fn main() -> ExitCode {
    rl_contract::telemetry::init("keys-service");
    // `migrate` needs the database settings only (the migration Job has no other secret).
    let result = if std::env::args().nth(1).as_deref() == Some("migrate") {
        keys_service::migrate(&exit_on_error(keys_service::settings::database_from_env())).await
    } else {
        keys_service::run(exit_on_error(Settings::from_env())).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "keys-service stopped");
            ExitCode::FAILURE
        }
    }
}
