//! The `materializer` command line: `run | sync | apply | status | health | reset | delete | check | profile`.
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
    Sync(SyncArgs),
    /// Validate and register views from JSON or TOML files (one view or a list each).
    Apply {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Every registered view with its watermark and last run (--json: also its
    /// sync status and kept run history).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Ask the running daemon's HTTP API (at `api.listen`) whether it is alive
    /// (`/healthz`; `/readyz` with --ready); exit 0 if so, 1 if not. For
    /// container health checks; needs no Redis.
    Health {
        /// Ask `/readyz` (can serve: Redis answers) instead of `/healthz`.
        #[arg(long)]
        ready: bool,
        /// How long to wait for the answer.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
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
    /// Erase entities' profiles (privacy requests): their values go, and a
    /// tombstone keeps rows stamped at or before now from ever coming back.
    Erase {
        /// The entity's join key, then its values: --entity domain_userid u1 u2
        #[arg(long, num_args = 2.., value_names = ["JOIN_KEY", "VALUE"], required = true)]
        entity: Vec<String>,
        /// Only this view (NAME or NAME:VERSION); default: every view of the entity
        #[arg(long)]
        view: Option<String>,
    },
    /// Check the config, Redis, the warehouse, and every view's table and columns.
    Check {
        /// One JSON document on stdout instead of lines.
        #[arg(long)]
        json: bool,
    },
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

#[derive(clap::Args)]
struct SyncArgs {
    /// NAME or NAME:VERSION
    #[arg(long)]
    view: Option<String>,
    /// Read and decode the window, compare it with Redis and print what a run
    /// would change; write nothing, move no watermark.
    #[arg(long)]
    dry_run: bool,
    /// Backfill rows stamped at or after this RFC 3339 time (needs --view);
    /// the watermark does not move.
    #[arg(long, requires = "view")]
    from: Option<String>,
    /// With --from: only rows stamped before this RFC 3339 time.
    #[arg(long, requires = "from")]
    to: Option<String>,
    /// One JSON document on stdout instead of lines.
    #[arg(long)]
    json: bool,
}

/// An RFC 3339 time given to `flag`, as nanoseconds since the epoch.
fn rfc3339_nanos(flag: &str, s: &str) -> Result<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .with_context(|| {
            format!("{flag}: `{s}` is not an RFC 3339 time such as 2024-05-01T00:00:00Z")
        })
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
        Command::Sync(args) => sync_once(loaded, args).await,
        Command::Apply { files } => apply(loaded, files).await,
        Command::Status { json } => status(loaded, json).await,
        Command::Health { ready, timeout } => health(loaded, ready, timeout).await,
        Command::Reset { view, to } => reset(loaded, view, to).await,
        Command::Delete { view, purge } => delete(loaded, view, purge).await,
        Command::Erase { entity, view } => erase(loaded, entity, view).await,
        Command::Check { json } => check(loaded, json).await,
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

async fn sync_once(loaded: Loaded, args: SyncArgs) -> Result<ExitCode> {
    let range = match &args.from {
        Some(from) => {
            let range = materializer::sync::Range {
                from: rfc3339_nanos("--from", from)?,
                to: args
                    .to
                    .as_deref()
                    .map(|t| rfc3339_nanos("--to", t))
                    .transpose()?,
            };
            if range.to.is_some_and(|to| to <= range.from) {
                anyhow::bail!("--to: must be later than --from");
            }
            Some(range)
        }
        None => None,
    };
    let selector = args.view;
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
        if args.json {
            println!("{}", serde_json::json!({"ok": true, "views": []}));
        } else {
            println!("no online views registered");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let runner = startup::runner(&loaded, store)?;
    if args.dry_run || range.is_some() {
        return sync_detached(&runner, &views, range, args.dry_run, args.json).await;
    }
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
    let mut docs = Vec::new();
    for (view, result) in results {
        let Some((rec, outcome)) = result else {
            failed = true;
            if args.json {
                docs.push(sync_doc(view, None, "offline", Some(OFFLINE)));
            } else {
                println!("{}  skipped: {OFFLINE}", view.id());
            }
            continue;
        };
        if args.json {
            failed |= outcome.is_err();
            let error = outcome.as_ref().err().map(ToString::to_string);
            let kind = outcome.as_ref().map_or_else(|e| e.kind(), |()| "ok");
            docs.push(sync_doc(view, Some(&rec), kind, error.as_deref()));
            continue;
        }
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
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"ok": !failed, "views": docs}))?
        );
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

const OFFLINE: &str = "view is offline (online = false)";

/// One view's entry in `sync --json`: `view` (NAME:VERSION), `outcome` (`ok`,
/// an error kind, or `offline`), `error`, and `run`, the run record as
/// `status --json` shows it.
fn sync_doc(
    view: &View,
    rec: Option<&materializer::profiles::RunRecord>,
    outcome: &str,
    error: Option<&str>,
) -> serde_json::Value {
    serde_json::json!({
        "view": view.id().to_string(),
        "outcome": outcome,
        "error": error,
        "run": rec,
    })
}

/// `sync --dry-run` and `sync --from`: each view in turn, outside the
/// watermark (no lease, nothing committed; see `Runner::run_detached`).
async fn sync_detached(
    runner: &materializer::sync::Runner,
    views: &[View],
    range: Option<materializer::sync::Range>,
    dry_run: bool,
    json: bool,
) -> Result<ExitCode> {
    use materializer::dry_run::Change;
    let shutdown = startup::shutdown_on_signals();
    let mut failed = false;
    let mut docs = Vec::new();
    for view in views {
        if !view.online {
            failed = true;
            if json {
                docs.push(sync_doc(view, None, "offline", Some(OFFLINE)));
            } else {
                println!("{}  skipped: {OFFLINE}", view.id());
            }
            continue;
        }
        let mut detached = materializer::sync::Detached {
            range,
            dry_run,
            ..Default::default()
        };
        let (rec, outcome) = runner.run_detached(view, &mut detached, &shutdown).await;
        failed |= outcome.is_err();
        let names: Vec<String> = view.fields.iter().map(|f| f.name.clone()).collect();
        let report = detached.report.as_ref().map(|d| d.report(&names));
        let window = match range {
            Some(r) => format!(
                "[{}, {})",
                format_nanos(r.from),
                r.to.map(format_nanos).unwrap_or_else(|| "now".into())
            ),
            None if rec.full_read => "the whole table".into(),
            None => format!(
                "after the watermark {} (less the lookback)",
                rec.watermark_before.as_deref().unwrap_or("none")
            ),
        };
        if json {
            let error = outcome.as_ref().err().map(ToString::to_string);
            let kind = outcome.as_ref().map_or_else(|e| e.kind(), |()| "ok");
            let mut doc = sync_doc(view, Some(&rec), kind, error.as_deref());
            doc["window"] = window.into();
            if let Some(r) = range {
                doc["range"] = serde_json::json!({
                    "from": format_nanos(r.from),
                    "to": r.to.map(format_nanos),
                });
                doc["outside_range"] = detached.outside_range.into();
            }
            if dry_run {
                doc["dry_run"] = serde_json::to_value(&report)?;
            }
            docs.push(doc);
            continue;
        }
        let what = if dry_run { "dry run" } else { "backfill" };
        let outside = match range {
            Some(_) => format!(" outside_range={}", detached.outside_range),
            None => String::new(),
        };
        let counts = match &report {
            Some(r) => format!(
                "entities={} new={} changed={} stale={} unchanged={}",
                r.entities, r.new, r.changed, r.stale, r.unchanged
            ),
            None => format!("written={} stale={}", rec.rows_written, rec.rows_stale),
        };
        let head = match &outcome {
            Ok(()) => format!("{}  {what} ok", view.id()),
            Err(e) => format!("{}  {what} FAILED ({})", view.id(), e.kind()),
        };
        println!(
            "{head}  window {window}  read={}{outside} {counts} skipped={} statements={}  watermark unchanged  {:.2}s{}",
            rec.rows_read,
            format_skipped(&rec.skipped),
            rec.statements,
            rec.duration_ms as f64 / 1000.0,
            outcome.as_ref().err().map(|e| format!(": {e}")).unwrap_or_default()
        );
        for change in Change::ALL {
            let Some(samples) = report.as_ref().and_then(|r| r.samples.get(&change)) else {
                continue;
            };
            let shown: Vec<String> = samples
                .iter()
                .map(|s| {
                    let mut t = format!("{} (row {}", printable(&s.entity), s.row_timestamp);
                    if let Some(st) = &s.stored_timestamp {
                        t += &format!(", stored {st}");
                    }
                    if !s.fields.is_empty() {
                        t += &format!("; {}", printable(&s.fields.join(", ")));
                    }
                    t + ")"
                })
                .collect();
            println!("  {}: {}", change.as_str(), shown.join("  "));
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ok": !failed,
                "dry_run": dry_run,
                "views": docs,
            }))?
        );
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
    if json {
        let rows = api::ops::status_with_history(&store).await?;
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows = registry::status(&store).await?;
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

/// One line on stdout: `healthy` or `unhealthy`, the URL, and the answer (or
/// why there is none). The routes need no token, so none is sent.
async fn health(loaded: Loaded, ready: bool, timeout: Duration) -> Result<ExitCode> {
    let Some(mut addr) = loaded.config.api.listen_addr()? else {
        println!("unhealthy: api.listen is not set, so the daemon serves no HTTP to ask");
        return Ok(ExitCode::FAILURE);
    };
    // A wildcard listen address is reached on the loopback of its family.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!("http://{addr}/{}", if ready { "readyz" } else { "healthz" });
    // Straight to the daemon: a proxy from the environment must not answer for it.
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .context("HTTP client")?;
    let (ok, answer) = match client.get(&url).send().await {
        Ok(resp) => {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
            let body: String = body.chars().take(300).collect();
            (
                status.is_success(),
                format!("{} {}", status.as_u16(), printable(&body)),
            )
        }
        Err(e) if e.is_timeout() => (false, format!("no answer within {timeout:?}")),
        Err(e) => (
            false,
            format!("no answer: {}", printable(&format!("{e:#}"))),
        ),
    };
    println!(
        "{}: GET {url} -> {answer}",
        if ok { "healthy" } else { "unhealthy" }
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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

async fn erase(loaded: Loaded, entity: Vec<String>, view: Option<String>) -> Result<ExitCode> {
    let store = startup::connect(&loaded).await?.store;
    let (join_key, values) = entity.split_first().expect("clap requires two values");
    let e = match registry::erase(&store, join_key, values, view.as_deref()).await? {
        Ok(e) => e,
        Err(why) => {
            eprintln!("erase: {why}; nothing erased");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!(
        "{} {}  erased at {}: values removed from {} of {} entities; tombstones kept",
        printable(join_key),
        e.view
            .as_deref()
            .map(printable)
            .unwrap_or_else(|| "(every view)".into()),
        e.erased_at,
        e.removed,
        e.entities
    );
    Ok(ExitCode::SUCCESS)
}

async fn check(loaded: Loaded, json: bool) -> Result<ExitCode> {
    let findings = materializer::check::check(&loaded).await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&materializer::check::report(&findings))?
        );
    } else {
        for f in &findings {
            println!("{f}");
        }
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
