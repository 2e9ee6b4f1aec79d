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
//! - a handler that panics answers 500 `{"detail": ...}` and the panic is
//!   logged; the connection is never dropped unanswered;
//! - at most `api.max_connections` connections hold a descriptor; one that
//!   does not send its headers, stays idle, or leaves its response unread
//!   past `api.header_read_timeout` / `api.idle_timeout` is closed, and a
//!   request past `api.request_timeout` is a 503 (see [`serve`]);
//! - on shutdown the listener stops accepting and in-flight requests get up
//!   to the grace period to finish.
//!
//! Assumes the registry and profiles live in the [`ProfileStore`]'s Redis and
//! that the scheduler behind [`SchedulerHandle`] re-reads the registry when
//! told to; the API never runs a sync itself.

pub mod attributes;
pub mod erase;
pub mod ops;
pub mod registry;
pub mod views;

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{self, Poll};
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
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::Secret;
use crate::metrics::Metrics;
use crate::model::ViewId;
use crate::profiles::ProfileStore;
use crate::scheduler::SchedulerHandle;
use crate::warehouse::Warehouse;

/// Largest request body accepted: views and attribute requests are a few KiB.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// How much one attribute read may ask for (`api.max_entities`, `api.max_cells`).
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub max_entities: usize,
    pub max_cells: usize,
}

/// What every handler shares.
pub struct ApiState {
    /// On a Redis connection of its own (see `ProfileStore::separate`).
    pub store: ProfileStore,
    pub limits: ReadLimits,
    /// The registered views, held in memory for the read path (see [`views`]).
    pub views: views::Views,
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
        config: &crate::config::ApiConfig,
    ) -> Shared {
        let state = Arc::new(ApiState {
            store,
            limits: ReadLimits {
                max_entities: config.max_entities,
                max_cells: config.max_cells,
            },
            views: Default::default(),
            warehouse,
            metrics,
            scheduler,
            tokens: config.tokens.clone(),
            pending: Mutex::new(BTreeSet::new()),
            warehouse_probe: tokio::sync::Mutex::new(None),
        });
        views::Views::keep_current(Arc::downgrade(&state));
        state
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
        // A store failure keeps its status (503 while Redis is away) however
        // many layers of context it went through.
        match e.downcast::<crate::profiles::StoreError>() {
            Ok(store) => store.into(),
            Err(other) => ApiError::internal(other),
        }
    }
}

impl ApiError {
    fn internal(e: anyhow::Error) -> Self {
        let detail = format!("{e:#}");
        tracing::error!(error = %detail, "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }
}

impl From<crate::profiles::StoreError> for ApiError {
    fn from(e: crate::profiles::StoreError) -> Self {
        use crate::profiles::StoreError;
        let status = match e {
            StoreError::Unavailable(_) | StoreError::Refused(_) => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let detail = e.to_string();
        tracing::error!(error = %detail, "request failed");
        ApiError::new(status, detail)
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
        .route("/profiles/delete", post(erase::delete_profiles))
        .route("/sync/status", get(ops::sync_status))
        .route("/sync/{name}/versions/{version}/run", post(ops::run_now))
        .route(
            "/sync/{name}/versions/{version}/status",
            get(ops::view_sync_status),
        )
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            views_stale_after_changes,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .nest("/api/v1", v1)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/health-all", get(ops::health_all))
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(json_error_body))
        .layer(middleware::from_fn(catch_panic))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// A handler that panics answers 500 `{"detail": ...}` (the panic is logged
/// at error level) instead of dropping the connection unanswered.
async fn catch_panic(req: Request, next: Next) -> Response {
    use futures::FutureExt;
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
    {
        Ok(resp) => resp,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            tracing::error!(%method, %path, panic = %message, "request handler panicked");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: the request could not be completed (see the server log)",
            )
            .into_response()
        }
    }
}

/// After a request that may change the registry (any method but GET and
/// HEAD on `/registry/*` and `/feature_store/apply`), the read path's views
/// are checked before the next read, so a client reads what it just applied.
async fn views_stale_after_changes(
    State(state): State<Shared>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let changes = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    ) && (path.contains("/registry/") || path.ends_with("/feature_store/apply"));
    let resp = next.run(req).await;
    if changes {
        state.views.mark_stale();
    }
    resp
}

async fn unknown_route(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
}

/// Gives an error answered without a body (axum's own 405 for a method a
/// route lacks, 413, 415, ...) the JSON `{"detail": ...}` every other error has.
async fn json_error_body(req: Request, next: Next) -> Response {
    use axum::body::HttpBody;
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error())
        || resp.body().size_hint().exact() != Some(0)
    {
        return resp;
    }
    let path = crate::model::quoted(&path);
    // axum adds the `Allow` header of a 405 outside every layer, after this.
    let detail = if status == StatusCode::METHOD_NOT_ALLOWED {
        format!("method: {method} is not allowed on {path} (the Allow header lists those that are)")
    } else {
        let reason = status.canonical_reason().unwrap_or("error");
        format!("{method} {path}: {reason}")
    };
    let (mut parts, _) = resp.into_parts();
    let body = ApiError::new(status, detail).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(body.headers().clone());
    Response::from_parts(parts, body.into_body())
}

