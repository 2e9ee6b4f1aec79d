//! The warehouse seam: describe a table, and stream the rows of a window in pages.
//!
//! Contract every backend keeps:
//! - reads are repeatable: the same window read twice yields the same rows
//!   (modulo rows written to the table in between);
//! - [`Warehouse::pages`] yields every row of the window at least once (never skipped), in pages.
//!   The order of rows, inside a page and across pages, is the backend's choice:
//!   Snowflake delivers its one statement's result (the inline part, then the
//!   chunks as listed), Parquet delivers file order. Callers rely on
//!   no order: sync keeps the latest row per entity within a page and writes
//!   newest-wins, so an entity's older row arriving in a later page is stale in
//!   Redis and skipped, and the watermark is the greatest timestamp of all rows;
//! - each page holds at most `page_rows` rows, and the stream is read as it is
//!   consumed (a bounded amount read ahead), so memory is bounded by the page
//!   size and the read-ahead however large the window;
//! - every statement a backend sends to the warehouse is counted with
//!   [`count_statement`], so a run can report how many it cost (sync scopes a
//!   counter around each run with [`counting_statements`]);
//! - page columns are, in order: entity, timestamp, then the requested field
//!   columns; their Arrow shapes are decoded by [`decode`];
//! - [`Warehouse::describe`] maps each column's type, once, to a [`ColumnType`]
//!   whose [`TypeKind`] says which Arrow shape its values arrive in (so
//!   [`decode::compatible`] can judge it before any row is read) and whose
//!   name is the warehouse's own, for messages;
//! - rows whose entity or timestamp is NULL are either left out of the pages and
//!   counted by [`Warehouse::null_key_rows`], or delivered in pages (and then not
//!   counted there), never both.
//!
//! Errors say whether retrying can help ([`WarehouseError::is_retryable`]).

pub mod bigquery;
pub mod databricks;
pub mod decode;
pub mod parquet;
pub mod postgres;
pub mod snowflake;
pub mod sql;
pub mod zone;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use futures::stream::BoxStream;

tokio::task_local! {
    /// Statements issued for the run being executed on this task (see [`counting_statements`]).
    static RUN_STATEMENTS: Arc<AtomicU64>;
}

/// Runs `f` with `counter` counting every statement a backend issues on this
/// task meanwhile ([`count_statement`]): one run's statements, even when
/// several runs share one warehouse concurrently.
pub async fn counting_statements<F: std::future::Future>(
    counter: Arc<AtomicU64>,
    f: F,
) -> F::Output {
    RUN_STATEMENTS.scope(counter, f).await
}

/// Counts one statement sent to the warehouse against the run of this task,
/// if any (`check` and `/readyz` count nowhere).
pub fn count_statement() {
    let _ = RUN_STATEMENTS.try_with(|c| c.fetch_add(1, Ordering::Relaxed));
}

/// Nanoseconds since the Unix epoch, UTC (defined in [`crate::time`]). Timestamps
/// without a zone (TIMESTAMP_NTZ) are wall times: backends deliver them counted as if
/// they were UTC, and sync reads them in the zone in effect for the view
/// ([`zone::NtzZone`]; UTC by default).
pub use crate::time::Nanos;

/// A table as a view's batch source names it; parts are resolved like
/// Snowflake's unquoted identifiers (case-insensitively) by the backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    pub database: Option<String>,
    pub schema: Option<String>,
    pub table: String,
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for part in [&self.database, &self.schema].into_iter().flatten() {
            write!(f, "{part}.")?;
        }
        f.write_str(&self.table)
    }
}

/// One column as the warehouse reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The name exactly as stored (e.g. `DOMAIN_USERID`).
    pub name: String,
    /// Its type, mapped by the backend's `describe` from the warehouse's own.
    pub data_type: ColumnType,
}

/// A column's type as a backend's [`Warehouse::describe`] reports it: what decoding
/// needs to know ([`TypeKind`]) and the warehouse's own name for it, for messages.
///
/// Display is that name, exactly as the warehouse gave it: Snowflake's
/// `NUMBER(38,0)`, `VARCHAR(16777216)`, `TIMESTAMP_NTZ(9)` (or the DuckDB names
/// fakesnow prints, such as `BIGINT`); Arrow's `Int64`, `Utf8`,
/// `Timestamp(ms, "UTC")` for Parquet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    pub kind: TypeKind,
    /// The warehouse's own name for the type.
    pub name: String,
}

