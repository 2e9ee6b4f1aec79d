//! Operational endpoints: liveness, readiness, metrics, sync status (with run
//! history) and "run this view now".
//!
//! Promises:
//! - `/healthz` answers 200 while the scheduler loop makes progress, and 503
//!   (`"status": "stalled"`) once it has not gone round for
//!   `scheduler.stall_after`: restarting the process is what helps then;
//! - `/readyz` gates only on what serving reads needs: 200 while Redis answers
//!   a PING within [`REDIS_PROBE_TIMEOUT`], else 503. The warehouse is probed
//!   and reported in the body (`"warehouse": "ok" | "unavailable" |
//!   "unknown"`) without failing readiness, so a warehouse outage never takes
//!   the read API out of a load balancer. Its probe result is reused for
//!   [`WAREHOUSE_PROBE_TTL`] (frequent probes do not log in every time), and
//!   an answer never waits more than [`WAREHOUSE_PROBE_WAIT`] for it: a slow
//!   probe finishes in the background (`"unknown"` meanwhile). Both bodies
//!   name what failed, never the error itself (no token is needed to ask; the
//!   error goes to the log);
//! - `/metrics` is Prometheus text;
//! - `GET /api/v1/sync/status` is exactly what `status --json` prints: each
//!   registered view's status, its [`BatchSyncStatus`] and its kept run
//!   history (`runs`, newest first, at most `sync.run_history`);
//! - `GET /api/v1/sync/{name}/versions/{v}/status` is one view's
//!   [`BatchSyncStatus`], the Signals SDK 0.4.x `BatchSyncStatusResponse`
//!   shape, field for field;
//! - `POST /api/v1/sync/{name}/versions/{v}/run` asks the scheduler for a run
//!   now (202; a running view runs again right after).
//!
//! Assumes the scheduler is running in this process.

use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value as Json_};

use super::registry::parse_version;
use super::{ApiError, ApiResult, Shared};
use crate::config::RUN_HISTORY_MAX;
use crate::model::ViewId;
use crate::profiles::{ProfileStore, RunRecord, RunStatus};
use crate::registry;
use crate::scheduler::Command;

pub const WAREHOUSE_PROBE_TTL: Duration = Duration::from_secs(15);
/// How long one warehouse probe may take (a login can be slow).
const WAREHOUSE_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `/readyz` waits for a warehouse probe before answering without it.
pub const WAREHOUSE_PROBE_WAIT: Duration = Duration::from_secs(2);
/// A Redis slower than this to PING is not serving reads either; load
/// balancers' probes time out after a second or a few.
pub const REDIS_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a failed run's interval starts when the run read the whole table.
const BEGINNING: &str = "1970-01-01T00:00:00Z";

/// A view's sync state in the Signals SDK 0.4.x `BatchSyncStatusResponse`
/// shape (every field of it, no other), computed from the view's kept runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchSyncStatus {
    /// `failed` while the newest finished runs failed (no run completed
    /// since); else `running` while a run holds the view's lease, or before
    /// any run completed; else `completed`.
    pub status: SyncState,
    /// Always `null`: views are batch-synced only.
    pub streaming_since: Option<String>,
    /// When the last completed run finished.
    pub last_synced_at: Option<String>,
    /// When the run in flight started (`null` when none is).
    pub sync_started_at: Option<String>,
    /// The view's committed watermark: every row up to it is in the store.
    pub data_fresh_through: Option<String>,
    /// `database.schema.table` of the view's batch source.
    pub source_table: Option<String>,
    /// Always `null`: a view has no expected sync window in days.
    pub sync_progress: Option<Json_>,
    /// Entities written by the completed runs in the kept history; `null`
    /// when it holds none.
    pub records_synced: Option<u64>,
    /// The failed runs since the last completed one, newest first: empty
    /// unless `status` is `failed` (a completed run re-reads what they missed).
    pub errors: Vec<SyncError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncState {
    Running,
    Completed,
    Failed,
}

