//! Logging set-up: format (plain or JSON) from `NETTING_LOG_FORMAT`, level from `NETTING_LOG`
//! or `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber. Logs go to stderr so stdout stays for output meant
/// for people and scripts (the dev mode's addresses).
pub fn init_tracing() {
    let filter = std::env::var("NETTING_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info,openraft=warn"));
    let json = std::env::var("NETTING_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless, so its error is ignored.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