async fn require_token(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if state.tokens.is_empty() {
        return next.run(req).await;
    }
    // Two headers are refused whatever they hold: proxies and frameworks
    // disagree on which one counts.
    let sent = req.headers().get_all(header::AUTHORIZATION).iter().count();
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .filter(|_| sent == 1)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match presented {
        Some(t) if state.token_matches(t) => next.run(req).await,
        found => {
            let detail = if sent > 1 {
                "Authorization: sent more than once; send exactly one `Authorization: Bearer <token>`"
            } else if found.is_some() {
                "Authorization: the bearer token is not one of api.tokens"
            } else if sent == 1 {
                "Authorization: not of the form `Bearer <token>`"
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
///
/// The limits of `api` (the README's "Limits"):
/// - at most `max_connections` connections are open at once: the permit is
///   taken *before* `accept`, so further clients wait in the kernel's listen
///   backlog and hold no descriptor of ours (the sync's descriptors and
///   connections are never starved by the API);
/// - a connection's first request must bring its headers within
///   `header_read_timeout` of the accept; after a response the connection may
///   stay idle for `idle_timeout`, and once the next request's first byte is
///   in, its headers are due within `header_read_timeout` (see [`ConnTimer`]);
///   a response the client does not read for `idle_timeout` ends the
///   connection too (see [`Metered`]);
/// - every request is answered within `request_timeout` (503 past it).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    api: crate::config::ApiConfig,
    shutdown: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        auth = !state.tokens.is_empty(),
        max_connections = api.max_connections,
        "HTTP API listening"
    );
    let app = router(state).layer(middleware::from_fn_with_state(
        api.request_timeout,
        within_request_timeout,
    ));
    let slots = Arc::new(Semaphore::new(
        api.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                // Gone before we took it: nothing to wait for.
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) => continue,
                // Out of descriptors (EMFILE/ENFILE) or memory: retrying at
                // once would spin; the connection stays in the backlog.
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP API: cannot accept a connection; retrying in 1s");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        conns.spawn(serve_connection(
            stream,
            app.clone(),
            api.header_read_timeout,
            api.idle_timeout,
            shutdown.clone(),
            permit,
        ));
    }
    // Stop accepting: whatever waits in the backlog is refused.
    drop(listener);
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            open = conns.len(),
            "shutdown grace elapsed; dropping open HTTP requests"
        );
        conns.abort_all();
    }
    Ok(())
}

/// One connection, HTTP/1.1 with keep-alive, holding its slot until it ends.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let read = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Metered {
        inner: stream,
        read: read.clone(),
        write_stall: idle_timeout,
        stalled: None,
    });
    let timer = ConnTimer {
        tokio: TokioTimer::new(),
        read,
        first_request: AtomicBool::new(true),
        header_read_timeout,
        idle_timeout,
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(timer)
        .header_read_timeout(header_read_timeout)
        .serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            // An idle connection closes at once, a busy one after its response.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        // Timeouts, resets and garbage: the client's business, not an error of ours.
        tracing::debug!(error = %e, "HTTP connection ended");
    }
}