/// One failed run as the SDK's `SyncError`: the window it tried to read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncError {
    /// The watermark the run started from: its own record's, else the view's
    /// committed one (a run that failed early never read it, and nothing
    /// committed since), else [`BEGINNING`] (a full read).
    pub interval_start: String,
    /// When the run started: it read rows up to then.
    pub interval_end: String,
    pub message: String,
}

/// The [`BatchSyncStatus`] of a view whose kept runs are `runs` (newest
/// first), whose committed watermark is `watermark`, and which has a run in
/// flight if `in_flight` is `Some` (with its start, once noted).
pub fn batch_sync_status(
    source_table: &str,
    watermark: Option<String>,
    runs: &[RunRecord],
    in_flight: Option<Option<String>>,
) -> BatchSyncStatus {
    let errors: Vec<SyncError> = runs
        .iter()
        .take_while(|r| r.status != RunStatus::Ok)
        .filter(|r| r.status == RunStatus::Failed)
        .map(|r| SyncError {
            interval_start: r
                .watermark_before
                .clone()
                .or_else(|| watermark.clone())
                .unwrap_or_else(|| BEGINNING.to_string()),
            interval_end: r.started_at.clone(),
            message: r.error.clone().unwrap_or_else(|| "failed".into()),
        })
        .collect();
    let completed: Vec<&RunRecord> = runs.iter().filter(|r| r.status == RunStatus::Ok).collect();
    // A completed run older than the kept history still shows: every record
    // carries the last success forward.
    let last_synced_at = completed
        .first()
        .and_then(|r| r.finished_at.clone())
        .or_else(|| runs.first().and_then(|r| r.last_success_at.clone()));
    let status = if !errors.is_empty() {
        SyncState::Failed
    } else if in_flight.is_some() || last_synced_at.is_none() {
        SyncState::Running
    } else {
        SyncState::Completed
    };
    BatchSyncStatus {
        status,
        streaming_since: None,
        last_synced_at,
        sync_started_at: in_flight.flatten(),
        data_fresh_through: watermark,
        source_table: Some(source_table.to_string()),
        sync_progress: None,
        records_synced: (!completed.is_empty())
            .then(|| completed.iter().map(|r| r.rows_written).sum()),
        errors,
    }
}

/// One row of `status --json` and `GET /api/v1/sync/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ViewSyncStatus {
    #[serde(flatten)]
    pub view: registry::ViewStatus,
    pub sync_status: BatchSyncStatus,
    /// Finished runs kept, newest first (the first is `last_run`).
    pub runs: Vec<RunRecord>,
}

/// Every registered view's [`ViewSyncStatus`], ordered by name and version.
pub async fn status_with_history(store: &ProfileStore) -> anyhow::Result<Vec<ViewSyncStatus>> {
    let mut rows = Vec::new();
    for view in registry::status(store).await? {
        let id = ViewId {
            name: view.view.clone(),
            version: view.version,
        };
        let runs = store.run_history(&id, RUN_HISTORY_MAX).await?;
        let in_flight = store.in_flight(&id).await?;
        rows.push(ViewSyncStatus {
            sync_status: batch_sync_status(&view.table, view.watermark.clone(), &runs, in_flight),
            view,
            runs,
        });
    }
    Ok(rows)
}

pub async fn healthz(State(state): State<Shared>) -> impl IntoResponse {
    let p = state.scheduler.progress();
    let stalled = p.stalled();
    if stalled {
        tracing::warn!(
            silent_for_s = p.silence.as_secs(),
            stall_after_s = p.stall_after.as_secs(),
            "liveness check failed: the scheduler loop is not making progress"
        );
    }
    (
        if stalled {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        },
        Json(json!({
            "status": if stalled { "stalled" } else { "ok" },
            "scheduler": {
                "last_progress_seconds_ago": p.silence.as_secs(),
                "stall_after_seconds": p.stall_after.as_secs(),
            },
        })),
    )
}

