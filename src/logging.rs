//! Where the process's log lines go and how they read: standard error, as text for a terminal
//! or one JSON object per line for a log collector, filtered by `RUST_LOG` (default
//! [`DEFAULT_FILTER`]).
//! The engines' own records (fjall, sled, rustls write through the `log` crate) are carried
//! into the same output, so that a store's error message is seen beside the gateway's. Names
//! no part of the gateway: what is logged, and that no patient data is, is the callers' rule.

use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterExt, LevelFilter, Targets},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

/// How a log line is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-01-01T00:00:00.000000Z  INFO rxgate::app: message key=value` (coloured on a
    /// terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, and `fields` (`message` and
    /// the line's own keys); inside a span also `span` and `spans`.
    Json,
}

/// The filter without `RUST_LOG`: INFO, but only warnings from certval, whose INFO line for
/// every certificate path it validates would name each new signer (no patient data, but one
/// line per first signature of each doctor is noise in an operator's log).
pub const DEFAULT_FILTER: &str = "info,certval=warn";

/// What no `RUST_LOG` lets through: the storage engines' TRACE records name the keys they
/// write, and some keys hold a patient key in clear (the medication history, the check budget,
/// consent), which no log may carry.
fn engine_caps() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("sled", LevelFilter::DEBUG)
        .with_target("fjall", LevelFilter::DEBUG)
        .with_target("lsm_tree", LevelFilter::DEBUG)
        .with_target("value_log", LevelFilter::DEBUG)
        .with_target("sfa", LevelFilter::DEBUG)
}

/// Installs the process-wide subscriber, the `log` bridge and a panic hook that logs the panic
/// as one ERROR line (so a JSON log stays one object per line); call once, first thing.
pub fn init(format: LogFormat) {
    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
            .and(engine_caps())
    };
    let layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed(),
    };
    // `try_init` also installs the `log` → tracing bridge (tracing-subscriber's `tracing-log`).
    if let Err(e) = tracing_subscriber::registry().with(layer).try_init() {
        eprintln!("rxgate: logging not set up: {e}");
    }
    std::panic::set_hook(Box::new(|panic| {
        let message = crate::panics::message(panic.payload());
        let location = panic.location().map(ToString::to_string);
        let thread = std::thread::current().name().map(str::to_owned);
        tracing::error!(?location, ?thread, "panic: {message}");
    }));
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    #[test]
    fn the_engines_never_log_below_debug_and_the_rest_is_left_to_rust_log() {
        let caps = engine_caps();
        for engine in [
            "sled::tree",
            "fjall::keyspace",
            "lsm_tree::tree",
            "value_log",
            "sfa",
        ] {
            assert!(!caps.would_enable(engine, &Level::TRACE), "{engine}");
            assert!(caps.would_enable(engine, &Level::DEBUG), "{engine}");
        }
        assert!(caps.would_enable("rxgate::app", &Level::TRACE));
    }
}
