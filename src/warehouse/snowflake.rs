//! Snowflake backend on the `snowflake-api` crate (REST + Arrow).
//!
//! Promises the [`Warehouse`] contract: windows are read with keyset
//! pagination (`ORDER BY ts, entity LIMIT page_rows`, continuing after the
//! greatest `(ts, entity)` of the previous page, computed from the page itself
//! because result chunks arrive out of order); rows with a NULL entity or
//! timestamp, or a timestamp [`Nanos`] cannot hold, are left out of pages and
//! counted by `null_key_rows`. The SQL orders and compares a text entity in
//! the byte order of its UTF-8, as the cursor (a Rust `String`) does, whatever
//! the column's collation (`COLLATE(e, '')`, see [`entity_key`]); a NUMBER
//! entity column is ordered numerically while the cursor is its greatest
//! decimal text, so rows at a page edge can be read twice, never skipped.
//! Timestamp literals are numbers (`TO_TIMESTAMP_NTZ(<nanos>, 9)`, see
//! [`sql::timestamp_literal`]), so session parameters cannot change them.
//!
//! Table names resolve like unquoted identifiers: `describe` remembers the
//! name that matched (e.g. `DB.S.T` for `db.s.t`), and the reads use it.
//! `describe` also parses each column's type name, once ([`column_type`]).
//!
//! Works around the crate's pitfalls: every call has a timeout; requests go
//! through our own HTTP client (timeouts, no blind retries of POSTs, optional
//! base-URL rewrite of account-host requests for proxies, private endpoints and
//! tests); statements running past Snowflake's ~45 s answer window are polled
//! at their result URL, and a statement abandoned before its answer (the
//! timeout, a shutdown, a dropped run) is cancelled (`statements`); URLs in
//! errors lose their query strings (pre-signed chunk URLs carry
//! credentials there); the session is
//! rebuilt after any transient failure, since the crate never logs in again by
//! itself. Assumes the crate's `log` output is kept at info or above by the
//! logging setup (at debug it prints session tokens).

mod statements;

pub use statements::settle_aborts;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use reqwest_middleware::{ClientWithMiddleware, Middleware, Next};
use snowflake_api::{
    AuthArgs, AuthType, CertificateArgs, PasswordArgs, QueryResult, SnowflakeApi,
    SnowflakeApiBuilder, SnowflakeApiError,
};
use tokio::sync::Mutex;

use super::sql::TimestampKind;
use super::{
    decode, sql, Column, ColumnType, Nanos, NullKeyRows, Page, Result, TableRef, TypeKind,
    Warehouse, WarehouseError,
};
use crate::config::{Credentials, SnowflakeConfig};
use crate::model::FieldType;

/// Rewrites the scheme, host and port of requests to the Snowflake account
/// host to the configured base URL. Result chunks are downloaded from
/// pre-signed cloud-storage URLs through the same client and go out unchanged.
struct BaseUrl(url::Url);

/// Whether a request goes to the account host the crate builds
/// (`{account}.snowflakecomputing.com`), and so follows `warehouse.base_url`.
fn is_account_host(url: &url::Url) -> bool {
    url.host_str().is_some_and(|h| {
        h.to_ascii_lowercase()
            .trim_end_matches('.')
            .ends_with(".snowflakecomputing.com")
    })
}

#[async_trait]
impl Middleware for BaseUrl {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        if !is_account_host(req.url()) {
            return next.run(req, extensions).await;
        }
        let url = req.url_mut();
        // Setting scheme/host/port on a parsed https URL cannot fail for http(s) targets.
        let _ = url.set_scheme(self.0.scheme());
        let _ = url.set_host(self.0.host_str());
        let _ = url.set_port(self.0.port_or_known_default());
        if self.0.path() != "/" {
            let joined = format!("{}{}", self.0.path().trim_end_matches('/'), url.path());
            url.set_path(&joined);
        }
        next.run(req, extensions).await
    }
}

/// The HTTP client handed to the crate: [`statements::LongStatements`] (polls
/// handed-off statements, cancels abandoned ones), then [`BaseUrl`] when a
/// base URL is configured. Aborts go out through the same client, without the
/// polling.
fn http_client(http: reqwest::Client, base_url: Option<&url::Url>) -> ClientWithMiddleware {
    let with_base = |builder: reqwest_middleware::ClientBuilder| match base_url {
        Some(base) => builder.with(BaseUrl(base.clone())),
        None => builder,
    };
    let aborts = with_base(reqwest_middleware::ClientBuilder::new(http.clone())).build();
    with_base(
        reqwest_middleware::ClientBuilder::new(http).with(statements::LongStatements::new(aborts)),
    )
    .build()
}

/// How long a failed statement waits for the cancellation of a statement it
/// abandoned (at most `warehouse.query_timeout`).
const ABORT_WAIT: Duration = Duration::from_secs(2);

/// Everything needed to log in again; the credential stays wrapped in `Secret`.
struct Login {
    account: String,
    user: String,
    credentials: Credentials,
    role: Option<String>,
    warehouse: Option<String>,
    database: Option<String>,
    schema: Option<String>,
    base_url: Option<url::Url>,
    timeout: Duration,
}

pub struct SnowflakeWarehouse {
    login: Login,
    /// The live session; `None` after a failure so the next call logs in anew.
    api: Mutex<Option<Arc<SnowflakeApi>>>,
    /// The stored name `describe` found for each requested table name.
    resolved: Resolved,
    /// `warehouse.ntz_time_zone`.
    ntz_time_zone: super::zone::Tz,
}

/// Requested table name -> the name that matched in the warehouse, and its columns.
#[derive(Default)]
struct Resolved(std::sync::Mutex<HashMap<TableRef, (TableRef, Vec<Column>)>>);