/// The Signals API's own health route, which SDKs may call outside `/api/v1`.
pub async fn health_all() -> Json<Json_> {
    Json(json!({ "status": "ok", "dependencies": {} }))
}

/// The warehouse's state as last probed; `None` while a probe is in flight
/// for longer than [`WAREHOUSE_PROBE_WAIT`].
async fn probe_warehouse(state: &Shared) -> Option<Result<(), String>> {
    // Held only by a probe: busy means one is in flight, and waiting for it
    // would make readiness as slow as the warehouse.
    let Ok(last) = state.warehouse_probe.try_lock() else {
        return None;
    };
    if let Some((at, result)) = last.as_ref() {
        if at.elapsed() < WAREHOUSE_PROBE_TTL {
            return Some(result.clone());
        }
    }
    drop(last);
    let state = state.clone();
    // Its own task, so a probe outlives an answer that stopped waiting and
    // still caches what it found.
    let probe = tokio::spawn(async move {
        let mut last = state.warehouse_probe.lock().await;
        if let Some((at, result)) = last.as_ref() {
            if at.elapsed() < WAREHOUSE_PROBE_TTL {
                return result.clone();
            }
        }
        let result =
            match tokio::time::timeout(WAREHOUSE_PROBE_TIMEOUT, state.warehouse.ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "no answer within {}s",
                    WAREHOUSE_PROBE_TIMEOUT.as_secs()
                )),
            };
        *last = Some((Instant::now(), result.clone()));
        result
    });
    tokio::time::timeout(WAREHOUSE_PROBE_WAIT, probe)
        .await
        .ok()
        .and_then(Result::ok)
}

pub async fn readyz(State(state): State<Shared>) -> impl IntoResponse {
    let redis = async {
        match tokio::time::timeout(REDIS_PROBE_TIMEOUT, state.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!(
                "no answer within {}s",
                REDIS_PROBE_TIMEOUT.as_secs()
            )),
        }
    };
    let (redis, warehouse) = tokio::join!(redis, probe_warehouse(&state));
    // Unauthenticated: name what failed, keep the details (account names,
    // server messages) for the log.
    let shown = |what: &str, r: Option<&Result<(), String>>| match r {
        None => json!("unknown"),
        Some(Ok(())) => json!("ok"),
        Some(Err(e)) => {
            tracing::warn!(check = what, error = %e, "readiness check failed");
            json!("unavailable")
        }
    };
    // Reads and the registry need Redis only; a warehouse outage delays
    // syncs (their runs retry) but must not stop serving what is stored.
    let ready = redis.is_ok();
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(json!({
            "status": if ready { "ready" } else { "not ready" },
            "checks": {
                "redis": shown("redis", Some(&redis)),
                "warehouse": shown("warehouse", warehouse.as_ref()),
            },
        })),
    )
}

pub async fn metrics(State(state): State<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

pub async fn sync_status(State(state): State<Shared>) -> ApiResult<Json<Vec<ViewSyncStatus>>> {
    Ok(Json(status_with_history(&state.store).await?))
}

pub async fn view_sync_status(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<BatchSyncStatus>> {
    let id = ViewId {
        name,
        version: parse_version(&version)?,
    };
    let view = registry::get(&state.store, &id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "view `{}` version {} is not registered",
            id.name, id.version
        ))
    })?;
    let watermark = state
        .store
        .watermark(&id)
        .await?
        .map(crate::time::format_nanos);
    let runs = state.store.run_history(&id, RUN_HISTORY_MAX).await?;
    let in_flight = state.store.in_flight(&id).await?;
    Ok(Json(batch_sync_status(
        &crate::sync::table_of(&view).to_string(),
        watermark,
        &runs,
        in_flight,
    )))
}

