//! Databricks backend: a SQL warehouse through the SQL Statement Execution API 2.0 (`api`).
//!
//! Promises the [`Warehouse`] contract: a window is read with one statement
//! (`SELECT entity, ts, fields FROM t WHERE <keyed, representable, in the
//! window>`, no `ORDER BY`, no `LIMIT`), whose result chunks are fetched from
//! their external links as they are consumed, at most
//! [`api::CHUNKS_IN_FLIGHT`] at once, each decoded and cut into pages of at
//! most `page_rows` rows. A run costs a constant number of statements
//! (`DESCRIBE TABLE`, `SELECT current_timestamp()`, the NULL-key count, the
//! window), every one counted ([`super::count_statement`]) and bounded by
//! `warehouse.query_timeout`; one abandoned before its end is cancelled.
//! Rows with a NULL entity or timestamp, or a timestamp [`Nanos`] cannot hold,
//! are left out of pages and counted by `null_key_rows`.
//!
//! A batch source's `database` is the catalog and `schema` the schema;
//! identifiers are quoted with backticks (`` ` `` doubled), so a name is only
//! ever a name. Databricks resolves names case-insensitively itself.
//! Timestamps are microseconds there: literals are typed literals of the
//! column's own type (`TIMESTAMP_NTZ '…'` for a wall time, `TIMESTAMP
//! '…+00:00'` for an instant), rounded so the comparison means exactly what
//! the nanosecond bound means ([`timestamp_literal`]), and independent of the
//! session time zone.

mod api;

pub use api::settle_cancels;

use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use super::{
    decode, Column, ColumnType, Nanos, NullKeyRows, Page, Result, TableRef, TimestampKind,
    TypeKind, Warehouse, WarehouseError,
};
use crate::config::{DatabricksAuth, DatabricksConfig};

pub struct DatabricksWarehouse {
    client: api::Client,
    host: String,
    catalog: Option<String>,
    schema: Option<String>,
    timeout: Duration,
    ntz_time_zone: super::zone::Tz,
}

impl std::fmt::Debug for DatabricksWarehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabricksWarehouse")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// A chunk being fetched by a task of its own (so it downloads while the
/// caller works on the one before); the task is aborted when this is dropped.
struct Fetch(tokio::task::JoinHandle<Result<Vec<RecordBatch>>>);

impl std::future::Future for Fetch {
    type Output = Result<Vec<RecordBatch>>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|e| {
                Err(WarehouseError::Transient(format!(
                    "result chunk download stopped: {e}"
                )))
            })
        })
    }
}

impl Drop for Fetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl DatabricksWarehouse {
    /// A client for `cfg` (reads the credential now; asks for an OAuth token on first use).
    pub fn new(cfg: &DatabricksConfig) -> anyhow::Result<Self> {
        let host = url::Url::parse(cfg.host.trim())
            .map_err(|e| anyhow::anyhow!("warehouse.host: not a URL: {e}"))?;
        let auth = match cfg.auth()? {
            DatabricksAuth::Token(t) => api::Auth::Token(t),
            DatabricksAuth::OAuth {
                client_id,
                client_secret,
            } => api::Auth::OAuth {
                client_id,
                secret: client_secret,
            },
        };
        let client = api::Client::new(
            host.clone(),
            cfg.warehouse_id.clone(),
            auth,
            cfg.query_timeout,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(DatabricksWarehouse {
            client,
            host: host.to_string(),
            catalog: cfg.catalog.clone(),
            schema: cfg.schema.clone(),
            timeout: cfg.query_timeout,
            ntz_time_zone: cfg.ntz_zone()?,
        })
    }

    fn timed_out(&self) -> WarehouseError {
        WarehouseError::Transient(format!(
            "Databricks did not answer within warehouse.query_timeout ({})",
            humantime::format_duration(self.timeout)
        ))
    }

    /// Runs one statement to its end, counted and bounded by `query_timeout`
    /// (a statement still running then is cancelled, and the call waits a
    /// moment for the cancel to go out).
    async fn run(&self, sql: &str) -> Result<api::Succeeded> {
        super::count_statement();
        let answered = tokio::time::timeout(
            self.timeout,
            self.client
                .execute(sql, self.catalog.as_deref(), self.schema.as_deref()),
        )
        .await;
        let outcome = match answered {
            Ok(r) => r,
            Err(_) => Err(self.timed_out()),
        };
        if outcome.as_ref().is_err_and(WarehouseError::is_retryable) {
            settle_cancels(Duration::from_secs(2).min(self.timeout)).await;
        }
        outcome
    }

    /// Runs `sql` and reads its whole result (for small results; and tests).
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let done = self.run(sql).await?;
        let mut batches = Vec::new();
        for index in 0..done.chunk_count {
            let link = done.links.get(&index).cloned();
            let chunk = tokio::time::timeout(
                self.timeout,
                self.client.chunk(&done.statement_id, index, link),
            )
            .await
            .map_err(|_| self.timed_out())??;
            batches.extend(chunk);
        }
        Ok(batches)
    }

