use gateway::Settings;
use rl_contract::settings::exit_on_error;

fn main() {
    rl_contract::telemetry::init("gateway");
    let settings = exit_on_error(Settings::from_env());
    gateway::run(settings);
}
