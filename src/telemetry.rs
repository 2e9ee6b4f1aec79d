//! Logging setup: `tracing` to stderr, JSON in containers, text in a terminal.
//!
//! Promises: the `snowflake-api` crate and the HTTP stack never log below
//! info, whatever level is configured, because at debug they print session
//! tokens and request payloads. Standard output stays free for command results.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Targets whose debug output carries secrets or whole payloads.
const CAPPED_TARGETS: [&str; 7] = [
    "snowflake_api",
    "snowflake_jwt",
    "reqwest",
    "reqwest_retry",
    "hyper",
    "hyper_util",
    "rustls",
];

pub fn init(cfg: &LogConfig) {
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| cfg.level.clone());
    let mut directives = base.clone();
    for t in CAPPED_TARGETS {
        directives.push_str(&format!(",{t}=info"));
    }
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("log.level: `{base}` is not a valid filter ({e}); using info");
        EnvFilter::new("info")
    });
    let json = match cfg.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.with_target(false).try_init()
    };
}