    /// The cells of a small result as text.
    async fn text_rows(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let batches = self.query(sql).await?;
        let mut rows = Vec::new();
        for b in &batches {
            for i in 0..b.num_rows() {
                rows.push(
                    b.columns()
                        .iter()
                        .map(|c| {
                            (!c.is_null(i)).then(|| match c.as_string_opt::<i32>() {
                                Some(s) => s.value(i).to_string(),
                                None => decode::cell_text(c, i),
                            })
                        })
                        .collect(),
                );
            }
        }
        Ok(rows)
    }
}

/// `` `name` `` with embedded backticks doubled.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The table as `catalog`.`schema`.`table` (the parts it names).
pub fn table_sql(t: &TableRef) -> String {
    [&t.database, &t.schema]
        .into_iter()
        .flatten()
        .map(|p| ident(p))
        .chain(std::iter::once(ident(&t.table)))
        .collect::<Vec<_>>()
        .join(".")
}

/// Which side of a bound a literal stands for: Databricks holds microseconds,
/// so a nanosecond bound rounds to the microsecond that keeps the comparison
/// exact (`ts > n` ⟺ `ts > floor(n)`, `ts >= n` ⟺ `ts >= ceil(n)`, `ts <= n`
/// ⟺ `ts <= floor(n)`).
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Round {
    Floor,
    Ceil,
}

/// A typed literal of the column's kind: `TIMESTAMP_NTZ '2024-01-01
/// 00:00:00.123456'` (the UTC wall time of `nanos`, for wall-time columns)
/// or `TIMESTAMP '2024-01-01 00:00:00.123456+00:00'` (the instant, whatever
/// the session time zone).
pub fn timestamp_literal(nanos: Nanos, kind: TimestampKind, round: Round) -> String {
    let micros = match round {
        Round::Floor => nanos.div_euclid(1000),
        Round::Ceil => -((-(nanos as i128)).div_euclid(1000)) as i64,
    };
    let text = chrono::DateTime::from_timestamp_micros(micros)
        .expect("every Nanos is a chrono instant")
        .format("%Y-%m-%d %H:%M:%S%.6f");
    match kind {
        TimestampKind::Ntz => format!("TIMESTAMP_NTZ '{text}'"),
        TimestampKind::Ltz | TimestampKind::Tz => format!("TIMESTAMP '{text}+00:00'"),
    }
}

/// `ts >= first AND ts <= last` instant [`Nanos`] can hold.
fn representable(ts: &str, kind: TimestampKind) -> String {
    format!(
        "{ts} >= {} AND {ts} <= {}",
        timestamp_literal(Nanos::MIN, kind, Round::Ceil),
        timestamp_literal(Nanos::MAX, kind, Round::Floor)
    )
}

/// The window's one statement: every keyed row with a representable
/// timestamp inside the window, in no particular order.
fn window_sql(q: &super::WindowQuery) -> String {
    let kind = TimestampKind::of(&q.timestamp_type);
    let e = ident(&q.entity_column);
    let ts = ident(&q.timestamp_column);
    let mut cols = vec![e.clone(), ts.clone()];
    cols.extend(q.field_columns.iter().map(|c| ident(c)));
    let mut text = format!(
        "SELECT {} FROM {} WHERE {e} IS NOT NULL AND {}",
        cols.join(", "),
        table_sql(&q.table),
        representable(&ts, kind)
    );
    if let Some(since) = q.since {
        text += &format!(
            " AND {ts} > {}",
            timestamp_literal(since, kind, Round::Floor)
        );
    }
    text
}