impl Resolved {
    fn remember(&self, requested: &TableRef, stored: &TableRef, columns: &[Column]) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(requested.clone(), (stored.clone(), columns.to_vec()));
    }

    /// The stored name of `requested`, or `requested` itself if it was never described.
    fn get(&self, requested: &TableRef) -> TableRef {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(requested)
            .map(|(stored, _)| stored.clone())
            .unwrap_or_else(|| requested.clone())
    }

    /// Whether `column` of `requested` is a number (as `describe` reported it);
    /// false when unknown.
    fn is_number(&self, requested: &TableRef, column: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(requested)
            .and_then(|(_, cols)| cols.iter().find(|c| c.name == column))
            .is_some_and(|c| decode::compatible(&c.data_type, FieldType::Int64).is_ok())
    }
}

impl std::fmt::Debug for SnowflakeWarehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnowflakeWarehouse")
            .field("account", &self.login.account)
            .field("user", &self.login.user)
            .finish_non_exhaustive()
    }
}

impl SnowflakeWarehouse {
    /// A client for `cfg` (reads the credential now; logs in on first use).
    pub fn new(cfg: &SnowflakeConfig) -> anyhow::Result<Self> {
        let base_url = cfg
            .base_url
            .as_deref()
            .map(url::Url::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("warehouse.base_url: {e}"))?;
        Ok(SnowflakeWarehouse {
            login: Login {
                account: cfg.account.clone(),
                user: cfg.user.clone(),
                credentials: cfg.credentials()?,
                role: cfg.role.clone(),
                warehouse: cfg.warehouse.clone(),
                database: cfg.database.clone(),
                schema: cfg.schema.clone(),
                base_url,
                timeout: cfg.query_timeout,
            },
            api: Mutex::new(None),
            resolved: Resolved::default(),
            ntz_time_zone: cfg.ntz_zone()?,
        })
    }

    fn build_api(&self) -> Result<SnowflakeApi> {
        let l = &self.login;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(l.timeout))
            .timeout(l.timeout)
            .gzip(true)
            .build()
            .map_err(|e| WarehouseError::Permanent(format!("HTTP client: {e}")))?;
        let client = http_client(http, l.base_url.as_ref());
        let auth_type = match &l.credentials {
            Credentials::Password(p) => AuthType::Password(PasswordArgs {
                password: p.expose().to_string(),
            }),
            Credentials::PrivateKeyPem(k) => AuthType::Certificate(CertificateArgs {
                private_key_pem: k.expose().to_string(),
            }),
        };
        let auth = AuthArgs {
            account_identifier: l.account.clone(),
            warehouse: l.warehouse.clone(),
            database: l.database.clone(),
            schema: l.schema.clone(),
            username: l.user.clone(),
            role: l.role.clone(),
            auth_type,
        };
        SnowflakeApiBuilder::new(auth)
            .with_client(client)
            .build()
            .map_err(classify)
    }

    async fn api(&self) -> Result<Arc<SnowflakeApi>> {
        let mut guard = self.api.lock().await;
        if let Some(api) = guard.as_ref() {
            return Ok(api.clone());
        }
        let api = Arc::new(self.build_api()?);
        *guard = Some(api.clone());
        Ok(api)
    }

    /// Runs one statement with a timeout (polling it past Snowflake's answer
    /// window, see `statements`); after a transient failure the session is
    /// dropped so the next statement logs in again. A statement abandoned at
    /// the timeout is cancelled, and the call waits a moment for that.
    pub async fn exec(&self, sql: &str) -> Result<QueryResult> {
        let api = self.api().await?;
        let timeout = self.login.timeout;
        // Bound to a variable so the statement's future (and its abort guard)
        // is dropped here, before waiting for the abort.
        let answered = tokio::time::timeout(timeout, api.exec(sql)).await;
        let outcome = match answered {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) => classify(e),
            Err(_) => WarehouseError::Transient(format!(
                "Snowflake did not answer within warehouse.query_timeout ({})",
                humantime::format_duration(timeout)
            )),
        };
        if outcome.is_retryable() {
            // A timeout or a failed transfer abandons the statement: let its
            // cancellation go out before the error does (a one-shot command
            // may exit right after it).
            settle_aborts(ABORT_WAIT.min(timeout)).await;
            let mut guard = self.api.lock().await;
            if guard.as_ref().is_some_and(|a| Arc::ptr_eq(a, &api)) {
                *guard = None;
            }
        }
        Err(outcome)
    }

    async fn describe_exact(&self, table: &TableRef) -> Result<Option<Vec<Column>>> {
        let result = match self
            .exec(&format!("DESCRIBE TABLE {}", sql::table(table)))
            .await
        {
            Ok(r) => r,
            Err(WarehouseError::Permanent(m)) if is_missing_object(&m) => return Ok(None),
            Err(e) => return Err(e),
        };
        let rows = text_rows(result)?;
        Ok(Some(
            rows.into_iter()
                .filter_map(|r| {
                    let mut it = r.into_iter();
                    let name = it.next()??;
                    let type_name = it.next()??;
                    Some(Column {
                        name,
                        data_type: column_type(&type_name),
                    })
                })
                .collect(),
        ))
    }

    async fn read_page(
        &self,
        q: &super::WindowQuery,
        after: Option<&(Nanos, String)>,
    ) -> Result<(Page, Option<(Nanos, String)>)> {
        let table = self.resolved.get(&q.table);
        let number = self.resolved.is_number(&q.table, &q.entity_column);
        let batches = match self
            .exec(&window_page_sql(q, &table, number, after))
            .await?
        {
            QueryResult::Arrow(b) => b,
            QueryResult::Empty => Vec::new(),
            QueryResult::Json(j) => {
                return Err(WarehouseError::Transient(format!(
                    "expected Arrow rows, got JSON: {}",
                    truncate(&j.to_string(), 200)
                )))
            }
        };
        let last = page_max_key(&batches, q)?;
        Ok((Page { batches }, last))
    }
}