/// Past `api.request_timeout` a request is answered 503 and its handler dropped.
async fn within_request_timeout(
    State(limit): State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    // Outermost, so timed-out requests are measured too; by route template,
    // never the raw path, so the series stay bounded.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let started = Instant::now();
    let resp = match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(%method, %path, status = 503, "http request timed out");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the request took longer than api.request_timeout ({}); try again later",
                    humantime::format_duration(limit)
                ),
            )
            .into_response()
        }
    };
    crate::metrics::observe_http(
        route.as_deref(),
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

/// hyper's header-read timer for one connection. hyper (1.x) starts it when
/// the connection opens and again each time the connection goes idle after a
/// response, so on its own it would close every kept-alive connection after
/// `header_read_timeout` and there would be no separate idle timeout. This
/// timer gives the first request `header_read_timeout` from the accept; later
/// ones get `idle_timeout` for their first byte, then `header_read_timeout`
/// for the rest of their headers.
struct ConnTimer {
    tokio: TokioTimer,
    /// Bytes read from the socket so far (by [`Metered`]).
    read: Arc<AtomicU64>,
    first_request: AtomicBool,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl hyper::rt::Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.tokio.sleep(duration)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        if self.first_request.swap(false, Ordering::Relaxed) {
            return self.tokio.sleep_until(deadline);
        }
        Box::pin(IdleThenHeaders {
            sleep: self.tokio.sleep(self.idle_timeout),
            tokio: self.tokio.clone(),
            read: self.read.clone(),
            read_at_start: self.read.load(Ordering::Relaxed),
            header_read_timeout: Some(self.header_read_timeout),
        })
    }

    fn now(&self) -> std::time::Instant {
        self.tokio.now()
    }
}

/// Fires `idle_timeout` after it was made unless a byte has been read by
/// then; from the first poll that sees a byte, `header_read_timeout` later.
/// hyper polls it right after each read of the request head, so "seen" is
/// "read" to within one poll.
struct IdleThenHeaders {
    sleep: Pin<Box<dyn hyper::rt::Sleep>>,
    tokio: TokioTimer,
    read: Arc<AtomicU64>,
    read_at_start: u64,
    /// Taken once the first byte is seen.
    header_read_timeout: Option<Duration>,
}

impl Future for IdleThenHeaders {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.read.load(Ordering::Relaxed) != this.read_at_start {
            if let Some(d) = this.header_read_timeout.take() {
                let deadline = hyper::rt::Timer::now(&this.tokio) + d;
                hyper::rt::Timer::reset(&this.tokio, &mut this.sleep, deadline);
            }
        }
        this.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for IdleThenHeaders {}

/// A connection's socket that counts the bytes read (for [`ConnTimer`]) and
/// fails a write the client has not let through for `write_stall` (the idle
/// timeout), so a client that stops reading its response cannot hold a slot
/// for ever.
struct Metered {
    inner: tokio::net::TcpStream,
    read: Arc<AtomicU64>,
    write_stall: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Metered {
    fn written(
        &mut self,
        cx: &mut task::Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let stall = self.write_stall;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of its response for api.idle_timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.written(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
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

    #[tokio::test]
    async fn a_panicking_handler_answers_500_with_detail_json_and_the_server_keeps_serving() {
        let app = Router::new()
            .route(
                "/boom",
                get(|| async {
                    if true {
                        panic!("boom in a handler");
                    }
                    "unreachable"
                }),
            )
            .route("/ok", get(|| async { "ok" }))
            .layer(middleware::from_fn(catch_panic));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        for _ in 0..2 {
            let resp = client
                .get(format!("http://{addr}/boom"))
                .send()
                .await
                .expect("an answer, not a dropped connection");
            assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let body: serde_json::Value = resp.json().await.unwrap();
            assert!(
                body["detail"].as_str().unwrap().contains("internal error"),
                "{body}"
            );
        }
        let resp = client
            .get(format!("http://{addr}/ok"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_request_past_request_timeout_is_a_503_naming_the_key() {
        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .layer(middleware::from_fn_with_state(
                Duration::from_millis(200),
                within_request_timeout,
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let started = Instant::now();
        let resp = reqwest::get(format!("http://{addr}/slow")).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = resp.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("api.request_timeout (200ms)"), "{body}");
    }

    #[test]
    fn errors_render_as_detail_json() {
        let mut e = ApiError::unprocessable("view `v`: owner: bad");
        e.problems = vec!["owner: bad".into()];
        let resp = e.into_response();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