/// The count of the window's rows that pages leave out: NULL entity; NULL
/// timestamp (full reads only); a timestamp [`Nanos`] cannot hold.
fn null_key_rows_sql(q: &super::WindowQuery) -> String {
    let kind = TimestampKind::of(&q.timestamp_type);
    let e = ident(&q.entity_column);
    let ts = ident(&q.timestamp_column);
    let in_window = match q.since {
        Some(s) => format!("{ts} > {}", timestamp_literal(s, kind, Round::Floor)),
        None => format!("{ts} IS NOT NULL"),
    };
    let null_ts = if q.since.is_none() {
        format!("count_if({ts} IS NULL)")
    } else {
        "0".to_string()
    };
    format!(
        "SELECT count_if({e} IS NULL AND {in_window}) AS null_entity, {null_ts} AS null_ts, \
         count_if({e} IS NOT NULL AND {in_window} AND NOT ({})) AS out_of_range FROM {}",
        representable(&ts, kind),
        table_sql(&q.table)
    )
}

/// A Databricks type as `DESCRIBE TABLE` prints it (`bigint`, `decimal(10,2)`,
/// `timestamp`, `timestamp_ntz`, `array<string>`, `string not null`), parsed
/// once. TIMESTAMP is an instant (Databricks' TIMESTAMP_LTZ), TIMESTAMP_NTZ a
/// wall time; MAP, STRUCT, VARIANT, INTERVAL and anything unknown are
/// [`TypeKind::Other`], named as given.
pub fn column_type(type_text: &str) -> ColumnType {
    let t = type_text.trim();
    let t = match t.len().checked_sub(8) {
        Some(cut) if t.is_char_boundary(cut) && t[cut..].eq_ignore_ascii_case("NOT NULL") => {
            t[..cut].trim_end()
        }
        _ => t,
    };
    let upper = t.to_ascii_uppercase();
    let array = upper.strip_prefix("ARRAY").map(str::trim_start);
    let kind = if array.is_some_and(|r| r.starts_with('<') && r.ends_with('>')) {
        // ASCII upper-casing keeps byte offsets, so `<` indexes `t` too.
        let start = upper.find('<').map_or(0, |i| i + 1);
        TypeKind::Array(Some(Box::new(column_type(&t[start..t.len() - 1]))))
    } else {
        let (base, params) = match upper.find('(') {
            Some(open) if upper.ends_with(')') => (
                upper[..open].trim(),
                Some(upper[open + 1..upper.len() - 1].trim()),
            ),
            _ => (upper.as_str(), None),
        };
        match base {
            "BIGINT" | "LONG" | "INT" | "INTEGER" | "SMALLINT" | "SHORT" | "TINYINT" | "BYTE" => {
                TypeKind::Number { scale: 0 }
            }
            "DECIMAL" | "DEC" | "NUMERIC" => TypeKind::Number {
                scale: params
                    .and_then(|p| p.split(',').nth(1))
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0),
            },
            "DOUBLE" | "FLOAT" | "REAL" => TypeKind::Float,
            "BOOLEAN" => TypeKind::Boolean,
            "STRING" | "VARCHAR" | "CHAR" => TypeKind::Text,
            "BINARY" => TypeKind::Binary,
            "TIMESTAMP" | "TIMESTAMP_LTZ" => TypeKind::Timestamp(TimestampKind::Ltz),
            "TIMESTAMP_NTZ" => TypeKind::Timestamp(TimestampKind::Ntz),
            "DATE" => TypeKind::Date,
            _ => TypeKind::Other,
        }
    };
    ColumnType::new(kind, type_text.trim())
}

fn is_missing_table(e: &WarehouseError) -> bool {
    let m = e.to_string();
    !e.is_retryable()
        && (m.contains("TABLE_OR_VIEW_NOT_FOUND")
            || m.contains("SCHEMA_NOT_FOUND")
            || m.contains("NO_SUCH_CATALOG"))
}

