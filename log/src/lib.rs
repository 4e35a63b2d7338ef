//! Log set-up shared by every Netting binary. Logs go to stderr, one event per line, so stdout
//! stays for output meant for people and scripts.
//!
//! - `NETTING_LOG`, else `RUST_LOG`: the level, as `tracing_subscriber` filter directives
//!   (`info`, `warn,netting_raft=debug`). Unset or empty: the binary's default.
//! - `NETTING_LOG_FORMAT`: `plain` (the default) or `json` (one JSON object per line).
//! - Colour only when stderr is a terminal and `NO_COLOR` is unset or empty: a log redirected
//!   to a file or collected by a container runtime never holds escape codes.
//!
//! What to do is decided by [`LogSettings::decide`], a plain function of the variables' values
//! and of whether stderr is a terminal, so it is tested without touching the environment. A
//! value that cannot be used does not stop the binary: the default is taken and a warning
//! naming the variable is logged once the subscriber is installed.

#![forbid(unsafe_code)]

use std::io::IsTerminal;

use tracing::Metadata;
use tracing_subscriber::filter::{EnvFilter, FilterExt, FilterFn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry};

/// The variables the set-up reads, by name.
pub const LEVEL_VAR: &str = "NETTING_LOG";
pub const FALLBACK_LEVEL_VAR: &str = "RUST_LOG";
pub const FORMAT_VAR: &str = "NETTING_LOG_FORMAT";
pub const NO_COLOR_VAR: &str = "NO_COLOR";

/// The environment's say in logging: each variable's value, `None` when unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogEnv {
    pub level: Option<String>,
    pub fallback_level: Option<String>,
    pub format: Option<String>,
    pub no_color: Option<String>,
}

impl LogEnv {
    /// The values of this process's environment (a value that is not UTF-8 counts as unset).
    pub fn from_process() -> Self {
        let var = |name| std::env::var(name).ok();
        LogEnv {
            level: var(LEVEL_VAR),
            fallback_level: var(FALLBACK_LEVEL_VAR),
            format: var(FORMAT_VAR),
            no_color: var(NO_COLOR_VAR),
        }
    }
}

/// How events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

/// What [`init`] installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Filter directives, already checked to parse.
    pub filter: String,
    pub format: LogFormat,
    /// Whether plain lines carry colour escape codes.
    pub ansi: bool,
    /// Values that were ignored, each naming its variable; logged as warnings.
    pub problems: Vec<String>,
}

impl LogSettings {
    /// Decides the settings from `env`, whether stderr is a terminal, and the binary's
    /// `default_filter` (used when neither level variable is set, or the one set is invalid).
    pub fn decide(env: &LogEnv, stderr_is_terminal: bool, default_filter: &str) -> Self {
        let mut problems = Vec::new();
        let level = [
            (LEVEL_VAR, &env.level),
            (FALLBACK_LEVEL_VAR, &env.fallback_level),
        ]
        .into_iter()
        .find_map(|(name, value)| {
            let value = value.as_deref().map(str::trim).filter(|v| !v.is_empty())?;
            Some((name, value))
        });
        let filter = match level {
            None => default_filter.to_owned(),
            Some((name, value)) => match EnvFilter::try_new(value) {
                Ok(_) => value.to_owned(),
                Err(err) => {
                    problems.push(format!(
                        "{name}={value:?} is not a log filter ({err}); using {default_filter:?}"
                    ));
                    default_filter.to_owned()
                }
            },
        };
        let format = match env.format.as_deref().map(str::trim) {
            None | Some("") => LogFormat::Plain,
            Some(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
            Some(v) if v.eq_ignore_ascii_case("plain") => LogFormat::Plain,
            Some(other) => {
                problems.push(format!(
                    "{FORMAT_VAR}={other:?} is neither \"plain\" nor \"json\"; using plain"
                ));
                LogFormat::Plain
            }
        };
        let no_color = env.no_color.as_deref().is_some_and(|v| !v.is_empty());
        LogSettings {
            filter,
            format,
            ansi: format == LogFormat::Plain && stderr_is_terminal && !no_color,
            problems,
        }
    }
}

/// Installs the global subscriber for a binary whose default level is `default_filter`
/// (e.g. `"info"`). See the crate documentation for the variables it reads.
pub fn init(default_filter: &str) {
    init_dropping(default_filter, |_| false);
}

/// Like [`init`], and never writes events for which `drop` is true, whatever the level: for
/// a library's events that the binary reports better itself (see `netting_raft::log_noise`).
pub fn init_dropping(default_filter: &str, drop: fn(&Metadata<'_>) -> bool) {
    let settings = LogSettings::decide(
        &LogEnv::from_process(),
        std::io::stderr().is_terminal(),
        default_filter,
    );
    // A second initialisation (tests that start a binary's main twice) is harmless.
    let _ = tracing::subscriber::set_global_default(subscriber(&settings, drop, std::io::stderr));
    for problem in &settings.problems {
        tracing::warn!("{problem}");
    }
}

/// The subscriber for `settings`, writing to `writer`: what [`init`] installs, separate so
/// tests can read what it writes.
pub fn subscriber<W>(
    settings: &LogSettings,
    drop: fn(&Metadata<'_>) -> bool,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // `decide` checked the directives; an error here can only come from a caller that built
    // settings by hand, and then nothing is better than everything.
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("off"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(settings.ansi);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match settings.format {
        LogFormat::Plain => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let keep = FilterFn::new(move |meta: &Metadata<'_>| !drop(meta));
    tracing_subscriber::registry().with(fmt.with_filter(filter.and(keep)))
}

#[cfg(test)]
mod tests;
