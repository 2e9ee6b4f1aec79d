//! BigQuery backend: query jobs through the REST API v2 (`api`), result pages
//! as Arrow (`rows`).
//!
//! Promises the [`Warehouse`] contract: a window is read with one query job
//! (`SELECT entity, ts, fields FROM t WHERE <keyed, representable, in the
//! window>`, no `ORDER BY`, no `LIMIT`), whose result is read in pages of at
//! most `page_rows` rows (`maxResults`), each page fetched while the one
//! before is being consumed (one ahead at most, by a task of its own) and
//! built into a RecordBatch as it arrives. A run costs three query jobs
//! (`SELECT CURRENT_TIMESTAMP()`, the NULL-key count, the window), every one
//! counted ([`super::count_statement`]) and bounded by
//! `warehouse.query_timeout`; one abandoned before it is complete is
//! cancelled. `describe` reads the table's schema with `tables.get`, which
//! starts no job and scans nothing; `ping` lists a dataset of the billing
//! project, likewise. Rows with a NULL entity or timestamp, or a timestamp
//! [`Nanos`] cannot hold, are left out of pages and counted by
//! `null_key_rows`.
//!
//! A batch source's `database` is the project holding the dataset (default
//! `warehouse.project`), `schema` the dataset (default `warehouse.dataset`).
//! Identifiers are quoted with backticks, each part apart (`` `p`.`d`.`t` ``,
//! with `\` and `` ` `` escaped), so a name is only ever a name. Dataset
//! and table names are case-sensitive in BigQuery and used as given;
//! columns resolve case-insensitively ([`super::resolve_column`]).
//! Timestamps are microseconds there: literals are built from numbers
//! (`TIMESTAMP_MICROS(n)`, `DATETIME(TIMESTAMP_MICROS(n), 'UTC')`,
//! `DATE_FROM_UNIX_DATE(d)`), rounded so the comparison means exactly what
//! the nanosecond bound means ([`timestamp_literal`]), and no session time
//! zone changes them.
//!
//! Windows are read over REST only, whatever their size: the Storage Read
//! API (gRPC) is not used; the README's BigQuery section says why.

mod api;
mod rows;

pub use api::settle_cancels;

use std::time::Duration;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use super::{
    Column, ColumnType, Nanos, NullKeyRows, Page, Result, TableRef, TimestampKind, TypeKind,
    Warehouse, WarehouseError,
};
use crate::config::BigqueryConfig;

/// The REST root when `warehouse.api_url` is not set.
pub const DEFAULT_API_URL: &str = "https://bigquery.googleapis.com/bigquery/v2";
/// The token endpoint when neither `warehouse.token_url` nor the key file names one.
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

pub struct BigqueryWarehouse {
    client: api::Client,
    project: String,
    dataset: Option<String>,
    timeout: Duration,
    ntz_time_zone: super::zone::Tz,
}

impl std::fmt::Debug for BigqueryWarehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BigqueryWarehouse")
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

/// A result page being fetched by a task of its own (so it downloads while
/// the caller works on the one before); the task is aborted when dropped.
struct Fetch(tokio::task::JoinHandle<Result<api::ResultPage>>);

