//! One run of one view: the sync contract of the README ("Guarantees"), in order.
//!
//! 1. take the view's lease (one writer per view), renewed while the run lasts
//!    (the renewer dies with the run, however the run ends);
//! 2. read the view as registered now, with its shape generation, revision,
//!    watermark `W` and last full read, in an order that catches any change made in
//!    between (the commit checks the revision): a scheduler's outdated
//!    copy of the view is never what runs;
//! 3. window: rows with `timestamp > min(W, now) - lookback` (all rows, or those
//!    from `backfill_since`, when there is no watermark or a full read is due;
//!    a scheduled full resync first starts a new shape generation of the same
//!    shape, so its read also removes entities no longer in the table);
//! 4. read pages (in whatever order the backend delivers them); per page keep
//!    the latest row per entity and write it newest-wins at the view's shape
//!    generation, so an entity's older row arriving in a later page is stale in
//!    Redis and changes nothing. Reading, decoding and writing overlap: the
//!    warehouse reads the next page while this run decodes one and Redis runs
//!    the one before, each hand-off holding at most one page, so memory stays
//!    flat however large the window;
//! 5. skip and count rows with a NULL entity or timestamp, and fields whose
//!    value does not fit the field's type, logging column, reason and a sample;
//!    a row whose soft-delete flag is true is written as a delete (newest-wins);
//! 6. only after every page is written (and, on the first full read of a new
//!    shape generation, after the older shapes' values are removed; on a Redis
//!    Cluster, after every primary's writes reached a replica), move the
//!    watermark to `max(W, greatest timestamp read that is not beyond the
//!    future skew)`, never past the warehouse's now, checking the lease and the
//!    view's revision in the same step: a run of a view that was reshaped,
//!    deleted or reset meanwhile commits nothing. A shutdown between pages ends
//!    the run without committing anything.
//!
//! Assumes an entity's timestamps only move forward, and that the store's
//! writes are idempotent (a failed run is simply run again).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::config::SyncConfig;
use crate::metrics::Metrics;
use crate::model::{FieldType, View, ViewId};
use crate::profiles::state::{Commit, RunState};
use crate::profiles::{
    PreparedWrite, ProfileStore, RunRecord, RunStatus, StoreError, Upsert, WriteSpec,
};
pub use crate::time::format_nanos;
use crate::time::Nanos;
use crate::warehouse::decode::{self, SkipReason};
use crate::warehouse::{
    resolve_column, Column, ColumnType, Page, TableRef, Warehouse, WarehouseError, WindowQuery,
};

/// Why a run did not complete. The scheduler retries both `Retryable` and
/// `Permanent` with backoff (a permanent problem is fixed by a person, without a
/// restart), simply tries `LeaseHeld` again at the next interval, and runs a
/// `Superseded` view again at once, in its registered shape.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Permanent(String),
    #[error("{0}")]
    Retryable(String),
    #[error("another replica holds the lease ({0})")]
    LeaseHeld(String),
    #[error("stopped by shutdown before the run finished; nothing committed")]
    Interrupted,
    /// The view was reshaped, deleted or reset while the run was on; nothing
    /// was committed.
    #[error("{0}")]
    Superseded(String),
}

impl From<WarehouseError> for RunError {
    fn from(e: WarehouseError) -> Self {
        match e {
            WarehouseError::Transient(m) => RunError::Retryable(format!("warehouse: {m}")),
            WarehouseError::Permanent(m) => RunError::Permanent(m),
        }
    }
}

impl From<StoreError> for RunError {
    fn from(e: StoreError) -> Self {
        if e.is_retryable() {
            RunError::Retryable(e.to_string())
        } else {
            RunError::Permanent(e.to_string())
        }
    }
}

impl RunError {
    /// How a run that ended with this error is recorded.
    pub fn status(&self) -> RunStatus {
        match self {
            RunError::Interrupted => RunStatus::Interrupted,
            RunError::Superseded(_) => RunStatus::Superseded,
            _ => RunStatus::Failed,
        }
    }

    /// The metric label and log field of this error.
    pub fn kind(&self) -> &'static str {
        match self {
            RunError::Permanent(_) => "permanent",
            RunError::Retryable(_) => "retryable",
            RunError::LeaseHeld(_) => "lease_held",
            RunError::Interrupted => "interrupted",
            RunError::Superseded(_) => "superseded",
        }
    }
}

/// The columns a view reads, resolved against the table.
#[derive(Debug, Clone)]
pub struct ColumnPlan {
    pub entity: String,
    pub timestamp: String,
    pub timestamp_type: ColumnType,
    pub fields: Vec<(String, FieldType)>,
    /// The boolean column whose true flag deletes the entity's values; read
    /// after the fields.
    pub soft_delete: Option<String>,
}

