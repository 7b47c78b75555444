use gateway::Settings;

// glibc malloc was ~12% of the gateway's samples under load (perf); mimalloc is the fix
// pingora's own measurements point to. See BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use rl_contract::settings::exit_on_error;

fn main() {
    rl_contract::telemetry::init("gateway");
    let settings = exit_on_error(Settings::from_env());
    gateway::run(settings);
}