/// What a column holds, as far as decoding is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeKind {
    /// VARCHAR and its aliases; Arrow Utf8.
    Text,
    /// NUMBER(p, s) and the integer types; `scale` digits after the point (0 when
    /// the name prints none).
    Number {
        scale: i64,
    },
    /// FLOAT, DOUBLE, REAL; Arrow floats.
    Float,
    Boolean,
    Binary,
    /// TIMESTAMP_NTZ / LTZ / TZ (and their aliases); Arrow timestamps (NTZ without
    /// a zone, TZ with one).
    Timestamp(TimestampKind),
    Date,
    Time,
    /// `ARRAY`, or a structured `ARRAY(T)` (an Arrow list) with its element type.
    Array(Option<Box<ColumnType>>),
    /// VARIANT (and DuckDB's JSON).
    Variant,
    /// OBJECT, MAP.
    Object,
    /// Anything else (GEOGRAPHY, VECTOR, an Arrow struct, ...): its name says what.
    Other,
}

/// Which of Snowflake's timestamp types a column is, and so which type the
/// literals compared with it are built as ([`sql::timestamp_literal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampKind {
    /// TIMESTAMP_NTZ (and DATE, which compares with it): a wall time.
    Ntz,
    /// TIMESTAMP_LTZ: an instant.
    Ltz,
    /// TIMESTAMP_TZ: an instant with an offset; compared as the instant.
    Tz,
}

impl ColumnType {
    pub fn new(kind: TypeKind, name: impl Into<String>) -> Self {
        ColumnType {
            kind,
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ColumnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl TimestampKind {
    /// The kind of a timestamp column's type; anything that is not a zoned
    /// timestamp (NTZ, DATE, other types) is [`Self::Ntz`].
    pub fn of(column_type: &ColumnType) -> Self {
        match column_type.kind {
            TypeKind::Timestamp(kind) => kind,
            _ => TimestampKind::Ntz,
        }
    }
}

/// What one run reads: rows with `timestamp > since` (all rows when `since` is None).
#[derive(Debug, Clone)]
pub struct WindowQuery {
    pub table: TableRef,
    /// Resolved (stored) column names.
    pub entity_column: String,
    pub timestamp_column: String,
    /// The timestamp column's type as [`Warehouse::describe`] reported it.
    pub timestamp_type: ColumnType,
    pub field_columns: Vec<String>,
    /// Exclusive lower bound of the window, in the column's own terms: an
    /// instant for zoned columns, a wall time counted as UTC for TIMESTAMP_NTZ
    /// (see [`zone::NtzZone::since`]).
    pub since: Option<Nanos>,
    pub page_rows: usize,
}

/// Rows of the window that cannot be keyed and so are never written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NullKeyRows {
    pub null_entity: u64,
    pub null_timestamp: u64,
    /// Rows with an entity whose timestamp [`Nanos`] cannot hold (before
    /// 1677-09-21 or after 2262-04-11 UTC), left out of the pages.
    pub out_of_range: u64,
}

/// A page of rows; see the module contract for column order.
#[derive(Debug, Clone)]
pub struct Page {
    pub batches: Vec<RecordBatch>,
}

impl Page {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// Network trouble, timeouts, expired sessions, server restarts.
    #[error("{0}")]
    Transient(String),
    /// A problem only a person can fix: missing table or column, bad credentials,
    /// a column whose type cannot hold the field.
    #[error("{0}")]
    Permanent(String),
}

impl WarehouseError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, WarehouseError::Transient(_))
    }
}

pub type Result<T, E = WarehouseError> = std::result::Result<T, E>;

#[async_trait]
pub trait Warehouse: Send + Sync {
    /// Columns of a table, or `Permanent` if it does not exist.
    async fn describe(&self, table: &TableRef) -> Result<Vec<Column>>;

    /// The warehouse's current time, used to recognise rows stamped in the future.
    async fn now(&self) -> Result<Nanos>;

    /// Rows of the window whose entity or timestamp is NULL (see the module contract).
    async fn null_key_rows(&self, query: &WindowQuery) -> Result<NullKeyRows>;

    /// The window's rows in pages (in an order of the backend's choosing; see the module contract).
    fn pages<'a>(&'a self, query: &'a WindowQuery) -> BoxStream<'a, Result<Page>>;

    /// Cheap round trip proving the warehouse answers (used by `check` and `/readyz`).
    async fn ping(&self) -> Result<()>;

    /// Before the process exits: lets cleanup that runs in the background
    /// (cancelling abandoned statements, so they stop billing) finish, within
    /// a couple of seconds.
    async fn finish(&self) {}

    /// The zone TIMESTAMP_NTZ wall times are in unless a view's batch source
    /// says otherwise (`warehouse.ntz_time_zone`).
    fn ntz_time_zone(&self) -> zone::Tz {
        zone::Tz::UTC
    }
}