/// The table a view's batch source names.
pub fn table_of(view: &View) -> TableRef {
    TableRef {
        database: view.batch_source.database.clone(),
        schema: view.batch_source.schema.clone(),
        table: view.batch_source.table.clone(),
    }
}

/// Resolves every column of the view and checks its type; returns every
/// problem at once, each naming the column.
pub fn plan_columns(view: &View, columns: &[Column]) -> Result<ColumnPlan, Vec<String>> {
    let mut problems = Vec::new();
    let mut find = |role: &str, name: &str| -> Option<Column> {
        let c = resolve_column(columns, name).cloned();
        if c.is_none() {
            problems.push(format!("{role} column `{name}` not found"));
        }
        c
    };
    let entity = find("entity", view.entity.join_key());
    let ts = find("timestamp", &view.batch_source.timestamp_field);
    let fields: Vec<Option<Column>> = view.fields.iter().map(|f| find("field", &f.name)).collect();
    let soft_delete = view
        .batch_source
        .soft_delete_column
        .as_deref()
        .map(|name| find("soft-delete", name));
    if let Some(c) = &entity {
        if let Err(e) = decode::entity_compatible(&c.data_type) {
            problems.push(format!("entity column `{}`: {e}", c.name));
        }
    }
    if let Some(c) = &ts {
        if let Err(e) = decode::timestamp_compatible(&c.data_type) {
            problems.push(format!("timestamp column `{}`: {e}", c.name));
        }
    }
    for (f, c) in view.fields.iter().zip(&fields) {
        if let Some(c) = c {
            if let Err(e) = decode::compatible(&c.data_type, f.field_type()) {
                problems.push(format!("field column `{}`: {e}", c.name));
            }
        }
    }
    if let Some(Some(c)) = &soft_delete {
        if let Err(e) = decode::compatible(&c.data_type, FieldType::Bool) {
            problems.push(format!("soft-delete column `{}`: {e}", c.name));
        }
    }
    if problems.iter().any(|p| p.ends_with("not found")) {
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        problems.push(format!("the table has columns: {}", names.join(", ")));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let (entity, ts) = (entity.expect("checked"), ts.expect("checked"));
    Ok(ColumnPlan {
        entity: entity.name,
        timestamp: ts.name,
        timestamp_type: ts.data_type,
        fields: view
            .fields
            .iter()
            .zip(fields)
            .map(|(f, c)| (c.expect("checked").name, f.field_type()))
            .collect(),
        soft_delete: soft_delete.map(|c| c.expect("checked").name),
    })
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Exclusive lower bound of a run's window: `min(W, now) - lookback`, or the
/// first-run bound (`backfill_since`, inclusive, so one nanosecond earlier),
/// never below `backfill_since`. `None` reads everything. A watermark later
/// than the warehouse's `now` (left by an older version, or a clock that went
/// back) is read from `now`, so the lookback always covers real time.
pub fn window_since(
    watermark: Option<Nanos>,
    lookback: Duration,
    backfill_since: Option<Nanos>,
    now: Nanos,
) -> Option<Nanos> {
    let floor = backfill_since.map(|b| b.saturating_sub(1));
    let from = watermark.map(|w| w.min(now).saturating_sub(nanos(lookback)));
    match (from, floor) {
        (Some(w), Some(f)) => Some(w.max(f)),
        (w, f) => w.or(f),
    }
}

/// The watermark after a complete run: `max(W, greatest timestamp counted)`,
/// but never later than the warehouse's `now`, so a row stamped in the future
/// (even inside `max_future_skew`) can never hide an on-time row delivered
/// after it. It only moves back when it stood in the future.
pub fn next_watermark(
    current: Option<Nanos>,
    greatest: Option<Nanos>,
    now: Nanos,
) -> Option<Nanos> {
    let next = match (current, greatest) {
        (Some(c), Some(g)) => Some(c.max(g)),
        (c, g) => c.or(g),
    };
    next.map(|n| n.min(now))
}

/// The greatest timestamp a run counts towards its watermark, after reading a
/// row stamped `ts`: a row later than `future_limit` (the warehouse's now plus
/// `max_future_skew`) is written but never counts; the rest count, and
/// [`next_watermark`] caps the result at the warehouse's now.
pub fn watermark_candidate(
    greatest: Option<Nanos>,
    ts: Nanos,
    future_limit: Nanos,
) -> Option<Nanos> {
    if ts > future_limit {
        return greatest;
    }
    Some(greatest.map_or(ts, |g| g.max(ts)))
}

/// Keeps an entity's latest row of a page, `(ts, batch, row)`: a newer time
/// replaces the kept row whatever order rows arrive in; an equal time keeps the
/// row read later (identical duplicates make the choice moot; two different rows
/// at one time are ambiguous, and either may win).
pub fn keep_latest<'a>(
    latest: &mut HashMap<&'a str, (Nanos, usize, usize)>,
    entity: &'a str,
    row: (Nanos, usize, usize),
) {
    latest
        .entry(entity)
        .and_modify(|cur| {
            if row.0 >= cur.0 {
                *cur = row;
            }
        })
        .or_insert(row);
}

/// Whether this run re-reads the whole table: always when there is no
/// watermark, and every `every` (measured from the last completed full read)
/// when `sync.full_resync_every` is set.
pub fn full_read_due(
    watermark: Option<Nanos>,
    last_full_read: Option<Nanos>,
    every: Option<Duration>,
    now: Nanos,
) -> bool {
    match (watermark, every) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(_), Some(every)) => {
            last_full_read.is_none_or(|t| now.saturating_sub(t) >= nanos(every))
        }
    }
}

