//! Where the process's log lines go and how they read: standard error, as text for a terminal
//! or one JSON object per line for a log collector, filtered by `RUST_LOG` (default
//! [`DEFAULT_FILTER`]).
//! The engines' own records (fjall, sled, rustls write through the `log` crate) are carried
//! into the same output, so that a store's error message is seen beside the gateway's. Names
//! no part of the gateway: what is logged, and that no patient data is, is the callers' rule.

use tracing_subscriber::{EnvFilter, util::SubscriberInitExt};

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

/// Installs the process-wide subscriber and the `log` bridge; call once, first thing.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init` also installs the `log` → tracing bridge (tracing-subscriber's `tracing-log`).
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .finish()
            .try_init(),
        LogFormat::Json => builder.json().finish().try_init(),
    };
    if let Err(e) = installed {
        eprintln!("rxgate: logging not set up: {e}");
    }
}
