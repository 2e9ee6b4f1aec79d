//! The `materializer` command line: `run | sync | apply | status | reset | delete | check | profile`.
//!
//! Every command loads the config (a bad one ends with one line naming the
//! file and key, exit code 2), connects to Redis and applies the views of
//! `registry.files`. Results go to stdout, logs to stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use materializer::config::{Config, Loaded};
use materializer::model::{printable, View, ViewId};
use materializer::scheduler::{self, Scheduler};
use materializer::sync::{format_nanos, format_skipped};
use materializer::{api, registry, startup, telemetry};

#[derive(Parser)]
#[command(
    name = "materializer",
    version,
    about = "Keeps a Redis Profiles Store in step with warehouse tables"
)]
struct Cli {
    /// Config file (TOML); every key can be overridden by MATERIALIZER__SECTION__KEY.
    #[arg(
        long,
        global = true,
        default_value = "config/materializer.toml",
        env = "MATERIALIZER_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: sync every online view on its interval until SIGTERM/SIGINT.
    Run,
    /// One run now of every online view (or one), then exit; non-zero if any failed.
    Sync {
        /// NAME or NAME:VERSION
        #[arg(long)]
        view: Option<String>,
    },
    /// Validate and register views from JSON or TOML files (one view or a list each).
    Apply {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Every registered view with its watermark and last run.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Rewind a view's watermark (forget it without --to) for a backfill.
    Reset {
        /// NAME or NAME:VERSION
        #[arg(long)]
        view: String,
        /// New watermark, RFC 3339 (e.g. 2024-05-01T00:00:00Z)
        #[arg(long)]
        to: Option<String>,
    },
    /// Unregister a view (any stored entry, even one this version cannot read):
    /// no more runs, its watermark is forgotten; --purge also removes its values.
    Delete {
        /// NAME (every version) or NAME:VERSION
        #[arg(long)]
        view: String,
        /// Also remove the view's values from every entity hash.
        #[arg(long)]
        purge: bool,
    },
    /// Check the config, Redis, the warehouse, and every view's table and columns.
    Check,
    /// Print the stored profile of entities for a view, as JSON (read back from Redis).
    Profile {
        /// NAME or NAME:VERSION
        #[arg(long)]
        view: String,
        /// Entity values, e.g. a domain_userid
        #[arg(required = true)]
        entities: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match Config::load(&cli.config, std::env::vars()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("materializer: config error: {e:#}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&loaded.config.log);
    for key in &loaded.unknown_keys {
        tracing::warn!(key = %key, file = %loaded.path.display(), "unknown config key ignored");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("materializer: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command, loaded)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("materializer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, loaded: Loaded) -> Result<ExitCode> {
    match command {
        Command::Run => run_daemon(loaded).await,
        Command::Sync { view } => sync_once(loaded, view).await,
        Command::Apply { files } => apply(loaded, files).await,
        Command::Status { json } => status(loaded, json).await,
        Command::Reset { view, to } => reset(loaded, view, to).await,
        Command::Delete { view, purge } => delete(loaded, view, purge).await,
        Command::Check => check(loaded).await,
        Command::Profile { view, entities } => profile(loaded, view, entities).await,
    }
}

async fn run_daemon(loaded: Loaded) -> Result<ExitCode> {
    let shutdown = startup::shutdown_on_signals();
    // Redis may come up after us (or be restarting): wait for it rather than exit.
    let mut delay = Duration::from_secs(1);
    let (store, views) = loop {
        match startup::connect(&loaded).await {
            Ok(c) => break (c.store, c.file_views),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), retry_in = ?delay, "cannot start; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(ExitCode::SUCCESS),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    let (handle, commands) = scheduler::channel();
    let runner = startup::runner(&loaded, store.clone())?;
    // The API shares the runner's metrics and warehouse, so /metrics shows these runs.
    let api = match loaded.config.api.listen_addr()? {
        Some(addr) => {
            let listener = api::bind(addr).await?;
            // Reads get a connection of their own, so they never queue
            // behind a sync's page writes.
            let reads = store.separate().await.unwrap_or_else(|e| {
                tracing::warn!(error = %format!("{e:#}"), "no second Redis connection for the API; sharing the sync's");
                store.clone()
            });
            let state = api::ApiState::new(
                reads,
                runner.warehouse.clone(),
                runner.metrics.clone(),
                handle,
                &loaded.config.api,
            );
            Some(tokio::spawn(api::serve(
                listener,
                state,
                loaded.config.api.clone(),
                shutdown.clone(),
                loaded.config.scheduler.shutdown_grace,
            )))
        }
        None => None,
    };
    let scheduler = Scheduler {
        runner,
        config: loaded.config.scheduler.clone(),
        file_views: views,
        commands,
    };
    scheduler.run(shutdown).await?;
    if let Some(api) = api {
        api.await.context("HTTP API task")??;
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn sync_once(loaded: Loaded, selector: Option<String>) -> Result<ExitCode> {
    let store = startup::connect(&loaded).await?.store;
    let views = match &selector {
        Some(s) => registry::select(&store, s).await?,
        None => registry::list(&store)
            .await?
            .into_iter()
            .filter(|v| v.online)
            .collect(),
    };
    if views.is_empty() {
        println!("no online views registered");
        return Ok(ExitCode::SUCCESS);
    }
    let runner = startup::runner(&loaded, store)?;
    let lease_wait = loaded.config.sync.lease_ttl + Duration::from_secs(5);
    let results = scheduler::run_once(
        &runner,
        &views,
        loaded.config.scheduler.max_concurrent_views,
        lease_wait,
        &startup::shutdown_on_signals(),
    )
    .await;
    let mut failed = false;
    for (view, result) in results {
        let Some((rec, outcome)) = result else {
            println!("{}  skipped: view is offline (online = false)", view.id());
            failed = true;
            continue;
        };
        let wm = format!(
            "{} -> {}",
            rec.watermark_before.as_deref().unwrap_or("none"),
            rec.watermark_after
                .as_deref()
                .or(rec.watermark_before.as_deref())
                .unwrap_or("none")
        );
        match outcome {
            Ok(()) => println!(
                "{}  ok  read={} written={} stale={} skipped={} statements={}  watermark {}  {:.2}s",
                view.id(),
                rec.rows_read,
                rec.rows_written,
                rec.rows_stale,
                format_skipped(&rec.skipped),
                rec.statements,
                wm,
                rec.duration_ms as f64 / 1000.0
            ),
            Err(e) => {
                failed = true;
                println!(
                    "{}  FAILED ({})  read={} written={} skipped={} statements={}  watermark {}  {:.2}s: {}",
                    view.id(),
                    e.kind(),
                    rec.rows_read,
                    rec.rows_written,
                    format_skipped(&rec.skipped),
                    rec.statements,
                    wm,
                    rec.duration_ms as f64 / 1000.0,
                    e
                )
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn apply(loaded: Loaded, files: Vec<PathBuf>) -> Result<ExitCode> {
    let mut views = Vec::new();
    for f in &files {
        views.extend(registry::read_file(f)?);
    }
    let store = startup::connect(&loaded).await?.store;
    for (id, outcome) in registry::apply(&store, &views).await? {
        let what = match outcome {
            registry::Applied::Created => "created",
            registry::Applied::Unchanged => "unchanged",
            registry::Applied::Updated => "updated",
            registry::Applied::Reshaped => {
                "updated; source, entity or fields changed, so its watermark was reset"
            }
        };
        println!("{id}  {what}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(loaded: Loaded, json: bool) -> Result<ExitCode> {
    let store = startup::connect(&loaded).await?.store;
    let rows = registry::status(&store).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no views registered");
    }
    for r in rows {
        let run = r.last_run.as_ref();
        println!(
            "{}:{}  {}  watermark={}  last_run={} {} rows_written={}{}",
            printable(&r.view),
            r.version,
            if r.online { "online" } else { "offline" },
            r.watermark.as_deref().unwrap_or("none"),
            run.map(|r| r.finished_at.as_deref().unwrap_or(&r.started_at))
                .unwrap_or("never"),
            run.map(|r| r.status.to_string()).unwrap_or_default(),
            run.map_or(0, |r| r.rows_written),
            run.and_then(|r| r.last_error.as_deref())
                .map(|e| format!("  last_error={}", printable(e)))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn reset(loaded: Loaded, selector: String, to: Option<String>) -> Result<ExitCode> {
    let to = to
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(&s)
                .ok()
                .and_then(|t| t.timestamp_nanos_opt())
                .with_context(|| {
                    format!("--to: `{s}` is not an RFC 3339 time such as 2024-05-01T00:00:00Z")
                })
        })
        .transpose()?;
    let store = startup::connect(&loaded).await?.store;
    for v in registry::select(&store, &selector).await? {
        store.reset_watermark(&v.id(), to).await?;
        match to {
            Some(t) => println!("{}  watermark set to {}", v.id(), format_nanos(t)),
            None => println!(
                "{}  watermark forgotten: the next run reads the whole table",
                v.id()
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn delete(loaded: Loaded, selector: String, purge: bool) -> Result<ExitCode> {
    let (name, version) = ViewId::parse_selector(&selector).map_err(anyhow::Error::msg)?;
    let store = startup::connect(&loaded).await?.store;
    // NAME:VERSION reaches any stored entry, even an unreadable one.
    let ids: Vec<ViewId> = match version {
        Some(version) => vec![ViewId { name, version }],
        None => registry::select(&store, &selector)
            .await?
            .iter()
            .map(View::id)
            .collect(),
    };
    let mut code = ExitCode::SUCCESS;
    for id in ids {
        match registry::delete(&store, &id, purge).await? {
            Some(d) if purge => println!(
                "{}  deleted; values removed from {} entities",
                printable(&id.to_string()),
                d.purged_entities
            ),
            Some(_) => println!("{}  deleted", printable(&id.to_string())),
            None => {
                println!("{}  not registered", printable(&id.to_string()));
                code = ExitCode::FAILURE;
            }
        }
    }
    Ok(code)
}

async fn check(loaded: Loaded) -> Result<ExitCode> {
    let findings = materializer::check::check(&loaded).await;
    for f in &findings {
        println!("{f}");
    }
    Ok(if findings.iter().all(|f| f.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn profile(loaded: Loaded, selector: String, entities: Vec<String>) -> Result<ExitCode> {
    let store = startup::connect(&loaded).await?.store;
    let mut out = Vec::new();
    for v in registry::select(&store, &selector).await? {
        for e in &entities {
            let p = store.read_profile(&v, e).await?;
            out.push(serde_json::json!({
                "view": v.feast_name(),
                v.entity.join_key(): e,
                "event_timestamp": p.as_ref().and_then(|p| p.ts).map(format_nanos),
                "values": p.map(|p| p.values.into_iter().collect::<serde_json::Map<_, _>>()),
            }));
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