/// Everything a run needs besides the view.
#[derive(Clone)]
pub struct Runner {
    pub warehouse: Arc<dyn Warehouse>,
    pub store: ProfileStore,
    pub config: SyncConfig,
    /// Who this process is, in lease tokens and `status` (host/pid).
    pub replica: String,
    pub metrics: Arc<Metrics>,
}

/// A range backfill's window: rows stamped `from <= t < to`; without `to`,
/// every row from `from` on. Inclusive at the start like `backfill_since`,
/// exclusive at the end, so consecutive ranges tile without overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: Nanos,
    pub to: Option<Nanos>,
}

impl Range {
    pub fn contains(&self, ts: Nanos) -> bool {
        ts >= self.from && self.to.is_none_or(|to| ts < to)
    }
}

/// A run that takes part in no watermark ([`Runner::run_detached`]): a range
/// backfill, a dry run, or a dry run of a range.
#[derive(Debug, Default)]
pub struct Detached {
    /// Read this range instead of the window the next run would read.
    pub range: Option<Range>,
    /// Compare the rows with Redis instead of writing them.
    pub dry_run: bool,
    /// What the dry run found, once it completed.
    pub report: Option<crate::dry_run::DryRun>,
    /// Rows read but outside `range` (a window's edges are read wider than
    /// the range, for zones, and up to now when the warehouse cannot stop at `to`).
    pub outside_range: u64,
}

/// Tallies of one run.
#[derive(Debug, Default)]
struct Tally {
    /// A range backfill's range: rows outside it are counted in
    /// `outside_range` and neither written nor compared.
    range: Option<Range>,
    outside_range: u64,
    /// A dry run's verdicts; pages are compared with Redis instead of written.
    dry: Option<crate::dry_run::DryRun>,
    rows_read: u64,
    rows_written: u64,
    rows_stale: u64,
    skipped: BTreeMap<String, u64>,
    /// First sample per (column, reason), for the log line.
    samples: BTreeMap<(String, SkipReason), String>,
    greatest_not_future: Option<Nanos>,
    pages: u64,
}

impl Tally {
    /// Keeps the first sample of a (column, reason) for the end-of-run log line.
    fn sample(&mut self, column: &str, reason: SkipReason, sample: impl FnOnce() -> String) {
        // Called per bad row or cell: look up without allocating a key; the
        // map holds a handful of entries.
        if !self
            .samples
            .keys()
            .any(|(c, r)| c == column && *r == reason)
        {
            self.samples.insert((column.to_string(), reason), sample());
        }
    }