/// `ts >= first AND ts <= last` instant [`Nanos`] can hold: rows outside are
/// left out of pages (they could not be keyed nor paged past) and counted by
/// `null_key_rows`.
fn representable(ts: &str, kind: TimestampKind) -> String {
    format!(
        "{ts} >= {} AND {ts} <= {}",
        sql::timestamp_literal(Nanos::MIN, kind),
        sql::timestamp_literal(Nanos::MAX, kind)
    )
}

/// The entity column as the keyset SQL orders and compares it. Text compares in
/// the byte order of its UTF-8, like the cursor: `COLLATE(e, '')` removes any
/// collation of the column (a case- or accent-insensitive one would order
/// `'B'` and `'b'` together and make `e > 'b'` skip rows the cursor has not
/// passed), and with no collation on either side Snowflake compares UTF-8
/// (its `'utf8'` default). fakesnow cannot run `COLLATE(e, 'utf8')` (DuckDB has
/// no such collation) but runs this form. A NUMBER column stays as it is.
fn entity_key(entity_ident: &str, number: bool) -> String {
    if number {
        entity_ident.to_string()
    } else {
        format!("COLLATE({entity_ident}, '')")
    }
}

/// The SQL of one keyset page of `table` (the stored name of `q.table`): the
/// window's rows after the cursor `after` (the previous page's greatest
/// `(timestamp, entity)`), ordered by `(timestamp, entity)`. Rows sharing the
/// cursor's timestamp continue by entity, so a bulk update stamping more rows
/// than a page is never skipped at a page edge (and, for a text entity, never
/// read twice). `number` says the entity column is a NUMBER (see [`entity_key`]).
fn window_page_sql(
    q: &super::WindowQuery,
    table: &TableRef,
    number: bool,
    after: Option<&(Nanos, String)>,
) -> String {
    let kind = TimestampKind::of(&q.timestamp_type);
    let e = sql::ident(&q.entity_column);
    let ts = sql::ident(&q.timestamp_column);
    let key = entity_key(&e, number);
    let mut cols = vec![e.clone(), ts.clone()];
    cols.extend(q.field_columns.iter().map(|c| sql::ident(c)));
    let mut text = format!(
        "SELECT {} FROM {} WHERE {e} IS NOT NULL AND {}",
        cols.join(", "),
        sql::table(table),
        representable(&ts, kind)
    );
    if let Some(since) = q.since {
        text += &format!(" AND {ts} > {}", sql::timestamp_literal(since, kind));
    }
    if let Some((at, entity)) = after {
        let lit = sql::timestamp_literal(*at, kind);
        text += &format!(
            " AND ({ts} > {lit} OR ({ts} = {lit} AND {key} > {}))",
            sql::string_literal(entity)
        );
    }
    text += &format!(" ORDER BY {ts}, {key} LIMIT {}", q.page_rows);
    text
}

/// The greatest `(timestamp, entity)` of a page, scanning all its rows
/// (never trusting the order of result chunks).
fn page_max_key(
    batches: &[RecordBatch],
    q: &super::WindowQuery,
) -> Result<Option<(Nanos, String)>> {
    let permanent = |e: decode::ColumnError| WarehouseError::Permanent(e.to_string());
    let mut decoded = Vec::with_capacity(batches.len());
    for b in batches {
        let schema = b.schema();
        let ts = decode::timestamps(&q.timestamp_column, b.column(1), schema.field(1))
            .map_err(permanent)?;
        let ents =
            decode::entities(&q.entity_column, b.column(0), schema.field(0)).map_err(permanent)?;
        decoded.push((ts, ents));
    }
    let mut best: Option<(Nanos, &str)> = None;
    for (ts, ents) in &decoded {
        for (i, t) in ts.iter().enumerate() {
            if let (Ok(Some(t)), Some(e)) = (*t, ents.get(i)) {
                if best.is_none_or(|b| (t, e) > b) {
                    best = Some((t, e));
                }
            }
        }
    }
    Ok(best.map(|(t, e)| (t, e.to_string())))
}

/// Paging state after a page: the keyset cursor (the greatest
/// `(timestamp, entity)` read) and whether that page was the last.
type PagingState = (Option<(Nanos, String)>, bool);

/// Where paging goes after a page of `rows` rows whose greatest key is `last`:
/// `None` when the page was empty (the window is read), else the cursor to
/// continue after and whether this page was the last. A short page is the last;
/// a full one may be followed by more, so one empty read ends the window.
fn after_page(
    rows: usize,
    page_rows: usize,
    last: Option<(Nanos, String)>,
    timestamp_column: &str,
) -> Result<Option<PagingState>> {
    if rows == 0 {
        return Ok(None);
    }
    if last.is_none() && rows >= page_rows {
        // A full page of rows whose time cannot be represented: no cursor to go on
        // from. The page query leaves such rows out, so this is a last resort.
        return Err(WarehouseError::Permanent(format!(
            "column {timestamp_column}: a full page of timestamps outside 1677..2262 cannot be paged past"
        )));
    }
    let finished = rows < page_rows || last.is_none();
    Ok(Some((last, finished)))
}

#[async_trait]
impl Warehouse for SnowflakeWarehouse {
    async fn describe(&self, table: &TableRef) -> Result<Vec<Column>> {
        if let Some(cols) = self.describe_exact(table).await? {
            self.resolved.remember(table, table, &cols);
            return Ok(cols);
        }
        // Unquoted identifiers in Snowflake mean their upper-case form.
        let upper = TableRef {
            database: table.database.as_deref().map(unquoted_form),
            schema: table.schema.as_deref().map(unquoted_form),
            table: unquoted_form(&table.table),
        };
        if upper != *table {
            if let Some(cols) = self.describe_exact(&upper).await? {
                self.resolved.remember(table, &upper, &cols);
                return Ok(cols);
            }
        }
        Err(WarehouseError::Permanent(format!(
            "table {table} does not exist or is not visible to the configured role"
        )))
    }

