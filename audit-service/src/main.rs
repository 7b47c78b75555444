use std::process::ExitCode;

use audit_service::Settings;
use rl_contract::settings::exit_on_error;

#[tokio::main]
async fn main() -> ExitCode {
    rl_contract::telemetry::init("audit-service");
    let settings = exit_on_error(Settings::from_env());
    let result = if std::env::args().nth(1).as_deref() == Some("migrate") {
        audit_service::migrate(&settings).await
    } else {
        audit_service::run(settings).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "audit-service stopped");
            ExitCode::FAILURE
        }
    }
}
