//! Tracing setup: human-readable or JSON lines on stderr, filtered by `ZTKA_LOG`/`--log-level`.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;
use crate::config::LogConfig;

pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|e| {
        eprintln!(
            "ztka: invalid log filter {:?} ({e}); using \"info\"",
            config.filter
        );
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests run several servers in one process) keeps the first subscriber.
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