/// Builds the configured backend.
pub fn build(
    cfg: &crate::config::WarehouseConfig,
) -> anyhow::Result<std::sync::Arc<dyn Warehouse>> {
    use crate::config::WarehouseConfig;
    Ok(match cfg {
        WarehouseConfig::Parquet(c) => {
            std::sync::Arc::new(parquet::ParquetWarehouse::from_config(c)?)
        }
        WarehouseConfig::Snowflake(c) => {
            std::sync::Arc::new(snowflake::SnowflakeWarehouse::new(c)?)
        }
        WarehouseConfig::Postgres(c) => std::sync::Arc::new(postgres::PostgresWarehouse::new(c)?),
        WarehouseConfig::Databricks(c) => {
            std::sync::Arc::new(databricks::DatabricksWarehouse::new(c)?)
        }
        WarehouseConfig::Bigquery(c) => std::sync::Arc::new(bigquery::BigqueryWarehouse::new(c)?),
    })
}

/// Finds a column the way Snowflake resolves an unquoted identifier: an exact
/// `batches` in pages of at most `page_rows` rows (slices share the buffers).
pub(crate) fn split_pages(batches: Vec<RecordBatch>, page_rows: usize) -> Vec<Page> {
    let page_rows = page_rows.max(1);
    let mut pages = Vec::new();
    let mut current = Vec::new();
    let mut rows = 0;
    for b in batches {
        let mut offset = 0;
        while offset < b.num_rows() {
            let take = (page_rows - rows).min(b.num_rows() - offset);
            current.push(b.slice(offset, take));
            rows += take;
            offset += take;
            if rows == page_rows {
                pages.push(Page {
                    batches: std::mem::take(&mut current),
                });
                rows = 0;
            }
        }
    }
    if rows > 0 {
        pages.push(Page { batches: current });
    }
    pages
}

/// `s` cut to at most `n` bytes (at a character boundary), marked with `…`
/// when cut: for server answers quoted in errors.
pub(crate) fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// An OAuth token endpoint's error answer (`error`, `error_description`) as
/// one line; the body itself, cut, when it is not one.
pub(crate) fn oauth_error(body: &str) -> String {
    #[derive(serde::Deserialize, Default)]
    struct E {
        error: Option<String>,
        error_description: Option<String>,
    }
    let e: E = serde_json::from_str(body).unwrap_or_default();
    match (e.error, e.error_description) {
        (Some(a), Some(b)) => format!("{a}: {b}"),
        (Some(a), None) => a,
        _ => truncate(body, 200),
    }
}

impl NullKeyRows {
    /// The counts from the first row of a NULL-key count statement answered
    /// as text (entity, timestamp, out of range); a missing cell counts 0.
    pub(crate) fn from_text(row: Option<&[Option<String>]>) -> NullKeyRows {
        let num = |i: usize| -> u64 {
            row.and_then(|r| r.get(i).cloned().flatten())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        NullKeyRows {
            null_entity: num(0),
            null_timestamp: num(1),
            out_of_range: num(2),
        }
    }
}

/// Reads an OAuth token endpoint's successful answer (`access_token`,
/// `expires_in`) into a sensitive `Authorization` value and the instant to
/// stop using it: a minute before it expires, or half the life of a
/// short-lived token.
pub(crate) async fn bearer_from_token_reply(
    reply: reqwest::Response,
) -> Result<(http::HeaderValue, std::time::Instant)> {
    #[derive(serde::Deserialize)]
    struct Token {
        access_token: String,
        expires_in: Option<u64>,
    }
    let token: Token = reply.json().await.map_err(|e| {
        WarehouseError::Transient(format!(
            "unreadable OAuth token answer: {}",
            e.without_url()
        ))
    })?;
    let mut v = http::HeaderValue::from_str(&format!("Bearer {}", token.access_token))
        .map_err(|_| WarehouseError::Transient("OAuth token is not a valid header value".into()))?;
    v.set_sensitive(true);
    let life = std::time::Duration::from_secs(token.expires_in.unwrap_or(3600));
    let margin = std::time::Duration::from_secs(60).min(life / 2);
    Ok((v, std::time::Instant::now() + life - margin))
}

/// match first, then a case-insensitive one (`domain_userid` finds `DOMAIN_USERID`).
pub fn resolve_column<'a>(columns: &'a [Column], name: &str) -> Option<&'a Column> {
    columns
        .iter()
        .find(|c| c.name == name)
        .or_else(|| columns.iter().find(|c| c.name.eq_ignore_ascii_case(name)))
}
