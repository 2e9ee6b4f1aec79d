//! What every command does first: connect to Redis (applying pending state
//! migrations), apply the views of `registry.files`, and build the runner.
//!
//! Promises: a view file that cannot be read or holds an invalid view is
//! reported (path and problem) and skipped, so the other files still apply;
//! relative paths resolve against the current directory, as the config
//! documents. Assumes a loaded, checked config.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

use crate::config::Loaded;
use crate::metrics::Metrics;
use crate::model::View;
use crate::profiles::ProfileStore;
use crate::registry;
use crate::sync::Runner;
use crate::warehouse;

/// A process connected to its state.
pub struct Connected {
    pub store: ProfileStore,
    /// The views of `registry.files` that were applied.
    pub file_views: Vec<View>,
    /// One line per view file skipped (path and problem).
    pub file_problems: Vec<String>,
}

/// Directory relative paths in the config are resolved against: the current
/// directory (where the README's commands run).
pub fn base_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

/// Connects to Redis and applies `registry.files`.
pub async fn connect(loaded: &Loaded) -> Result<Connected> {
    let store = ProfileStore::connect(&loaded.config.profiles).await?;
    let (all, mut problems) = registry::read_globs_each(&loaded.config.registry.files, &base_dir());
    // One view in two files would make the whole apply refuse: keep the first.
    let mut views: Vec<View> = Vec::with_capacity(all.len());
    for v in all {
        if views.iter().any(|w| w.id() == v.id()) {
            problems.push(format!(
                "registry.files: view `{}` is declared more than once; the first one applies",
                v.id()
            ));
        } else {
            views.push(v);
        }
    }
    for p in &problems {
        tracing::error!(error = %p, "registry.files: view file skipped");
    }
    if !views.is_empty() {
        registry::apply(&store, &views)
            .await
            .context("applying registry.files")?;
    }
    Ok(Connected {
        store,
        file_views: views,
        file_problems: problems,
    })
}

/// This process in lease tokens and `status`: `host:pid`.
pub fn replica_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// The runner of this process's runs, with fresh metrics.
pub fn runner(loaded: &Loaded, store: ProfileStore) -> Result<Runner> {
    Ok(Runner {
        warehouse: warehouse::build(&loaded.config.warehouse)?,
        store,
        config: loaded.config.sync.clone(),
        replica: replica_name(),
        metrics: Arc::new(Metrics::new(loaded.config.scheduler.interval)),
    })
}

/// A token cancelled on SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
        t.cancel();
    });
    token
}