    async fn now(&self) -> Result<Nanos> {
        let r = self.exec("SELECT CURRENT_TIMESTAMP() AS NOW_UTC").await?;
        if let QueryResult::Arrow(batches) = &r {
            if let Some(b) = batches.iter().find(|b| b.num_rows() > 0) {
                let schema = b.schema();
                let ts = decode::timestamps("CURRENT_TIMESTAMP()", b.column(0), schema.field(0))
                    .map_err(|e| WarehouseError::Transient(e.to_string()))?;
                if let Some(Ok(Some(t))) = ts.first() {
                    return Ok(*t);
                }
            }
        }
        Err(WarehouseError::Transient(
            "SELECT CURRENT_TIMESTAMP() returned no time".into(),
        ))
    }

    async fn null_key_rows(&self, q: &super::WindowQuery) -> Result<NullKeyRows> {
        let text = null_key_rows_sql(q, &self.resolved.get(&q.table));
        let rows = text_rows(self.exec(&text).await?)?;
        let num = |i: usize| -> u64 {
            rows.first()
                .and_then(|r| r.get(i).cloned().flatten())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        Ok(NullKeyRows {
            null_entity: num(0),
            null_timestamp: num(1),
            out_of_range: num(2),
        })
    }

    fn pages<'a>(&'a self, q: &'a super::WindowQuery) -> BoxStream<'a, Result<Page>> {
        // State: the keyset cursor, and whether the previous page was the last.
        let init: PagingState = (None, false);
        stream::try_unfold(init, move |(after, done)| async move {
            if done {
                return Ok(None);
            }
            let (page, last) = self.read_page(q, after.as_ref()).await?;
            Ok(
                after_page(page.num_rows(), q.page_rows, last, &q.timestamp_column)?
                    .map(|next| (page, next)),
            )
        })
        .boxed()
    }

    async fn ping(&self) -> Result<()> {
        self.exec("SELECT 1").await.map(|_| ())
    }

    async fn finish(&self) {
        statements::settle_aborts(std::time::Duration::from_secs(2)).await;
    }

    fn ntz_time_zone(&self) -> super::zone::Tz {
        self.ntz_time_zone
    }
}

/// The SQL counting the window's rows of `table` (the stored name of
/// `q.table`) that pages leave out: NULL entity; NULL timestamp (full reads
/// only); entity present but a timestamp [`Nanos`] cannot hold.
fn null_key_rows_sql(q: &super::WindowQuery, table: &TableRef) -> String {
    let kind = TimestampKind::of(&q.timestamp_type);
    let e = sql::ident(&q.entity_column);
    let ts = sql::ident(&q.timestamp_column);
    let in_window = match q.since {
        Some(s) => format!("{ts} > {}", sql::timestamp_literal(s, kind)),
        None => format!("{ts} IS NOT NULL"),
    };
    // NULL timestamps belong to no window; they are reported on full reads only.
    let null_ts = if q.since.is_none() {
        format!("COUNT_IF({ts} IS NULL)")
    } else {
        "0".to_string()
    };
    format!(
        "SELECT COUNT_IF({e} IS NULL AND {in_window}) AS NULL_ENTITY, {null_ts} AS NULL_TS, \
         COUNT_IF({e} IS NOT NULL AND {in_window} AND NOT ({})) AS OUT_OF_RANGE FROM {}",
        representable(&ts, kind),
        sql::table(table)
    )
}

/// A Snowflake type name as `DESCRIBE TABLE` / INFORMATION_SCHEMA print it
/// (`NUMBER(38,0)`, `VARCHAR(16777216)`, `TIMESTAMP_NTZ(9)`, `ARRAY(NUMBER(38,0))`,
/// `TIMESTAMP WITH TIME ZONE`, a trailing `NOT NULL`, and the DuckDB names
/// fakesnow prints for some types), parsed once, when the table is described.
/// A bare `NUMBER` (INFORMATION_SCHEMA prints the scale in another column) is
/// scale 0; a name not listed here (GEOGRAPHY, VECTOR, a collated VARCHAR) is
/// [`TypeKind::Other`]. The name is kept as given, for messages.
pub fn column_type(type_name: &str) -> ColumnType {
    use sql::TimestampKind::{Ltz, Ntz, Tz};
    let t = type_name.trim();
    let t = match t.len().checked_sub(8) {
        Some(cut) if t.is_char_boundary(cut) && t[cut..].eq_ignore_ascii_case("NOT NULL") => {
            t[..cut].trim_end()
        }
        _ => t,
    };
    let (base, params) = match t.find('(') {
        Some(open) if t.ends_with(')') => (&t[..open], Some(t[open + 1..t.len() - 1].trim())),
        _ => (t, None),
    };
    let base = base
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase();
    let kind = match base.as_str() {
        "NUMBER" | "DECIMAL" | "NUMERIC" => {
            let scale = params
                .and_then(|p| p.split(',').nth(1))
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            TypeKind::Number { scale }
        }
        "INT" | "INTEGER" | "BIGINT" | "SMALLINT" | "TINYINT" | "BYTEINT" | "HUGEINT"
        | "UHUGEINT" | "UBIGINT" | "UINTEGER" | "USMALLINT" | "UTINYINT" | "INT2" | "INT4"
        | "INT8" => TypeKind::Number { scale: 0 },
        "FLOAT" | "FLOAT4" | "FLOAT8" | "DOUBLE" | "DOUBLE PRECISION" | "REAL" => TypeKind::Float,
        "VARCHAR" | "CHAR" | "CHARACTER" | "CHAR VARYING" | "CHARACTER VARYING" | "NCHAR"
        | "NCHAR VARYING" | "NVARCHAR" | "NVARCHAR2" | "STRING" | "TEXT" => TypeKind::Text,
        "BOOLEAN" | "BOOL" => TypeKind::Boolean,
        "BINARY" | "VARBINARY" | "BLOB" => TypeKind::Binary,
        // DuckDB's (fakesnow's) naive TIMESTAMP / TIMESTAMP_NS/MS/S are wall times.
        "TIMESTAMP"
        | "DATETIME"
        | "TIMESTAMP_NTZ"
        | "TIMESTAMPNTZ"
        | "TIMESTAMP WITHOUT TIME ZONE"
        | "TIMESTAMP_NS"
        | "TIMESTAMP_MS"
        | "TIMESTAMP_S" => TypeKind::Timestamp(Ntz),
        "TIMESTAMP_LTZ" | "TIMESTAMPLTZ" | "TIMESTAMP WITH LOCAL TIME ZONE" => {
            TypeKind::Timestamp(Ltz)
        }
        "TIMESTAMP_TZ" | "TIMESTAMPTZ" | "TIMESTAMP WITH TIME ZONE" => TypeKind::Timestamp(Tz),
        "DATE" => TypeKind::Date,
        "TIME" => TypeKind::Time,
        "ARRAY" => TypeKind::Array(
            params
                .filter(|p| !p.is_empty())
                .map(|p| Box::new(column_type(p))),
        ),
        "VARIANT" | "JSON" => TypeKind::Variant,
        "OBJECT" | "MAP" => TypeKind::Object,
        _ => TypeKind::Other,
    };
    ColumnType::new(kind, type_name)
}

/// How Snowflake stores an unquoted identifier: upper-cased. Names that are not
/// valid unquoted identifiers keep their exact form.
fn unquoted_form(name: &str) -> String {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if valid {
        name.to_ascii_uppercase()
    } else {
        name.to_string()
    }
}

fn is_missing_object(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("does not exist") || m.contains("002003")
}

/// Sorts the crate's errors into retryable and permanent, with the query
/// strings of any URLs in the text removed (see [`redact_urls`]).
fn classify(e: SnowflakeApiError) -> WarehouseError {
    match classify_unredacted(e) {
        WarehouseError::Transient(m) => WarehouseError::Transient(redact_urls(&m)),
        WarehouseError::Permanent(m) => WarehouseError::Permanent(redact_urls(&m)),
    }
}

/// `text` with the query string and fragment of every `http(s)://` URL
/// replaced by `?…`: pre-signed result-chunk URLs carry signatures and tokens
/// there. A URL ends at whitespace or at a character that cannot be part of it
/// unescaped (`)`, quotes, `<`, `>`, `` ` ``).
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        // ASCII lower-casing keeps byte offsets, so they index `rest` too.
        let lower = rest.to_ascii_lowercase();
        let start = ["http://", "https://"]
            .iter()
            .filter_map(|scheme| lower.find(scheme))
            .min();
        let Some(start) = start else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..start]);
        let url = &rest[start..];
        let end = url
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(url.len());
        let (url, after) = url.split_at(end);
        match url.find(['?', '#']) {
            Some(q) => {
                out.push_str(&url[..q]);
                out.push_str("?…");
            }
            None => out.push_str(url),
        }
        rest = after;
    }
}