pub async fn run_now(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Json_>)> {
    let id = ViewId {
        name,
        version: parse_version(&version)?,
    };
    let view = registry::get(&state.store, &id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "view `{}` version {} is not registered",
            id.name, id.version
        ))
    })?;
    if !view.online {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("view `{id}` is offline (online = false): it is never synced"),
        ));
    }
    if !state.scheduler.send(Command::RunNow(id.clone())).await {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler has stopped (shutting down)",
        ));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "status": "scheduled", "view": id.name, "version": id.version })),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: RunStatus, started: &str, wm_before: Option<&str>, written: u64) -> RunRecord {
        RunRecord {
            status,
            started_at: started.into(),
            finished_at: Some(format!("{started}+done")),
            watermark_before: wm_before.map(String::from),
            rows_written: written,
            error: (status == RunStatus::Failed).then(|| format!("boom at {started}")),
            ..RunRecord::default()
        }
    }

    #[test]
    fn failures_since_the_last_completed_run_make_it_failed_newest_first() {
        let runs = [
            run(RunStatus::Failed, "t4", Some("w2"), 0),
            run(RunStatus::Interrupted, "t3", Some("w2"), 0),
            run(RunStatus::Failed, "t2", None, 0),
            run(RunStatus::Ok, "t1", None, 5),
            run(RunStatus::Failed, "t0", None, 0),
        ];
        let s = batch_sync_status("DB.S.T", Some("w2".into()), &runs, None);
        assert_eq!(s.status, SyncState::Failed);
        assert_eq!(
            s.errors,
            [
                SyncError {
                    interval_start: "w2".into(),
                    interval_end: "t4".into(),
                    message: "boom at t4".into()
                },
                // It failed before reading its watermark: the committed one.
                SyncError {
                    interval_start: "w2".into(),
                    interval_end: "t2".into(),
                    message: "boom at t2".into()
                },
            ]
        );
        // No watermark at all: the failed run was a full read.
        let full = batch_sync_status("DB.S.T", None, &runs[2..], None);
        assert_eq!(full.errors[0].interval_start, BEGINNING);
        assert_eq!(s.last_synced_at.as_deref(), Some("t1+done"));
        assert_eq!(s.records_synced, Some(5));
        assert_eq!(s.source_table.as_deref(), Some("DB.S.T"));
    }

    #[test]
    fn a_completed_run_clears_earlier_failures_and_a_run_in_flight_shows() {
        let runs = [
            run(RunStatus::Ok, "t2", Some("w1"), 3),
            run(RunStatus::Failed, "t1", Some("w1"), 0),
            run(RunStatus::Ok, "t0", None, 4),
        ];
        let done = batch_sync_status("T", Some("w2".into()), &runs, None);
        assert_eq!(done.status, SyncState::Completed);
        assert!(done.errors.is_empty());
        assert_eq!(done.records_synced, Some(7));
        assert_eq!(done.data_fresh_through.as_deref(), Some("w2"));
        assert_eq!(done.sync_started_at, None);

        let busy = batch_sync_status("T", None, &runs, Some(Some("t3".into())));
        assert_eq!(busy.status, SyncState::Running);
        assert_eq!(busy.sync_started_at.as_deref(), Some("t3"));
    }

    #[test]
    fn a_view_that_never_completed_is_running_with_nothing_synced() {
        let s = batch_sync_status("T", None, &[], None);
        assert_eq!(s.status, SyncState::Running);
        assert_eq!((s.last_synced_at, s.records_synced), (None, None));
        // A success older than the kept history still counts as the last sync.
        let mut only = run(RunStatus::Interrupted, "t9", None, 0);
        only.last_success_at = Some("t5".into());
        let s = batch_sync_status("T", None, &[only], None);
        assert_eq!(s.status, SyncState::Completed);
        assert_eq!(s.last_synced_at.as_deref(), Some("t5"));
        assert_eq!(s.records_synced, None);
    }
}
