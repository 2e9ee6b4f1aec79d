//! Operational endpoints: liveness, readiness, metrics, sync status and
//! "run this view now".
//!
//! Promises: `/healthz` answers 200 while the process serves requests;
//! `/readyz` answers 200 only when Redis answers a PING and the warehouse a
//! probe (the warehouse result is reused for [`WAREHOUSE_PROBE_TTL`], so
//! frequent probes do not log in every time), else 503 naming what failed;
//! `/metrics` is Prometheus text; `GET /api/v1/sync/status` is exactly what
//! `status --json` prints; `POST /api/v1/sync/{name}/versions/{v}/run` asks the
//! scheduler for a run now (202; a running view runs again right after).
//! Assumes the scheduler is running in this process.

use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value as Json_};

use super::registry::parse_version;
use super::{ApiError, ApiResult, Shared};
use crate::model::ViewId;
use crate::registry;
use crate::scheduler::Command;

pub const WAREHOUSE_PROBE_TTL: Duration = Duration::from_secs(15);
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn healthz() -> Json<Json_> {
    Json(json!({ "status": "ok" }))
}

/// The Signals API's own health route, which SDKs may call outside `/api/v1`.
pub async fn health_all() -> Json<Json_> {
    Json(json!({ "status": "ok", "dependencies": {} }))
}

async fn probe_warehouse(state: &Shared) -> Result<(), String> {
    let mut last = state.warehouse_probe.lock().await;
    if let Some((at, result)) = last.as_ref() {
        if at.elapsed() < WAREHOUSE_PROBE_TTL {
            return result.clone();
        }
    }
    let result = match tokio::time::timeout(PROBE_TIMEOUT, state.warehouse.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
    };
    *last = Some((Instant::now(), result.clone()));
    result
}

pub async fn readyz(State(state): State<Shared>) -> impl IntoResponse {
    let redis = match tokio::time::timeout(PROBE_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
    };
    let warehouse = probe_warehouse(&state).await;
    // Unauthenticated: name what failed, keep the details (account names,
    // server messages) for the log.
    let shown = |what: &str, r: &Result<(), String>| match r {
        Ok(()) => json!("ok"),
        Err(e) => {
            tracing::warn!(check = what, error = %e, "readiness check failed");
            json!("unavailable")
        }
    };
    let ready = redis.is_ok() && warehouse.is_ok();
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(json!({
            "status": if ready { "ready" } else { "not ready" },
            "checks": { "redis": shown("redis", &redis), "warehouse": shown("warehouse", &warehouse) },
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

pub async fn sync_status(
    State(state): State<Shared>,
) -> ApiResult<Json<Vec<registry::ViewStatus>>> {
    Ok(Json(registry::status(&state.store).await?))
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
