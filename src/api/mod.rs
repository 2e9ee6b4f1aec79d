//! The HTTP API of `materializer run`: a Signals-compatible registry and
//! attribute reads (what `snowplow-signals` 0.1.5 calls, plus the cheap parts
//! of 0.4.x), health, readiness, Prometheus metrics and sync control.
//!
//! Promises:
//! - every `/api/v1/*` request carries `Authorization: Bearer <one of
//!   api.tokens>` or gets a 401 JSON error; tokens are compared in constant
//!   time and never logged (with no tokens configured, config loading has
//!   already refused any listen address but loopback, and no token is asked);
//! - every reply is JSON (`/metrics` excepted), errors as `{"detail": "..."}`
//!   naming the key and the problem; bodies above [`MAX_BODY_BYTES`] and
//!   malformed JSON are 400, an invalid view is 422 and nothing is stored;
//! - on shutdown the listener stops accepting and in-flight requests get up
//!   to the grace period to finish.
//!
//! Assumes the registry and profiles live in the [`ProfileStore`]'s Redis and
//! that the scheduler behind [`SchedulerHandle`] re-reads the registry when
//! told to; the API never runs a sync itself.

pub mod attributes;
pub mod ops;
pub mod registry;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::config::Secret;
use crate::metrics::Metrics;
use crate::model::ViewId;
use crate::profiles::ProfileStore;
use crate::scheduler::SchedulerHandle;
use crate::warehouse::Warehouse;

/// Largest request body accepted: views and attribute requests are a few KiB.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What every handler shares.
pub struct ApiState {
    pub store: ProfileStore,
    pub warehouse: Arc<dyn Warehouse>,
    pub metrics: Arc<Metrics>,
    pub scheduler: SchedulerHandle,
    tokens: Vec<Secret>,
    /// Views applied (created, reshaped or turned online) since the last
    /// `feature_store/apply`, which starts their first run at once.
    pending: Mutex<BTreeSet<ViewId>>,
    /// The last warehouse probe of `/readyz`: probing on every scrape would
    /// log in to the warehouse every few seconds.
    warehouse_probe: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

pub type Shared = Arc<ApiState>;

impl ApiState {
    pub fn new(
        store: ProfileStore,
        warehouse: Arc<dyn Warehouse>,
        metrics: Arc<Metrics>,
        scheduler: SchedulerHandle,
        tokens: Vec<Secret>,
    ) -> Shared {
        Arc::new(ApiState {
            store,
            warehouse,
            metrics,
            scheduler,
            tokens,
            pending: Mutex::new(BTreeSet::new()),
            warehouse_probe: tokio::sync::Mutex::new(None),
        })
    }

    /// Whether `presented` equals one of the configured tokens. Every token is
    /// compared, in constant time, so timing tells nothing about which or how much matched.
    fn token_matches(&self, presented: &str) -> bool {
        let mut ok = subtle::Choice::from(0);
        for t in &self.tokens {
            ok |= t.expose().as_bytes().ct_eq(presented.as_bytes());
        }
        ok.into()
    }
}

/// A JSON error reply: `{"detail": "..."}` (the shape FastAPI, and so the
/// Signals API, uses), plus the list of problems for an invalid view.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
    pub problems: Vec<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: detail.into(),
            problems: Vec::new(),
        }
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        let detail = format!("{e:#}");
        tracing::error!(error = %detail, "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "detail": self.detail });
        if !self.problems.is_empty() {
            body["problems"] = json!(self.problems);
        }
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The request body as JSON; a body over the limit or malformed JSON is a 400
/// that says which.
pub fn json_body(body: Result<Bytes, BytesRejection>) -> ApiResult<serde_json::Value> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::bad_request(format!(
                "request body: larger than the limit of {MAX_BODY_BYTES} bytes"
            ))
        } else {
            ApiError::bad_request(format!("request body: {}", r.body_text()))
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "request body: empty; expected a JSON object",
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("request body: not valid JSON: {e}")))
}