fn classify_unredacted(e: SnowflakeApiError) -> WarehouseError {
    use SnowflakeApiError as E;
    match e {
        E::ApiError(code, message) => {
            let text = format!("Snowflake error {code}: {message}");
            match code.as_str() {
                // Session or token expired / gone (390104: the server lost it, e.g. it
                // restarted), or the service is busy: a new session helps.
                "390104" | "390111" | "390112" | "390114" | "390115" | "000605" | "000625" => {
                    WarehouseError::Transient(text)
                }
                _ => WarehouseError::Permanent(text),
            }
        }
        E::AuthError(a) => {
            let text = a.to_string();
            if text.starts_with("Failed to authenticate") {
                WarehouseError::Permanent(format!("Snowflake login refused: {text}"))
            } else {
                WarehouseError::Transient(format!("Snowflake login: {text}"))
            }
        }
        E::RequestError(r) => WarehouseError::Transient(format!(
            "Snowflake request failed: {}{}",
            r,
            if r.to_string().contains("expected value") || r.to_string().contains("missing field") {
                " (an unreadable reply)"
            } else {
                ""
            }
        )),
        other => WarehouseError::Transient(format!("Snowflake: {other}")),
    }
}

/// The cells of a small result set as text (for DESCRIBE and COUNT results).
fn text_rows(result: QueryResult) -> Result<Vec<Vec<Option<String>>>> {
    match result {
        QueryResult::Empty => Ok(Vec::new()),
        QueryResult::Json(j) => Ok(j
            .value
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        r.as_array()
                            .map(|cells| {
                                cells
                                    .iter()
                                    .map(|c| match c {
                                        serde_json::Value::Null => None,
                                        serde_json::Value::String(s) => Some(s.clone()),
                                        v => Some(v.to_string()),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default()),
        QueryResult::Arrow(batches) => {
            let mut rows = Vec::new();
            for b in &batches {
                let cols: Vec<&ArrayRef> = b.columns().iter().collect();
                for i in 0..b.num_rows() {
                    rows.push(
                        cols.iter()
                            .map(|c| {
                                if c.is_null(i) {
                                    None
                                } else if let Some(s) = c.as_string_opt::<i32>() {
                                    Some(s.value(i).to_string())
                                } else {
                                    Some(decode::cell_text(c, i))
                                }
                            })
                            .collect(),
                    );
                }
            }
            Ok(rows)
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquoted_identifiers_resolve_upper_case() {
        assert_eq!(unquoted_form("domain_userid"), "DOMAIN_USERID");
        assert_eq!(unquoted_form("my table"), "my table");
        assert_eq!(unquoted_form("1abc"), "1abc");
    }

    #[test]
    fn api_errors_split_into_retryable_and_permanent() {
        let missing = classify(SnowflakeApiError::ApiError(
            "002003".into(),
            "Object 'X' does not exist".into(),
        ));
        assert!(!missing.is_retryable());
        let expired = classify(SnowflakeApiError::ApiError(
            "390114".into(),
            "Authentication token has expired".into(),
        ));
        assert!(expired.is_retryable());
        let lost = classify(SnowflakeApiError::ApiError(
            "390104".into(),
            "User must login again to access the service.".into(),
        ));
        assert!(lost.is_retryable());
    }

    // --- keyset paging, pure -------------------------------------------------

    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    fn window(
        page_rows: usize,
        since: Option<Nanos>,
        timestamp_type: &str,
    ) -> super::super::WindowQuery {
        super::super::WindowQuery {
            table: TableRef {
                database: Some("DB".into()),
                schema: Some("S".into()),
                table: "T".into(),
            },
            entity_column: "DOMAIN_USERID".into(),
            timestamp_column: "UPDATED_AT".into(),
            timestamp_type: column_type(timestamp_type),
            field_columns: vec!["A".into()],
            since,
            page_rows,
        }
    }

    /// One result chunk in real Snowflake's shapes: TEXT entities and
    /// TIMESTAMP_NTZ(9) as Int64 nanoseconds.
    fn chunk(rows: &[(Option<&str>, Option<Nanos>)]) -> RecordBatch {
        let meta = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let schema = Schema::new(vec![
            Field::new("DOMAIN_USERID", DataType::Utf8, true)
                .with_metadata(meta(&[("logicalType", "TEXT")])),
            Field::new("UPDATED_AT", DataType::Int64, true)
                .with_metadata(meta(&[("logicalType", "TIMESTAMP_NTZ"), ("scale", "9")])),
        ]);
        let entities: StringArray = rows.iter().map(|r| r.0).collect();
        let times: Int64Array = rows.iter().map(|r| r.1).collect();
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(entities), Arc::new(times)]).unwrap()
    }

    fn max_key(chunks: &[RecordBatch]) -> Option<(Nanos, String)> {
        page_max_key(chunks, &window(10, None, "TIMESTAMP_NTZ(9)")).unwrap()
    }

    const T: Nanos = 1_700_000_000_000_000_000;

    /// `window_page_sql` of the query's own table name, for a text entity.
    fn page_sql(q: &super::super::WindowQuery, after: Option<&(Nanos, String)>) -> String {
        window_page_sql(q, &q.table, false, after)
    }

    #[test]
    fn first_page_sql_reads_the_window_in_key_order() {
        assert_eq!(
            page_sql(&window(3, Some(T), "TIMESTAMP_NTZ(9)"), None),
            "SELECT \"DOMAIN_USERID\", \"UPDATED_AT\", \"A\" FROM \"DB\".\"S\".\"T\" \
             WHERE \"DOMAIN_USERID\" IS NOT NULL \
             AND \"UPDATED_AT\" >= TO_TIMESTAMP_NTZ(-9223372036854775808, 9) \
             AND \"UPDATED_AT\" <= TO_TIMESTAMP_NTZ(9223372036854775807, 9) \
             AND \"UPDATED_AT\" > TO_TIMESTAMP_NTZ(1700000000000000000, 9) \
             ORDER BY \"UPDATED_AT\", COLLATE(\"DOMAIN_USERID\", '') LIMIT 3"
        );
    }

    #[test]
    fn keyset_compares_entities_in_byte_order_whatever_the_collation() {
        // The cursor is the greatest entity in Rust (UTF-8 byte) order; under a
        // case-insensitive column collation `"E" > 'b'` would leave out 'B'-rows
        // sorted after 'b', so both the ORDER BY and the predicate drop the
        // column's collation and compare UTF-8 like the cursor.
        let sql = page_sql(
            &window(3, None, "TIMESTAMP_NTZ(9)"),
            Some(&(T, "b".to_string())),
        );
        assert!(
            sql.ends_with(
                " AND (\"UPDATED_AT\" > TO_TIMESTAMP_NTZ(1700000000000000000, 9) \
                 OR (\"UPDATED_AT\" = TO_TIMESTAMP_NTZ(1700000000000000000, 9) \
                 AND COLLATE(\"DOMAIN_USERID\", '') > 'b')) \
                 ORDER BY \"UPDATED_AT\", COLLATE(\"DOMAIN_USERID\", '') LIMIT 3"
            ),
            "{sql}"
        );
        // Every comparison or ordering of the entity goes through the collation-free key.
        assert_eq!(sql.matches("\"DOMAIN_USERID\"").count(), 4, "{sql}");
        assert_eq!(
            sql.matches("COLLATE(\"DOMAIN_USERID\", '')").count(),
            2,
            "{sql}"
        );
        // A NUMBER entity keeps numeric order (COLLATE takes text).
        let q = window(3, None, "TIMESTAMP_NTZ(9)");
        let sql = window_page_sql(&q, &q.table, true, Some(&(T, "10".to_string())));
        assert!(!sql.contains("COLLATE"), "{sql}");
        assert!(
            sql.ends_with(
                " AND \"DOMAIN_USERID\" > '10')) ORDER BY \"UPDATED_AT\", \"DOMAIN_USERID\" LIMIT 3"
            ),
            "{sql}"
        );
    }

    #[test]
    fn entity_type_comes_from_describe() {
        let q = window(3, None, "TIMESTAMP_NTZ(9)");
        let resolved = Resolved::default();
        // Never described: taken as text.
        assert!(!resolved.is_number(&q.table, "DOMAIN_USERID"));
        for (ty, number) in [
            ("VARCHAR(16777216)", false),
            ("VARCHAR(16777216) COLLATE 'en-ci'", false),
            ("NUMBER(38,0)", true),
        ] {
            let cols = [Column {
                name: "DOMAIN_USERID".into(),
                data_type: column_type(ty),
            }];
            resolved.remember(&q.table, &q.table, &cols);
            assert_eq!(
                resolved.is_number(&q.table, "DOMAIN_USERID"),
                number,
                "{ty}"
            );
        }
    }

    #[test]
    fn type_names_parse_once_into_kinds_and_keep_their_name() {
        use sql::TimestampKind::{Ltz, Ntz, Tz};
        for (name, kind) in [
            ("NUMBER(38,0)", TypeKind::Number { scale: 0 }),
            ("NUMBER(10,2)", TypeKind::Number { scale: 2 }),
            ("number", TypeKind::Number { scale: 0 }),
            ("BIGINT", TypeKind::Number { scale: 0 }),
            ("FLOAT", TypeKind::Float),
            ("VARCHAR(16777216)", TypeKind::Text),
            ("varchar not null", TypeKind::Text),
            ("BINARY(8388608)", TypeKind::Binary),
            ("TIMESTAMP_NTZ(9)", TypeKind::Timestamp(Ntz)),
            ("TIMESTAMP_NTZ(3) NOT NULL", TypeKind::Timestamp(Ntz)),
            ("TIMESTAMP_NS", TypeKind::Timestamp(Ntz)),
            ("timestamp_ltz", TypeKind::Timestamp(Ltz)),
            ("TIMESTAMP WITH LOCAL TIME ZONE", TypeKind::Timestamp(Ltz)),
            ("TIMESTAMP_TZ(9)", TypeKind::Timestamp(Tz)),
            ("TIMESTAMP  WITH TIME ZONE", TypeKind::Timestamp(Tz)),
            ("DATE", TypeKind::Date),
            ("TIME(9)", TypeKind::Time),
            ("ARRAY", TypeKind::Array(None)),
            ("JSON", TypeKind::Variant),
            ("OBJECT", TypeKind::Object),
            ("GEOGRAPHY", TypeKind::Other),
            ("VARCHAR(16777216) COLLATE 'en-ci'", TypeKind::Other),
        ] {
            let t = column_type(name);
            assert_eq!((t.to_string(), t.kind), (name.to_string(), kind), "{name}");
        }
        let nested = column_type("ARRAY(NUMBER(38,0))");
        assert_eq!(
            nested.kind,
            TypeKind::Array(Some(Box::new(column_type("NUMBER(38,0)"))))
        );
    }

    #[test]
    fn pages_leave_out_timestamps_nanos_cannot_hold_even_on_a_full_read() {
        // A table whose first rows (in key order) are stamped 0001-01-01 must
        // not fill a page with rows that cannot be paged past.
        let sql = page_sql(&window(3, None, "TIMESTAMP_NTZ(9)"), None);
        // The bounds are exactly the first and last representable instants.
        assert!(
            sql.contains(
                " AND \"UPDATED_AT\" >= TO_TIMESTAMP_NTZ(-9223372036854775808, 9) \
                 AND \"UPDATED_AT\" <= TO_TIMESTAMP_NTZ(9223372036854775807, 9)"
            ),
            "{sql}"
        );
    }

    #[test]
    fn reads_use_the_table_name_describe_resolved() {
        let q = window(3, None, "TIMESTAMP_NTZ(9)");
        let lower = TableRef {
            database: Some("db".into()),
            schema: Some("s".into()),
            table: "t".into(),
        };
        let resolved = Resolved::default();
        // Never described: the name as given.
        assert_eq!(resolved.get(&lower), lower);
        resolved.remember(&lower, &q.table, &[]);
        assert_eq!(resolved.get(&lower), q.table);
        let q = super::super::WindowQuery {
            table: lower.clone(),
            ..q
        };
        let stored = resolved.get(&q.table);
        assert!(
            window_page_sql(&q, &stored, false, None).contains(" FROM \"DB\".\"S\".\"T\" WHERE "),
            "{}",
            window_page_sql(&q, &stored, false, None)
        );
        assert!(null_key_rows_sql(&q, &stored).ends_with(" FROM \"DB\".\"S\".\"T\""));
        // An exact match maps the name to itself.
        resolved.remember(&lower, &lower, &[]);
        assert_eq!(resolved.get(&lower), lower);
    }

    #[test]
    fn null_key_rows_count_unrepresentable_timestamps_apart_from_null_keys() {
        let q = window(3, None, "TIMESTAMP_NTZ(9)");
        assert_eq!(
            null_key_rows_sql(&q, &q.table),
            "SELECT COUNT_IF(\"DOMAIN_USERID\" IS NULL AND \"UPDATED_AT\" IS NOT NULL) AS NULL_ENTITY, \
             COUNT_IF(\"UPDATED_AT\" IS NULL) AS NULL_TS, \
             COUNT_IF(\"DOMAIN_USERID\" IS NOT NULL AND \"UPDATED_AT\" IS NOT NULL \
             AND NOT (\"UPDATED_AT\" >= TO_TIMESTAMP_NTZ(-9223372036854775808, 9) \
             AND \"UPDATED_AT\" <= TO_TIMESTAMP_NTZ(9223372036854775807, 9))) AS OUT_OF_RANGE \
             FROM \"DB\".\"S\".\"T\""
        );
        let q = window(3, Some(0), "TIMESTAMP_TZ(9)");
        let sql = null_key_rows_sql(&q, &q.table);
        assert!(sql.contains(" 0 AS NULL_TS, "), "{sql}");
        assert!(
            sql.contains(
                "COUNT_IF(\"DOMAIN_USERID\" IS NOT NULL \
                 AND \"UPDATED_AT\" > TO_TIMESTAMP_TZ(0, 9) \
                 AND NOT (\"UPDATED_AT\" >= TO_TIMESTAMP_TZ(-9223372036854775808, 9) \
                 AND \"UPDATED_AT\" <= TO_TIMESTAMP_TZ(9223372036854775807, 9))) AS OUT_OF_RANGE"
            ),
            "{sql}"
        );
    }

    #[test]
    fn only_account_host_requests_follow_the_base_url() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert!(is_account_host(&url(
            "https://xy12345.eu-central-1.snowflakecomputing.com/queries/v1/query-request"
        )));
        assert!(is_account_host(&url(
            "https://ACME.SnowflakeComputing.COM/session"
        )));
        // Result chunks come from pre-signed cloud-storage URLs.
        for chunk in [
            "https://sfc-eu-ds1-customer-stage.s3.eu-central-1.amazonaws.com/x/0?X-Amz-Signature=abc",
            "https://acct.blob.core.windows.net/results/x?sig=abc",
            "https://storage.googleapis.com/bucket/x?X-Goog-Signature=abc",
            "https://snowflakecomputing.com.evil.example/x",
            "https://evilsnowflakecomputing.com/x",
            "http://127.0.0.1:8080/x",
        ] {
            assert!(!is_account_host(&url(chunk)), "{chunk}");
        }
    }

    #[test]
    fn urls_in_errors_lose_query_strings_and_fragments() {
        assert_eq!(
            redact_urls("https://h/p?X-Amz-Signature=abc"),
            "https://h/p?…"
        );
        assert_eq!(
            redact_urls(
                "error sending request for url (https://b.s3.amazonaws.com/r/0?X-Amz-Credential=k&X-Amz-Signature=s): \
                 timed out; also HTTP://h/a#tok=1 and https://h/plain."
            ),
            "error sending request for url (https://b.s3.amazonaws.com/r/0?…): \
             timed out; also HTTP://h/a?… and https://h/plain."
        );
        assert_eq!(redact_urls("no url here ü"), "no url here ü");
        let e = classify(SnowflakeApiError::ApiError(
            "000000".into(),
            "see https://h/p?token=secret".into(),
        ));
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn next_page_sql_continues_equal_timestamps_by_entity_after_the_cursor() {
        let sql = page_sql(
            &window(3, None, "TIMESTAMP_NTZ(9)"),
            Some(&(T + 1, "o'b\\".to_string())),
        );
        assert!(
            sql.ends_with(
                " AND (\"UPDATED_AT\" > TO_TIMESTAMP_NTZ(1700000000000000001, 9) \
                 OR (\"UPDATED_AT\" = TO_TIMESTAMP_NTZ(1700000000000000001, 9) \
                 AND COLLATE(\"DOMAIN_USERID\", '') > 'o''b\\\\')) \
                 ORDER BY \"UPDATED_AT\", COLLATE(\"DOMAIN_USERID\", '') LIMIT 3"
            ),
            "{sql}"
        );
    }

    #[test]
    fn zoned_timestamp_columns_compare_instants_of_their_own_type() {
        for (ty, function) in [
            ("TIMESTAMP_TZ(9)", "TO_TIMESTAMP_TZ("),
            ("TIMESTAMP_LTZ(3)", "TO_TIMESTAMP_LTZ("),
        ] {
            let sql = page_sql(&window(3, Some(0), ty), Some(&(0, "e".into())));
            assert_eq!(sql.matches(&format!("{function}0, 9)")).count(), 3, "{sql}");
            assert_eq!(sql.matches(function).count(), 5, "{sql}");
            assert!(
                !sql.contains("TIMESTAMP_NTZ") && !sql.contains("::"),
                "{sql}"
            );
        }
    }

    #[test]
    fn page_cursor_comes_from_every_chunk_not_the_last_row() {
        // Snowflake appends the inline chunk after the downloaded ones: the last
        // row of the last chunk is not the page's greatest key.
        let chunks = [
            chunk(&[(Some("b"), Some(T + 5)), (Some("a"), Some(T + 9))]),
            chunk(&[(Some("z"), Some(T + 1))]),
        ];
        assert_eq!(max_key(&chunks), Some((T + 9, "a".into())));
    }

    #[test]
    fn equal_timestamps_at_a_page_edge_continue_after_the_greatest_entity() {
        let chunks = [
            chunk(&[(Some("a"), Some(T)), (Some("c"), Some(T))]),
            chunk(&[(Some("b"), Some(T))]),
        ];
        assert_eq!(max_key(&chunks), Some((T, "c".into())));
    }

    #[test]
    fn entities_order_as_utf8_bytes_like_the_warehouse() {
        // "Z" < "z" < "ü" in UTF-8 byte order, as Snowflake compares without a collation.
        let chunks = [chunk(&[
            (Some("ü"), Some(T)),
            (Some("Z"), Some(T)),
            (Some("z"), Some(T)),
        ])];
        assert_eq!(max_key(&chunks), Some((T, "ü".into())));
    }

    #[test]
    fn future_rows_still_move_the_cursor_past_them() {
        // The cursor is about paging, not the watermark: a row stamped days
        // ahead is read once and paged past like any other.
        let future = T + 3 * 86_400 * 1_000_000_000;
        let chunks = [chunk(&[(Some("f"), Some(future)), (Some("a"), Some(T))])];
        assert_eq!(max_key(&chunks), Some((future, "f".into())));
    }

    #[test]
    fn unkeyed_rows_never_become_the_cursor() {
        let chunks = [chunk(&[
            (None, Some(T + 9)),
            (Some("x"), None),
            (Some("a"), Some(T)),
        ])];
        assert_eq!(max_key(&chunks), Some((T, "a".into())));
        assert_eq!(max_key(&[chunk(&[(None, Some(T))])]), None);
    }

    #[test]
    fn paging_stops_after_a_short_or_empty_page_and_continues_after_a_full_one() {
        let key = Some((T, "a".to_string()));
        assert!(after_page(0, 3, None, "TS").unwrap().is_none());
        assert_eq!(
            after_page(2, 3, key.clone(), "TS").unwrap(),
            Some((key.clone(), true))
        );
        assert_eq!(
            after_page(3, 3, key.clone(), "TS").unwrap(),
            Some((key, false))
        );
        // A short page of unrepresentable times ends the window; a full one cannot be paged past.
        assert_eq!(after_page(2, 3, None, "TS").unwrap(), Some((None, true)));
        let e = after_page(3, 3, None, "TS").unwrap_err();
        assert!(!e.is_retryable() && e.to_string().contains("TS"), "{e}");
    }
}
