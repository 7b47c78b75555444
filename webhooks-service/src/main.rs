use std::process::ExitCode;

use rl_contract::settings::exit_on_error;
use webhooks_service::Settings;

#[tokio::main]
async fn main() -> ExitCode {
    rl_contract::telemetry::init("webhooks-service");
    // `migrate` needs the database settings only (the migration Job has no other secret).
    let result = if std::env::args().nth(1).as_deref() == Some("migrate") {
        webhooks_service::migrate(&exit_on_error(
            webhooks_service::settings::database_from_env(),
        ))
        .await
    } else {
        webhooks_service::run(exit_on_error(Settings::from_env())).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "webhooks-service stopped");
            ExitCode::FAILURE
        }
    }
}