impl std::future::Future for Fetch {
    type Output = Result<api::ResultPage>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|e| {
                Err(WarehouseError::Transient(format!(
                    "result page download stopped: {e}"
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

/// Where the window's stream stands: the page in hand, or the one coming.
enum Next {
    Ready(api::ResultPage),
    Coming(Fetch),
    End,
}

impl BigqueryWarehouse {
    /// A client for `cfg` (reads the key file now; asks for a token on first use).
    pub fn new(cfg: &BigqueryConfig) -> anyhow::Result<Self> {
        let key = cfg.service_account()?;
        let parse = |key: &str, v: &str| {
            url::Url::parse(v.trim())
                .map_err(|e| anyhow::anyhow!("warehouse.{key}: not a URL: {e}"))
        };
        let api_url = parse("api_url", cfg.api_url.as_deref().unwrap_or(DEFAULT_API_URL))?;
        let token_url = cfg
            .token_url
            .clone()
            .or_else(|| key.token_uri.clone())
            .unwrap_or_else(|| DEFAULT_TOKEN_URL.to_string());
        parse("token_url", &token_url)?;
        let signer = api::Signer::new(&key, token_url).map_err(|e| anyhow::anyhow!("{e}"))?;
        let client = api::Client::new(
            api_url,
            cfg.project.trim().to_string(),
            cfg.location.clone(),
            signer,
            cfg.query_timeout,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(BigqueryWarehouse {
            client,
            project: cfg.project.trim().to_string(),
            dataset: cfg.dataset.clone(),
            timeout: cfg.query_timeout,
            ntz_time_zone: cfg.ntz_zone()?,
        })
    }

    fn timed_out(&self) -> WarehouseError {
        WarehouseError::Transient(format!(
            "BigQuery did not answer within warehouse.query_timeout ({})",
            humantime::format_duration(self.timeout)
        ))
    }

    /// The table with its project and dataset filled in from the config.
    fn qualified(&self, t: &TableRef) -> Result<(String, String, String)> {
        let dataset = t
            .schema
            .clone()
            .or_else(|| self.dataset.clone())
            .ok_or_else(|| {
                WarehouseError::Permanent(format!(
                    "table {t}: no dataset; set the batch source's schema or warehouse.dataset"
                ))
            })?;
        let project = t.database.clone().unwrap_or_else(|| self.project.clone());
        Ok((project, dataset, t.table.clone()))
    }

    fn table_sql(&self, t: &TableRef) -> Result<String> {
        let (p, d, t) = self.qualified(t)?;
        Ok(format!("{}.{}.{}", ident(&p), ident(&d), ident(&t)))
    }

    /// Runs one query until it is complete, counted and bounded by
    /// `query_timeout` (a job still running then is cancelled, and the call
    /// waits a moment for the cancel to go out); answers its first page.
    async fn run(&self, sql: &str, page_rows: usize) -> Result<api::Done> {
        super::count_statement();
        let answered = tokio::time::timeout(self.timeout, self.client.query(sql, page_rows)).await;
        let outcome = answered.unwrap_or_else(|_| Err(self.timed_out()));
        if outcome.as_ref().is_err_and(WarehouseError::is_retryable) {
            settle_cancels(Duration::from_secs(2).min(self.timeout)).await;
        }
        outcome
    }

    /// Runs `sql` and reads its whole result, page after page (for small
    /// results, and tests).
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let done = self.run(sql, 10_000).await?;
        let mut batches = Vec::new();
        let mut page = done.first;
        loop {
            batches.push(rows::batch(&page.schema.fields, &page.rows)?);
            let Some(token) = page.page_token.take() else {
                return Ok(batches);
            };
            page = tokio::time::timeout(
                self.timeout,
                self.client
                    .page(&done.job, page.schema.clone(), &token, 10_000),
            )
            .await
            .map_err(|_| self.timed_out())??;
        }
    }

    /// The cells of the first row of a one-row result, as text.
    async fn first_row(&self, sql: &str) -> Result<Vec<Option<String>>> {
        let done = self.run(sql, 1).await?;
        Ok(done
            .first
            .rows
            .first()
            .map(|r| {
                r.f.iter()
                    .map(|c| c.v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// `` `name` `` with `\` and `` ` `` escaped by a backslash.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// Which side of a bound a literal stands for: BigQuery holds microseconds
/// (and DATE whole days), so a nanosecond bound rounds to the unit that
/// keeps the comparison exact (`ts > n` ⟺ `ts > floor(n)`, `ts >= n` ⟺
/// `ts >= ceil(n)`, `ts <= n` ⟺ `ts <= floor(n)`).
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Round {
    Floor,
    Ceil,
}

fn divide(n: Nanos, unit: i64, round: Round) -> i64 {
    match round {
        Round::Floor => n.div_euclid(unit),
        Round::Ceil => n.div_euclid(unit) + i64::from(n.rem_euclid(unit) != 0),
    }
}

/// A literal of the column's own type from nanoseconds since the epoch:
/// `TIMESTAMP_MICROS(n)` for TIMESTAMP (an instant),
/// `DATETIME(TIMESTAMP_MICROS(n), 'UTC')` for DATETIME (the UTC wall time),
/// `DATE_FROM_UNIX_DATE(d)` for DATE.
pub fn timestamp_literal(nanos: Nanos, column: &ColumnType, round: Round) -> String {
    if column.kind == TypeKind::Date {
        return format!(
            "DATE_FROM_UNIX_DATE({})",
            divide(nanos, 86_400_000_000_000, round)
        );
    }
    let micros = divide(nanos, 1000, round);
    match TimestampKind::of(column) {
        TimestampKind::Ntz => format!("DATETIME(TIMESTAMP_MICROS({micros}), 'UTC')"),
        TimestampKind::Ltz | TimestampKind::Tz => format!("TIMESTAMP_MICROS({micros})"),
    }
}

/// `ts >= first AND ts <= last` instant [`Nanos`] can hold.
fn representable(ts: &str, column: &ColumnType) -> String {
    format!(
        "{ts} >= {} AND {ts} <= {}",
        timestamp_literal(Nanos::MIN, column, Round::Ceil),
        timestamp_literal(Nanos::MAX, column, Round::Floor)
    )
}

/// The window's one query: every keyed row with a representable timestamp
/// inside the window, in no particular order.
fn window_sql(q: &super::WindowQuery, table: &str) -> String {
    let e = ident(&q.entity_column);
    let ts = ident(&q.timestamp_column);
    let mut cols = vec![e.clone(), ts.clone()];
    cols.extend(q.field_columns.iter().map(|c| ident(c)));
    let mut text = format!(
        "SELECT {} FROM {table} WHERE {e} IS NOT NULL AND {}",
        cols.join(", "),
        representable(&ts, &q.timestamp_type)
    );
    if let Some(since) = q.since {
        text += &format!(
            " AND {ts} > {}",
            timestamp_literal(since, &q.timestamp_type, Round::Floor)
        );
    }
    text
}

/// The count of the window's rows that pages leave out: NULL entity; NULL
/// timestamp (full reads only); a timestamp [`Nanos`] cannot hold.
fn null_key_rows_sql(q: &super::WindowQuery, table: &str) -> String {
    let e = ident(&q.entity_column);
    let ts = ident(&q.timestamp_column);
    let in_window = match q.since {
        Some(s) => format!(
            "{ts} > {}",
            timestamp_literal(s, &q.timestamp_type, Round::Floor)
        ),
        None => format!("{ts} IS NOT NULL"),
    };
    let null_ts = if q.since.is_none() {
        format!("COUNTIF({ts} IS NULL)")
    } else {
        "0".to_string()
    };
    format!(
        "SELECT COUNTIF({e} IS NULL AND {in_window}) AS null_entity, {null_ts} AS null_ts, \
         COUNTIF({e} IS NOT NULL AND {in_window} AND NOT ({})) AS out_of_range FROM {table}",
        representable(&ts, &q.timestamp_type)
    )
}

/// A column's type from its schema field, named as standard SQL names it
/// (`INT64`, `ARRAY<STRING>`). TIMESTAMP is an instant, DATETIME a wall
/// time; STRUCT, GEOGRAPHY, INTERVAL, RANGE and anything unknown are
/// [`TypeKind::Other`].
pub(crate) fn column_type(field: &api::FieldSchema) -> ColumnType {
    let name = rows::standard_name(&field.type_name);
    if field.repeated() {
        let element = column_type(&api::FieldSchema {
            mode: Some("NULLABLE".into()),
            ..field.clone()
        });
        let name = format!("ARRAY<{element}>");
        return ColumnType::new(TypeKind::Array(Some(Box::new(element))), name);
    }
    let kind = match name.as_str() {
        "INT64" => TypeKind::Number { scale: 0 },
        "NUMERIC" | "BIGNUMERIC" => TypeKind::Number {
            scale: i64::from(rows::NUMERIC_SCALE),
        },
        "FLOAT64" => TypeKind::Float,
        "BOOL" => TypeKind::Boolean,
        "STRING" => TypeKind::Text,
        "BYTES" => TypeKind::Binary,
        "TIMESTAMP" => TypeKind::Timestamp(TimestampKind::Ltz),
        "DATETIME" => TypeKind::Timestamp(TimestampKind::Ntz),
        "DATE" => TypeKind::Date,
        "TIME" => TypeKind::Time,
        "JSON" => TypeKind::Variant,
        _ => TypeKind::Other,
    };
    ColumnType::new(kind, name)
}

#[async_trait]
impl Warehouse for BigqueryWarehouse {
    async fn describe(&self, table: &TableRef) -> Result<Vec<Column>> {
        let (p, d, t) = self.qualified(table)?;
        let schema = tokio::time::timeout(self.timeout, self.client.table_schema(&p, &d, &t))
            .await
            .map_err(|_| self.timed_out())??
            .ok_or_else(|| {
                WarehouseError::Permanent(format!(
                    "table {p}.{d}.{t} does not exist or is not visible to the service account"
                ))
            })?;
        Ok(schema
            .fields
            .iter()
            .map(|f| Column {
                name: f.name.clone(),
                data_type: column_type(f),
            })
            .collect())
    }

    async fn now(&self) -> Result<Nanos> {
        let row = self.first_row("SELECT CURRENT_TIMESTAMP() AS now").await?;
        row.first()
            .cloned()
            .flatten()
            .and_then(|s| rows::timestamp_micros(&s))
            .and_then(|us| us.checked_mul(1000))
            .ok_or_else(|| {
                WarehouseError::Transient("SELECT CURRENT_TIMESTAMP() returned no time".into())
            })
    }

    async fn null_key_rows(&self, q: &super::WindowQuery) -> Result<NullKeyRows> {
        let row = self
            .first_row(&null_key_rows_sql(q, &self.table_sql(&q.table)?))
            .await?;
        Ok(NullKeyRows::from_text(Some(&row)))
    }

    fn pages<'a>(&'a self, q: &'a super::WindowQuery) -> BoxStream<'a, Result<Page>> {
        let page_rows = q.page_rows.max(1);
        let started = async move {
            let sql = window_sql(q, &self.table_sql(&q.table)?);
            self.run(&sql, page_rows).await
        };
        stream::once(started)
            .map_ok(move |done| {
                let api::Done { job, first } = done;
                let client = self.client.clone();
                stream::try_unfold(Next::Ready(first), move |next| {
                    let client = client.clone();
                    let job = job.clone();
                    async move {
                        let mut page = match next {
                            Next::End => return Ok(None),
                            Next::Ready(p) => p,
                            Next::Coming(fetch) => fetch.await?,
                        };
                        // The next page downloads while this one is consumed.
                        let next = match page.page_token.take() {
                            Some(token) => {
                                let schema = page.schema.clone();
                                Next::Coming(Fetch(tokio::spawn(async move {
                                    client.page(&job, schema, &token, page_rows).await
                                })))
                            }
                            None => Next::End,
                        };
                        let pages = page
                            .rows
                            .chunks(page_rows)
                            .map(|rows| {
                                rows::batch(&page.schema.fields, rows)
                                    .map(|b| Page { batches: vec![b] })
                            })
                            .collect::<Vec<_>>();
                        Ok(Some((stream::iter(pages), next)))
                    }
                })
                .try_flatten()
            })
            .try_flatten()
            .try_filter(|p| std::future::ready(p.num_rows() > 0))
            .boxed()
    }

    async fn ping(&self) -> Result<()> {
        tokio::time::timeout(self.timeout, self.client.ping())
            .await
            .map_err(|_| self.timed_out())?
    }

    async fn finish(&self) {
        settle_cancels(Duration::from_secs(2)).await;
    }

    fn ntz_time_zone(&self) -> super::zone::Tz {
        self.ntz_time_zone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts_type(name: &str, mode: &str) -> ColumnType {
        column_type(&api::FieldSchema {
            name: "ts".into(),
            type_name: name.into(),
            mode: Some(mode.into()),
            fields: vec![],
        })
    }

    fn window(since: Option<Nanos>, ts: &str) -> super::super::WindowQuery {
        super::super::WindowQuery {
            table: TableRef {
                database: Some("p".into()),
                schema: Some("d".into()),
                table: "t`x".into(),
            },
            entity_column: "user_id".into(),
            timestamp_column: "ts".into(),
            timestamp_type: ts_type(ts, "NULLABLE"),
            field_columns: vec!["a".into()],
            since,
            page_rows: 3,
        }
    }

    fn load(warehouse: &str, dir: &std::path::Path) -> anyhow::Result<crate::config::Loaded> {
        let text = format!(
            "[warehouse]\nkind = \"bigquery\"\n{warehouse}\n[profiles]\nredis_url = \"redis://127.0.0.1:6379\"\n"
        );
        crate::config::Config::from_toml(&text, &dir.join("m.toml"), Vec::new())
    }

    #[test]
    fn the_config_needs_a_project_and_a_key_file_and_never_shows_the_key() {
        let dir = std::env::temp_dir().join(format!("bq-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret =
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
        let key = dir.join("sa.json");
        std::fs::write(
            &key,
            serde_json::json!({"type": "service_account", "client_email": "a@p.iam.gserviceaccount.com",
                               "private_key": secret, "token_uri": "https://oauth2.googleapis.com/token"})
            .to_string(),
        )
        .unwrap();
        let path = key.display();
        let loaded = load(
            &format!(
                "project = \"p\"\ncredentials_path = \"{path}\"\nlocation = \"EU\"\nbogus = 1"
            ),
            &dir,
        )
        .unwrap();
        assert_eq!(loaded.unknown_keys, ["warehouse.bogus"]);
        let crate::config::WarehouseConfig::Bigquery(c) = &loaded.config.warehouse else {
            panic!("not bigquery")
        };
        assert_eq!(
            (c.project.as_str(), c.location.as_deref()),
            ("p", Some("EU"))
        );
        assert_eq!(c.query_timeout, Duration::from_secs(120));
        // The key is not RSA: refused at start, naming the key, not its content.
        let e = BigqueryWarehouse::new(c)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("credentials_path") && !e.contains("c2VjcmV0"),
            "{e}"
        );

        let e = format!(
            "{:#}",
            load(&format!("credentials_path = \"{path}\""), &dir)
                .map(|_| ())
                .unwrap_err()
        );
        assert!(e.contains("warehouse.project"), "{e}");
        let e = format!(
            "{:#}",
            load("project = \"p\"", &dir).map(|_| ()).unwrap_err()
        );
        assert!(e.contains("warehouse.credentials_path"), "{e}");
        std::fs::write(&key, format!("{{\"private_key\": \"{}\"", "c2VjcmV0")).unwrap();
        let e = format!(
            "{:#}",
            load(
                &format!("project = \"p\"\ncredentials_path = \"{path}\""),
                &dir
            )
            .map(|_| ())
            .unwrap_err()
        );
        assert!(
            e.contains("not a JSON key file") && !e.contains("c2VjcmV0"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            load(
                &format!("project = \"p\"\ncredentials_path = \"{path}\"\napi_url = \"ftp://x\""),
                &dir
            )
            .map(|_| ())
            .unwrap_err()
        );
        assert!(e.contains("warehouse.api_url"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn types_map_to_kinds_under_their_standard_names() {
        use TimestampKind::{Ltz, Ntz};
        for (rest, name, kind) in [
            ("INTEGER", "INT64", TypeKind::Number { scale: 0 }),
            ("INT64", "INT64", TypeKind::Number { scale: 0 }),
            ("NUMERIC", "NUMERIC", TypeKind::Number { scale: 9 }),
            ("BIGNUMERIC", "BIGNUMERIC", TypeKind::Number { scale: 9 }),
            ("FLOAT", "FLOAT64", TypeKind::Float),
            ("BOOLEAN", "BOOL", TypeKind::Boolean),
            ("STRING", "STRING", TypeKind::Text),
            ("BYTES", "BYTES", TypeKind::Binary),
            ("TIMESTAMP", "TIMESTAMP", TypeKind::Timestamp(Ltz)),
            ("DATETIME", "DATETIME", TypeKind::Timestamp(Ntz)),
            ("DATE", "DATE", TypeKind::Date),
            ("TIME", "TIME", TypeKind::Time),
            ("JSON", "JSON", TypeKind::Variant),
            ("RECORD", "STRUCT", TypeKind::Other),
            ("GEOGRAPHY", "GEOGRAPHY", TypeKind::Other),
        ] {
            let t = ts_type(rest, "NULLABLE");
            assert_eq!((t.name.as_str(), t.kind), (name, kind), "{rest}");
        }
        let list = ts_type("INTEGER", "REPEATED");
        assert_eq!(list.name, "ARRAY<INT64>");
        assert_eq!(
            list.kind,
            TypeKind::Array(Some(Box::new(ts_type("INT64", "NULLABLE"))))
        );
    }

    #[test]
    fn literals_round_to_the_unit_that_keeps_the_bound_exact() {
        let ts = ts_type("TIMESTAMP", "NULLABLE");
        let dt = ts_type("DATETIME", "NULLABLE");
        let d = ts_type("DATE", "NULLABLE");
        assert_eq!(
            timestamp_literal(1_704_067_200_123_456_789, &ts, Round::Floor),
            "TIMESTAMP_MICROS(1704067200123456)"
        );
        assert_eq!(
            timestamp_literal(1_704_067_200_123_456_789, &dt, Round::Ceil),
            "DATETIME(TIMESTAMP_MICROS(1704067200123457), 'UTC')"
        );
        assert_eq!(
            timestamp_literal(-1, &ts, Round::Floor),
            "TIMESTAMP_MICROS(-1)"
        );
        assert_eq!(
            timestamp_literal(-1, &ts, Round::Ceil),
            "TIMESTAMP_MICROS(0)"
        );
        assert_eq!(
            timestamp_literal(-1, &d, Round::Floor),
            "DATE_FROM_UNIX_DATE(-1)"
        );
        assert_eq!(
            timestamp_literal(1, &d, Round::Ceil),
            "DATE_FROM_UNIX_DATE(1)"
        );
        assert_eq!(
            timestamp_literal(0, &d, Round::Ceil),
            "DATE_FROM_UNIX_DATE(0)"
        );
        assert_eq!(
            timestamp_literal(Nanos::MIN, &ts, Round::Ceil),
            "TIMESTAMP_MICROS(-9223372036854775)"
        );
        assert_eq!(
            timestamp_literal(Nanos::MAX, &ts, Round::Floor),
            "TIMESTAMP_MICROS(9223372036854775)"
        );
    }

    #[test]
    fn one_query_reads_the_window_with_quoted_names() {
        let q = window(Some(1_704_067_200_000_000_000), "DATETIME");
        assert_eq!(
            window_sql(&q, "`p`.`d`.`t\\`x`"),
            "SELECT `user_id`, `ts`, `a` FROM `p`.`d`.`t\\`x` WHERE `user_id` IS NOT NULL \
             AND `ts` >= DATETIME(TIMESTAMP_MICROS(-9223372036854775), 'UTC') \
             AND `ts` <= DATETIME(TIMESTAMP_MICROS(9223372036854775), 'UTC') \
             AND `ts` > DATETIME(TIMESTAMP_MICROS(1704067200000000), 'UTC')"
        );
        assert_eq!(ident("a\\`b"), "`a\\\\\\`b`");
        let sql = null_key_rows_sql(&window(None, "TIMESTAMP"), "`t`");
        assert!(
            sql.starts_with(
                "SELECT COUNTIF(`user_id` IS NULL AND `ts` IS NOT NULL) AS null_entity, \
                 COUNTIF(`ts` IS NULL) AS null_ts, "
            ),
            "{sql}"
        );
        let sql = null_key_rows_sql(&window(Some(0), "TIMESTAMP"), "`t`");
        assert!(
            sql.contains(" 0 AS null_ts, ") && sql.ends_with(" FROM `t`"),
            "{sql}"
        );
    }
}