/// The routes. `/api/v1/*` needs a bearer token; health and metrics do not
/// (probes and scrapers carry none).
pub fn router(state: Shared) -> Router {
    let v1 = Router::new()
        .route(
            "/registry/views/",
            get(registry::list_views).post(registry::create_view),
        )
        .route(
            "/registry/views",
            get(registry::list_views).post(registry::create_view),
        )
        .route("/registry/views/{name}", get(registry::get_latest_view))
        .route(
            "/registry/views/{name}/versions/{version}",
            get(registry::get_view)
                .put(registry::put_view)
                .delete(registry::delete_view),
        )
        .route(
            "/registry/attribute_groups/",
            get(registry::list_groups).post(registry::create_group),
        )
        .route(
            "/registry/attribute_groups/{name}",
            get(registry::get_latest_group),
        )
        .route(
            "/registry/attribute_groups/{name}/versions/{version}",
            get(registry::get_group)
                .put(registry::put_group)
                .delete(registry::delete_view),
        )
        .route(
            "/registry/entities/",
            get(registry::list_entities).post(registry::create_entity),
        )
        .route(
            "/registry/entities/{name}",
            get(registry::get_entity).put(registry::put_entity),
        )
        .route(
            "/registry/attribute_keys/",
            get(registry::list_entities).post(registry::create_entity),
        )
        .route(
            "/registry/attribute_keys/{name}",
            get(registry::get_entity).put(registry::put_entity),
        )
        .route("/feature_store/apply", post(registry::feature_store_apply))
        .route(
            "/get-online-attributes",
            post(attributes::get_online_attributes),
        )
        .route("/sync/status", get(ops::sync_status))
        .route("/sync/{name}/versions/{version}/run", post(ops::run_now))
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .nest("/api/v1", v1)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/health-all", get(ops::health_all))
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

async fn unknown_route(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

async fn require_token(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if state.tokens.is_empty() {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match presented {
        Some(t) if state.token_matches(t) => next.run(req).await,
        found => {
            let detail = if found.is_some() {
                "Authorization: the bearer token is not one of api.tokens"
            } else {
                "Authorization: missing; send `Authorization: Bearer <token>`"
            };
            let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, detail).into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            resp
        }
    }
}

/// One line per request: method, path, status, duration. Headers (the token)
/// and query strings are never logged; probes and scrapes only at debug.
async fn log_request(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let started = Instant::now();
    let resp = next.run(req).await;
    let ms = started.elapsed().as_millis() as u64;
    let status = resp.status().as_u16();
    if matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics") && status < 400 {
        tracing::debug!(%method, %path, status, ms, "http");
    } else {
        tracing::info!(%method, %path, status, ms, "http");
    }
    resp
}

/// Binds the listen address now, so a taken port fails the start with the key's name.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("api.listen: cannot listen on {addr}"))
}

/// Serves until `shutdown`, then lets in-flight requests finish for up to `grace`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    shutdown: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, auth = !state.tokens.is_empty(), "HTTP API listening");
    let stop = shutdown.clone();
    let server = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { stop.cancelled().await });
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = async { server.await } => r.context("HTTP API")?,
        _ = deadline => tracing::warn!("shutdown grace elapsed; dropping open HTTP requests"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_is_not_json_is_a_400_naming_the_body() {
        let e = json_body(Ok(Bytes::from_static(b"{\"name\": "))).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.detail.contains("not valid JSON"), "{}", e.detail);
        let e = json_body(Ok(Bytes::new())).unwrap_err();
        assert!(e.detail.contains("empty"), "{}", e.detail);
    }

    #[test]
    fn errors_render_as_detail_json() {
        let mut e = ApiError::unprocessable("view `v`: owner: bad");
        e.problems = vec!["owner: bad".into()];
        let resp = e.into_response();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
