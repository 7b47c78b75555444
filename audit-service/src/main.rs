use std::process::ExitCode;

use audit_service::Settings;
use rl_contract::settings::exit_on_error;

#[tokio::main]
async fn main() -> ExitCode {
    rl_contract::telemetry::init("audit-service");
    // `migrate` needs the database settings only (the migration Job has no other secret).
    let result = if std::env::args().nth(1).as_deref() == Some("migrate") {
        audit_service::migrate(&exit_on_error(audit_service::settings::database_from_env())).await
    } else {
        audit_service::run(exit_on_error(Settings::from_env())).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "audit-service stopped");
            ExitCode::FAILURE
        }
    }
}