    fn skip(&mut self, reason: SkipReason, n: u64) {
        if n > 0 {
            *self.skipped.entry(reason.as_str().to_string()).or_default() += n;
        }
    }
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Runner {
    /// One run of `view`; always leaves a run record behind (except when the
    /// lease is held elsewhere, which is not this replica's run to record).
    pub async fn run(
        &self,
        view: &View,
        shutdown: &CancellationToken,
    ) -> (RunRecord, Result<(), RunError>) {
        let id = view.id();
        let started = Instant::now();
        let previous = self.store.last_run(&id).await.ok().flatten();
        let mut rec = RunRecord {
            view: id.name.clone(),
            version: id.version,
            status: RunStatus::Running,
            started_at: now_rfc3339(),
            last_error: previous.as_ref().and_then(|p| p.last_error.clone()),
            last_success_at: previous.as_ref().and_then(|p| p.last_success_at.clone()),
            ..RunRecord::default()
        };
        let token = format!("{}/{:016x}", self.replica, rand::random::<u64>());
        let outcome = match self
            .store
            .acquire_lease(&id, &token, self.config.lease_ttl)
            .await
        {
            Ok(true) => {
                tracing::debug!(view = %id, lease = %token, "lease taken; run started");
                // For `sync_started_at` in the sync status; a note that cannot be
                // written only leaves that field empty.
                if let Err(e) = self
                    .store
                    .note_run_started(&id, &token, &rec.started_at)
                    .await
                {
                    tracing::debug!(view = %id, error = %e, "could not note the run's start");
                }
                let lease_lost = CancellationToken::new();
                // Dropped on every way out of this block, a panic included, so
                // a failed run never keeps renewing a lease nobody uses.
                let _renewer = AbortOnDrop(self.spawn_lease_renewal(
                    id.clone(),
                    token.clone(),
                    lease_lost.clone(),
                ));
                let r = match self.store.run_state(&id).await {
                    Ok(Some(state)) => {
                        if !crate::registry::same_shape(&state.view, view) {
                            tracing::info!(view = %id, "the view was reshaped since it was scheduled; running the registered shape");
                        }
                        // Every statement the warehouse sends for this run counts here.
                        let statements = Arc::new(AtomicU64::new(0));
                        let r = crate::warehouse::counting_statements(
                            statements.clone(),
                            self.run_leased(&state, &token, shutdown, &lease_lost, &mut rec, None),
                        )
                        .await;
                        rec.statements = statements.load(Ordering::Relaxed);
                        r
                    }
                    Ok(None) => Err(RunError::Superseded(
                        "the view is no longer registered (deleted)".into(),
                    )),
                    Err(e) => Err(RunError::from(e)),
                };
                tracing::debug!(view = %id, lease = %token, "run ended; releasing lease");
                if let Err(e) = self.store.release_lease(&id, &token).await {
                    tracing::warn!(view = %id, error = %e, "could not release lease; it expires by itself");
                }
                r
            }
            Ok(false) => {
                let holder = self.store.lease_holder(&id).await.ok().flatten();
                return (
                    rec,
                    Err(RunError::LeaseHeld(
                        holder.unwrap_or_else(|| "unknown".into()),
                    )),
                );
            }
            Err(e) => Err(RunError::from(e)),
        };
        rec.duration_ms = started.elapsed().as_millis() as u64;
        rec.finished_at = Some(now_rfc3339());
        match &outcome {
            Ok(()) => {
                rec.status = RunStatus::Ok;
                rec.last_success_at = rec.finished_at.clone();
            }
            Err(e) => {
                rec.status = e.status();
                rec.error = Some(e.to_string());
                rec.last_error = Some(format!("{}: {e}", rec.finished_at.as_deref().unwrap_or("")));
            }
        }
        if let Err(e) = self
            .store
            .record_run(&id, &rec, self.config.run_history)
            .await
        {
            tracing::warn!(view = %id, error = %e, "could not save run record");
        }
        let label = match &outcome {
            Ok(()) => "ok",
            Err(e) => e.kind(),
        };
        let watermark = self.store.watermark(&id).await.ok().flatten();
        self.metrics.record_run(view, &rec, label, watermark);
        (rec, outcome)
    }

    /// Renews the lease every third of its lifetime; cancels `lost` if another
    /// holder took it or it could not be renewed before it ran out.
    fn spawn_lease_renewal(
        &self,
        id: ViewId,
        token: String,
        lost: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let ttl = self.config.lease_ttl;
        tokio::spawn(async move {
            let mut last_ok = Instant::now();
            loop {
                tokio::time::sleep(ttl / 3).await;
                crate::failpoints::hit("before_lease_renewal").await;
                match store.renew_lease(&id, &token, ttl).await {
                    Ok(true) => last_ok = Instant::now(),
                    Ok(false) => {
                        tracing::error!(view = %id, "lease lost to another holder; stopping this run");
                        lost.cancel();
                        return;
                    }
                    Err(e) if last_ok.elapsed() >= ttl => {
                        tracing::error!(view = %id, error = %e, "lease could not be renewed before it expired; stopping this run");
                        lost.cancel();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(view = %id, error = %e, "lease renewal failed; retrying")
                    }
                }
            }
        })
    }

    /// A run outside the watermark, safe beside the daemon: a range backfill
    /// writes the rows of `detached.range` newest-wins at the view's current
    /// shape generation, and a dry run compares the window (or the range)
    /// with Redis and writes nothing. Neither takes the lease (newest-wins
    /// makes concurrent writers safe, and the daemon's runs are not held up),
    /// commits a watermark, marks a full read, removes older shapes' values
    /// or saves a run record. A range backfill stops as `Superseded` before
    /// its next page once the view is reshaped, deleted or reset.
    pub async fn run_detached(
        &self,
        view: &View,
        detached: &mut Detached,
        shutdown: &CancellationToken,
    ) -> (RunRecord, Result<(), RunError>) {
        let id = view.id();
        let started = Instant::now();
        let mut rec = RunRecord {
            view: id.name.clone(),
            version: id.version,
            status: RunStatus::Running,
            started_at: now_rfc3339(),
            ..RunRecord::default()
        };
        // Nobody cancels it: without a lease there is none to lose.
        let no_lease = CancellationToken::new();
        let statements = Arc::new(AtomicU64::new(0));
        let outcome = match self.store.run_state(&id).await {
            Ok(Some(state)) => {
                crate::warehouse::counting_statements(
                    statements.clone(),
                    self.run_leased(&state, "", shutdown, &no_lease, &mut rec, Some(detached)),
                )
                .await
            }
            Ok(None) => Err(RunError::Superseded(
                "the view is no longer registered (deleted)".into(),
            )),
            Err(e) => Err(RunError::from(e)),
        };
        rec.statements = statements.load(Ordering::Relaxed);
        rec.duration_ms = started.elapsed().as_millis() as u64;
        rec.finished_at = Some(now_rfc3339());
        rec.status = match &outcome {
            Ok(()) => RunStatus::Ok,
            Err(e) => e.status(),
        };
        rec.error = outcome.as_ref().err().map(ToString::to_string);
        (rec, outcome)
    }

    /// One run of the registered `state`; `detached` makes it a range
    /// backfill or a dry run (see [`Runner::run_detached`]), which stops
    /// before anything of the watermark's.
    async fn run_leased(
        &self,
        state: &RunState,
        token: &str,
        shutdown: &CancellationToken,
        lease_lost: &CancellationToken,
        rec: &mut RunRecord,
        mut detached: Option<&mut Detached>,
    ) -> Result<(), RunError> {
        let view = &state.view;
        let id = view.id();
        let table = table_of(view);
        let columns = self.warehouse.describe(&table).await?;
        let plan = plan_columns(view, &columns).map_err(|p| {
            RunError::Permanent(format!("view {id}, table {table}: {}", p.join("; ")))
        })?;
        let watermark = state.watermark;
        let backfill = self
            .config
            .backfill_since_nanos()
            .map_err(|e| RunError::Permanent(e.to_string()))?;
        let run_started = crate::time::now();
        // A scheduled full resync starts a new generation of the same shape,
        // so that its read, like a reshape's, removes the values of entities
        // no longer in the table (rows deleted without a soft-delete flag).
        let mut state = std::borrow::Cow::Borrowed(state);
        let resync = detached.is_none()
            && watermark.is_some()
            && self.config.full_resync_every.is_some()
            && full_read_due(
                watermark,
                state.last_full_read,
                self.config.full_resync_every,
                run_started,
            );
        if resync {
            match self
                .store
                .begin_full_pass(&id, token, state.revision)
                .await?
            {
                Some((generation, revision)) => {
                    let s = state.to_mut();
                    s.generation = generation;
                    s.revision = revision;
                    s.last_full_read = None;
                }
                None => {
                    return Err(RunError::Superseded(
                        "the view changed or its lease was lost before the full resync began"
                            .into(),
                    ))
                }
            }
        }
        let state = state.as_ref();
        // A new shape generation is read whole once (even after a `reset --to`),
        // since that read is what removes the older shapes' values.
        let full_read = full_read_due(
            watermark,
            state.last_full_read,
            self.config.full_resync_every,
            run_started,
        ) || (state.generation > 0 && state.last_full_read.is_none());
        rec.full_read = full_read;
        let warehouse_now = self.warehouse.now().await?;
        let future_limit = warehouse_now.saturating_add(nanos(self.config.max_future_skew));
        let range = detached.as_ref().and_then(|d| d.range);
        if range.is_some() {
            rec.full_read = false;
        }
        let since = if let Some(r) = range {
            Some(r.from.saturating_sub(1))
        } else if full_read {
            window_since(None, self.config.lookback, backfill, warehouse_now)
        } else {
            window_since(watermark, self.config.lookback, backfill, warehouse_now)
        };
        rec.watermark_before = watermark.map(format_nanos);

        // TIMESTAMP_NTZ wall times are read in the view's (or the warehouse's) zone.
        let ntz = crate::warehouse::zone::NtzZone::for_column(
            &plan.timestamp_type,
            view.batch_source.ntz_time_zone.as_deref(),
            self.warehouse.ntz_time_zone(),
        )
        .map_err(RunError::Permanent)?;
        let query = WindowQuery {
            table,
            entity_column: plan.entity.clone(),
            timestamp_column: plan.timestamp.clone(),
            timestamp_type: plan.timestamp_type.clone(),
            field_columns: plan
                .fields
                .iter()
                .map(|(c, _)| c.clone())
                .chain(plan.soft_delete.clone())
                .collect(),
            since: ntz.since(since),
            page_rows: self.config.page_rows,
        };
        let mut tally = Tally {
            range,
            dry: detached
                .as_ref()
                .is_some_and(|d| d.dry_run)
                .then(crate::dry_run::DryRun::default),
            ..Tally::default()
        };
        let nulls = self.warehouse.null_key_rows(&query).await?;
        tally.skip(SkipReason::NullEntity, nulls.null_entity);
        tally.skip(SkipReason::NullTimestamp, nulls.null_timestamp);
        tally.skip(SkipReason::TimestampOutOfRange, nulls.out_of_range);
        // Counted by the warehouse, so there is no row to show: the count is the sample.
        for (column, reason, n, what) in [
            (
                &plan.entity,
                SkipReason::NullEntity,
                nulls.null_entity,
                "NULL",
            ),
            (
                &plan.timestamp,
                SkipReason::NullTimestamp,
                nulls.null_timestamp,
                "NULL",
            ),
            (
                &plan.timestamp,
                SkipReason::TimestampOutOfRange,
                nulls.out_of_range,
                "before 1677 or after 2262 in",
            ),
        ] {
            if n > 0 {
                tally.sample(column, reason, || format!("{n} rows with {what} {column}"));
            }
        }

        let mut spec = WriteSpec::for_view(view);
        spec.generation = state.generation;
        if tally.dry.is_none() {
            self.store.load_scripts().await?;
        }

        // Reading the next page overlaps with decoding and writing this one.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Page, WarehouseError>>(1);
        let produce = async {
            let mut pages = self.warehouse.pages(&query);
            loop {
                // A shutdown or a lost lease stops the read at once, even in
                // the middle of a long statement (dropping it cancels it); the
                // checks before the commit below then end the run uncommitted.
                let p = tokio::select! {
                    p = pages.next() => p,
                    _ = shutdown.cancelled() => None,
                    _ = lease_lost.cancelled() => None,
                };
                let Some(p) = p else { break };
                let failed = p.is_err();
                if tx.send(p).await.is_err() || failed {
                    break;
                }
            }
            drop(tx);
        };
        // Redis runs one part of a page while this task encodes the next: the
        // writer is its own task, so its replies are taken while decoding runs.
        let (wtx, wrx) = tokio::sync::mpsc::channel::<PagePart>(1);
        let writer = tokio::spawn(write_pages(self.store.clone(), id.to_string(), wrx));
        let consume = async {
            // Owning the receiver means an early return drops it, which ends
            // the producer's pending send instead of leaving it blocked; owning
            // the sender lets the writer finish once the last page is handed over.
            let mut rx = rx;
            let to_writer = wtx;
            while let Some(page) = rx.recv().await {
                let page = page?;
                let handed = self
                    .write_page(
                        &plan,
                        &spec,
                        &page,
                        future_limit,
                        &mut tally,
                        &to_writer,
                        ntz,
                    )
                    .await?;
                if !handed {
                    // The writer failed; its error is reported below.
                    break;
                }
                if lease_lost.is_cancelled() {
                    return Err(RunError::Retryable("lease lost during the run".into()));
                }
                if shutdown.is_cancelled() {
                    return Err(RunError::Interrupted);
                }
                if range.is_some() && tally.dry.is_none() {
                    self.still_registered_as(&id, state.revision).await?;
                }
            }
            Ok(())
        };
        let ((), consumed) = tokio::join!(produce, consume);
        // Pages already handed over finish even when the run stops early, so a
        // shutdown lets running pages complete; nothing is committed either way.
        let written = writer
            .await
            .map_err(|e| RunError::Retryable(format!("page writer stopped: {e}")));
        if let Ok(Ok(w)) = &written {
            tally.rows_written += w.written;
            tally.rows_stale += w.stale;
            tally.pages += w.pages;
        }
        rec.rows_read = tally.rows_read;
        rec.rows_written = tally.rows_written;
        rec.rows_stale = tally.rows_stale;
        rec.skipped = tally.skipped.clone();
        for ((column, reason), sample) in &tally.samples {
            let count = tally.skipped.get(reason.as_str()).copied().unwrap_or(0);
            let reason = reason.as_str();
            tracing::warn!(view = %id, column, reason, count, sample, "rows or values skipped");
        }
        consumed?;
        written??;
        if lease_lost.is_cancelled() {
            return Err(RunError::Retryable("lease lost during the run".into()));
        }
        if shutdown.is_cancelled() {
            return Err(RunError::Interrupted);
        }
        if let Some(d) = detached.take() {
            d.outside_range = tally.outside_range;
            d.report = tally.dry.take();
            if range.is_some() && d.report.is_none() {
                self.still_registered_as(&id, state.revision).await?;
            }
            tracing::info!(
                view = %id,
                dry_run = d.dry_run,
                range = ?range,
                rows_read = tally.rows_read,
                rows_written = tally.rows_written,
                rows_stale = tally.rows_stale,
                outside_range = tally.outside_range,
                "run outside the watermark complete; nothing committed"
            );
            return Ok(());
        }

        // The first completed whole-table read of a new shape generation also
        // removes what older shapes left (entities no longer in the table,
        // fields the view no longer has), before anything is committed: a
        // crash in between repeats the read and the removal.
        let replaces_older_shapes =
            full_read && state.generation > 0 && state.last_full_read.is_none();
        if replaces_older_shapes {
            let retired = self.store.retired_shapes(&id).await?;
            let removed = self
                .store
                .remove_older_generations(view, state.generation, &retired)
                .await?;
            tracing::info!(view = %id, generation = state.generation, removed, "values of older shapes removed");
        }

        let next = next_watermark(watermark, tally.greatest_not_future, warehouse_now);
        self.store.confirm_writes_replicated().await?;
        crate::failpoints::hit("before_watermark_commit").await;
        let commit = self
            .store
            .commit_run(
                &id,
                token,
                state.revision,
                next.filter(|n| Some(*n) != watermark),
                full_read.then_some(run_started),
                replaces_older_shapes,
            )
            .await?;
        match commit {
            Commit::Done => {}
            Commit::LeaseLost => {
                return Err(RunError::Retryable(
                    "lease lost before the watermark commit; rows were written, the watermark stays".into(),
                ))
            }
            Commit::Superseded => {
                return Err(RunError::Superseded(
                    "the view was reshaped, deleted or reset during the run; rows were written, nothing committed".into(),
                ))
            }
        }
        rec.watermark_after = next.map(format_nanos);
        tracing::info!(
            full_read,
            view = %id,
            pages = tally.pages,
            rows_read = tally.rows_read,
            rows_written = tally.rows_written,
            rows_stale = tally.rows_stale,
            skipped = ?tally.skipped,
            watermark = rec.watermark_after.as_deref().unwrap_or("none"),
            "run complete"
        );
        Ok(())
    }

    /// Decodes one page, keeps the latest row per entity, and hands its
    /// newest-wins writes to [`write_pages`] in parts of [`WRITE_PART_ROWS`]
    /// entities, encoding each part only when the writer can take it (so at
    /// most three parts' bytes exist at once: sent, queued, being encoded). False when the writer is gone.
    #[allow(clippy::too_many_arguments)]
    async fn write_page(
        &self,
        plan: &ColumnPlan,
        spec: &WriteSpec,
        page: &Page,
        future_limit: Nanos,
        tally: &mut Tally,
        to_writer: &tokio::sync::mpsc::Sender<PagePart>,
        ntz: crate::warehouse::zone::NtzZone,
    ) -> Result<bool, RunError> {
        let permanent = |e: decode::ColumnError| RunError::Permanent(e.to_string());
        struct Decoded<'a> {
            entities: decode::EntityColumn<'a>,
            ts: Vec<decode::TimestampCell>,
            fields: Vec<decode::EncodedColumn>,
            /// The soft-delete flags, as Feast bools (true deletes).
            deletes: Option<decode::EncodedColumn>,
        }
        let mut true_flag = Vec::new();
        crate::profiles::feast::push_bool(&mut true_flag, true);
        let mut decoded = Vec::with_capacity(page.batches.len());
        for b in &page.batches {
            let schema = b.schema();
            let entities =
                decode::entities(&plan.entity, b.column(0), schema.field(0)).map_err(permanent)?;
            let ts = ntz.to_utc(
                decode::timestamps(&plan.timestamp, b.column(1), schema.field(1))
                    .map_err(permanent)?,
            );
            let fields = plan
                .fields
                .iter()
                .enumerate()
                .map(|(i, (name, ty))| {
                    decode::encode_column(name, b.column(2 + i), schema.field(2 + i), *ty)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(permanent)?;
            let flag = 2 + plan.fields.len();
            let deletes = plan
                .soft_delete
                .as_ref()
                .map(|name| {
                    decode::encode_column(name, b.column(flag), schema.field(flag), FieldType::Bool)
                })
                .transpose()
                .map_err(permanent)?;
            decoded.push(Decoded {
                entities,
                ts,
                fields,
                deletes,
            });
        }

        // Latest row per entity in this page: (ts, batch, row). Equal times keep the later row.
        let mut latest: HashMap<&str, (Nanos, usize, usize)> =
            HashMap::with_capacity(page.num_rows());
        let (mut null_entity, mut null_ts, mut bad_ts) = (0u64, 0u64, 0u64);
        for (bi, d) in decoded.iter().enumerate() {
            tally.rows_read += d.ts.len() as u64;
            for (ri, ts) in d.ts.iter().enumerate() {
                let ts = match *ts {
                    Ok(Some(ts)) if tally.range.is_some_and(|r| !r.contains(ts)) => {
                        tally.outside_range += 1;
                        continue;
                    }
                    Ok(Some(ts)) => ts,
                    Ok(None) => {
                        null_ts += 1;
                        let sample = || d.entities.get(ri).unwrap_or("NULL").to_string();
                        tally.sample(&plan.timestamp, SkipReason::NullTimestamp, sample);
                        continue;
                    }
                    Err(_) => {
                        bad_ts += 1;
                        let b = &page.batches[bi];
                        let sample =
                            || decode::field_cell_text(b.column(1), b.schema().field(1), ri);
                        tally.sample(&plan.timestamp, SkipReason::TimestampOutOfRange, sample);
                        continue;
                    }
                };
                let Some(entity) = d.entities.get(ri) else {
                    null_entity += 1;
                    tally.sample(&plan.entity, SkipReason::NullEntity, || {
                        format!("row stamped {}", format_nanos(ts))
                    });
                    continue;
                };
                tally.greatest_not_future =
                    watermark_candidate(tally.greatest_not_future, ts, future_limit);
                keep_latest(&mut latest, entity, (ts, bi, ri));
            }
        }
        tally.skip(SkipReason::NullEntity, null_entity);
        tally.skip(SkipReason::NullTimestamp, null_ts);
        tally.skip(SkipReason::TimestampOutOfRange, bad_ts);

        let mut values: Vec<(u32, &[u8])> = Vec::with_capacity(latest.len() * plan.fields.len());
        let mut rows: Vec<(&str, Nanos, usize, usize, bool)> = Vec::with_capacity(latest.len());
        for (entity, (ts, bi, ri)) in latest {
            // A NULL flag keeps the row: only a true flag deletes.
            let delete = decoded[bi]
                .deletes
                .as_ref()
                .is_some_and(|d| d.get(ri).is_ok_and(|v| v == &true_flag[..]));
            if delete {
                rows.push((entity, ts, 0, 0, true));
                continue;
            }
            let start = values.len();
            for (fi, col) in decoded[bi].fields.iter().enumerate() {
                match col.get(ri) {
                    Ok(v) => values.push((fi as u32, v)),
                    Err(reason) => {
                        // Written as Feast's null: keeping the stored value would
                        // show an older row's value under this row's time.
                        values.push((fi as u32, &[]));
                        tally.skip(reason, 1);
                        let b = &page.batches[bi];
                        tally.sample(&plan.fields[fi].0, reason, || {
                            decode::field_cell_text(b.column(2 + fi), b.schema().field(2 + fi), ri)
                        });
                    }
                }
            }
            rows.push((entity, ts, start, values.len(), false));
        }
        let upserts: Vec<Upsert<'_>> = rows
            .iter()
            .map(|&(entity, ts, a, b, delete)| Upsert {
                entity,
                ts,
                values: &values[a..b],
                delete,
            })
            .collect();
        if let Some(dry) = tally.dry.as_mut() {
            dry.compare(&self.store, spec, &upserts).await?;
            return Ok(true);
        }
        let mut parts: Vec<&[Upsert<'_>]> = upserts.chunks(WRITE_PART_ROWS).collect();
        if parts.is_empty() {
            // Nothing to write still completes a page, for the writer's count.
            parts.push(&[]);
        }
        let count = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            let write = self.store.prepare(spec, part, self.config.write_batch);
            let last_of_page = i + 1 == count;
            let part = PagePart {
                write,
                last_of_page,
            };
            if to_writer.send(part).await.is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl Runner {
    /// Fails as `Superseded` once the view was reshaped, deleted or reset
    /// since revision `revision` (what a commit checks; a range backfill,
    /// which commits nothing, checks it between pages).
    async fn still_registered_as(&self, id: &ViewId, revision: u64) -> Result<(), RunError> {
        match self.store.run_state(id).await? {
            Some(now) if now.revision == revision => Ok(()),
            _ => Err(RunError::Superseded(
                "the view was reshaped, deleted or reset during the backfill; rows written so far stay, newest-wins"
                    .into(),
            )),
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Entities per part of a page handed to the writer: large enough that the
/// round trip between parts is a small fraction of Redis's work on one, small
/// enough that the encoded parts in flight stay a few megabytes.
const WRITE_PART_ROWS: usize = 8192;

/// Encoded writes of (part of) a page; the page is complete in Redis once its
/// last part is written.
struct PagePart {
    write: PreparedWrite,
    last_of_page: bool,
}

/// What the page writer did.
#[derive(Debug, Default)]
struct Written {
    written: u64,
    stale: u64,
    pages: u64,
}

/// Sends page parts to Redis in order, one at a time, until the channel
/// closes; stops at the first failed part (its rows count as unwritten).
async fn write_pages(
    store: ProfileStore,
    view: String,
    mut parts: tokio::sync::mpsc::Receiver<PagePart>,
) -> Result<Written, RunError> {
    let mut done = Written::default();
    while let Some(part) = parts.recv().await {
        let started = std::time::Instant::now();
        let out = store.send(part.write).await;
        crate::metrics::observe_store_write(&view, started.elapsed().as_secs_f64());
        let out = out?;
        done.written += out.written;
        done.stale += out.stale;
        if part.last_of_page {
            done.pages += 1;
            crate::failpoints::hit("after_page_write").await;
        }
    }
    Ok(done)
}

/// Counts by reason for display: `null_entity=2 overflow=1`.
pub fn format_skipped(skipped: &BTreeMap<String, u64>) -> String {
    if skipped.is_empty() {
        return "0".into();
    }
    skipped
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