#[async_trait]
impl Warehouse for DatabricksWarehouse {
    async fn describe(&self, table: &TableRef) -> Result<Vec<Column>> {
        let rows = match self
            .text_rows(&format!("DESCRIBE TABLE {}", table_sql(table)))
            .await
        {
            Ok(rows) => rows,
            Err(e) if is_missing_table(&e) => {
                return Err(WarehouseError::Permanent(format!(
                "table {table} does not exist or is not visible to the configured principal ({e})"
            )))
            }
            Err(e) => return Err(e),
        };
        // Partitioning and other sections follow the columns after an empty
        // row or a `# ...` heading.
        Ok(rows
            .into_iter()
            .map_while(|r| {
                let mut it = r.into_iter();
                let name = it
                    .next()
                    .flatten()
                    .filter(|n| !n.is_empty() && !n.starts_with('#'))?;
                let type_text = it.next().flatten()?;
                Some(Column {
                    name,
                    data_type: column_type(&type_text),
                })
            })
            .collect())
    }

    async fn now(&self) -> Result<Nanos> {
        let batches = self.query("SELECT current_timestamp() AS now").await?;
        if let Some(b) = batches.iter().find(|b| b.num_rows() > 0) {
            let schema = b.schema();
            let ts = decode::timestamps("current_timestamp()", b.column(0), schema.field(0))
                .map_err(|e| WarehouseError::Transient(e.to_string()))?;
            if let Some(Ok(Some(t))) = ts.first() {
                return Ok(*t);
            }
        }
        Err(WarehouseError::Transient(
            "SELECT current_timestamp() returned no time".into(),
        ))
    }

    async fn null_key_rows(&self, q: &super::WindowQuery) -> Result<NullKeyRows> {
        let rows = self.text_rows(&null_key_rows_sql(q)).await?;
        Ok(NullKeyRows::from_text(rows.first().map(Vec::as_slice)))
    }

    fn pages<'a>(&'a self, q: &'a super::WindowQuery) -> BoxStream<'a, Result<Page>> {
        let page_rows = q.page_rows;
        stream::once(self.run_owned(window_sql(q)))
            .map_ok(move |done| {
                let api::Succeeded {
                    statement_id,
                    chunk_count,
                    mut links,
                    ..
                } = done;
                let client = self.client.clone();
                // Chunks in index order, each fetched by a task of its own
                // (its link asked for only when it is wanted), at most
                // CHUNKS_IN_FLIGHT at once.
                stream::iter(0..chunk_count)
                    .map(move |index| {
                        let client = client.clone();
                        let id = statement_id.clone();
                        let link = links.remove(&index);
                        Fetch(tokio::spawn(
                            async move { client.chunk(&id, index, link).await },
                        ))
                    })
                    .buffered(api::CHUNKS_IN_FLIGHT)
            })
            .try_flatten()
            .map_ok(move |batches| stream::iter(super::split_pages(batches, page_rows)).map(Ok))
            .try_flatten()
            .boxed()
    }

    async fn ping(&self) -> Result<()> {
        self.run("SELECT 1").await.map(|_| ())
    }

    async fn finish(&self) {
        settle_cancels(Duration::from_secs(2)).await;
    }

    fn ntz_time_zone(&self) -> super::zone::Tz {
        self.ntz_time_zone
    }
}

impl DatabricksWarehouse {
    async fn run_owned(&self, sql: String) -> Result<api::Succeeded> {
        self.run(&sql).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(since: Option<Nanos>, ts_type: &str) -> super::super::WindowQuery {
        super::super::WindowQuery {
            table: TableRef {
                database: Some("cat".into()),
                schema: Some("s".into()),
                table: "t`x".into(),
            },
            entity_column: "domain_userid".into(),
            timestamp_column: "updated_at".into(),
            timestamp_type: column_type(ts_type),
            field_columns: vec!["a".into()],
            since,
            page_rows: 3,
        }
    }

    #[test]
    fn types_map_to_kinds_and_keep_their_name() {
        use TimestampKind::{Ltz, Ntz};
        for (name, kind) in [
            ("bigint", TypeKind::Number { scale: 0 }),
            ("INT", TypeKind::Number { scale: 0 }),
            ("smallint", TypeKind::Number { scale: 0 }),
            ("tinyint", TypeKind::Number { scale: 0 }),
            ("decimal(10,2)", TypeKind::Number { scale: 2 }),
            ("DECIMAL(38, 0)", TypeKind::Number { scale: 0 }),
            ("double", TypeKind::Float),
            ("float", TypeKind::Float),
            ("boolean", TypeKind::Boolean),
            ("string", TypeKind::Text),
            ("varchar(10)", TypeKind::Text),
            ("binary", TypeKind::Binary),
            ("timestamp", TypeKind::Timestamp(Ltz)),
            ("timestamp_ntz", TypeKind::Timestamp(Ntz)),
            ("timestamp_ntz not null", TypeKind::Timestamp(Ntz)),
            ("date", TypeKind::Date),
            ("map<string,int>", TypeKind::Other),
            ("struct<a:int>", TypeKind::Other),
            ("interval day to second", TypeKind::Other),
        ] {
            let t = column_type(name);
            assert_eq!((t.to_string(), t.kind), (name.to_string(), kind), "{name}");
        }
        assert_eq!(
            column_type("array<decimal(10,2)>").kind,
            TypeKind::Array(Some(Box::new(column_type("decimal(10,2)"))))
        );
        assert_eq!(
            column_type("ARRAY<ARRAY<string>>").kind,
            TypeKind::Array(Some(Box::new(column_type("ARRAY<string>"))))
        );
    }

    #[test]
    fn literals_round_to_the_microsecond_that_keeps_the_bound_exact() {
        let ntz = TimestampKind::Ntz;
        assert_eq!(
            timestamp_literal(1_704_067_200_123_456_789, ntz, Round::Floor),
            "TIMESTAMP_NTZ '2024-01-01 00:00:00.123456'"
        );
        assert_eq!(
            timestamp_literal(1_704_067_200_123_456_789, TimestampKind::Ltz, Round::Ceil),
            "TIMESTAMP '2024-01-01 00:00:00.123457+00:00'"
        );
        // Before 1970 floor goes down, ceil up.
        assert_eq!(
            timestamp_literal(-1, ntz, Round::Floor),
            "TIMESTAMP_NTZ '1969-12-31 23:59:59.999999'"
        );
        assert_eq!(
            timestamp_literal(-1, ntz, Round::Ceil),
            "TIMESTAMP_NTZ '1970-01-01 00:00:00.000000'"
        );
        // The bounds are the first and last microseconds Nanos holds.
        assert_eq!(
            timestamp_literal(Nanos::MIN, ntz, Round::Ceil),
            "TIMESTAMP_NTZ '1677-09-21 00:12:43.145225'"
        );
        assert_eq!(
            timestamp_literal(Nanos::MAX, ntz, Round::Floor),
            "TIMESTAMP_NTZ '2262-04-11 23:47:16.854775'"
        );
    }

    #[test]
    fn one_statement_reads_the_window_with_quoted_names() {
        let q = window(Some(1_704_067_200_000_000_000), "timestamp_ntz");
        assert_eq!(
            window_sql(&q),
            "SELECT `domain_userid`, `updated_at`, `a` FROM `cat`.`s`.`t``x` \
             WHERE `domain_userid` IS NOT NULL \
             AND `updated_at` >= TIMESTAMP_NTZ '1677-09-21 00:12:43.145225' \
             AND `updated_at` <= TIMESTAMP_NTZ '2262-04-11 23:47:16.854775' \
             AND `updated_at` > TIMESTAMP_NTZ '2024-01-01 00:00:00.000000'"
        );
        let q = window(None, "timestamp");
        let sql = window_sql(&q);
        assert!(
            !sql.contains("TIMESTAMP_NTZ") && sql.ends_with("'2262-04-11 23:47:16.854775+00:00'"),
            "{sql}"
        );
    }

    #[test]
    fn null_key_rows_count_nulls_and_unrepresentable_timestamps_apart() {
        let sql = null_key_rows_sql(&window(None, "timestamp_ntz"));
        assert!(sql.starts_with(
            "SELECT count_if(`domain_userid` IS NULL AND `updated_at` IS NOT NULL) AS null_entity, \
             count_if(`updated_at` IS NULL) AS null_ts, "
        ), "{sql}");
        let sql = null_key_rows_sql(&window(Some(0), "timestamp"));
        assert!(
            sql.contains(" 0 AS null_ts, ") && sql.ends_with(" FROM `cat`.`s`.`t``x`"),
            "{sql}"
        );
    }
}
