//! Snowflake backend on the `snowflake-api` crate (REST + Arrow).
//!
//! Promises the [`Warehouse`] contract: a window is read with one statement
//! (`SELECT entity, ts, fields FROM t WHERE <keyed, representable, in the
//! window>`, no `ORDER BY`, no `LIMIT`: callers rely on no order), whose
//! result is streamed (`results`): the inline part, then the result chunks,
//! at most [`results::CHUNKS_IN_FLIGHT`] downloading at once, each decoded
//! and cut into pages of at most `page_rows` rows as it arrives. So a run
//! costs a constant number of statements (describe, now, the NULL-key count,
//! the window), and the warehouse scans the window twice (the count and the
//! read) whatever the page size. Rows with a NULL entity or timestamp, or a timestamp [`Nanos`]
//! cannot hold, are left out of pages and counted by `null_key_rows`.
//! Timestamp literals are numbers (`TO_TIMESTAMP_NTZ(<nanos>, 9)`, see
//! [`sql::timestamp_literal`]), so session parameters cannot change them.
//! Every statement is counted ([`super::count_statement`]).
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
//! credentials there); the crate holds whole results in memory, so the
//! window's statement is sent by us in the crate's session (`results`); the
//! session is rebuilt after any transient failure (a session expired in the
//! middle of a window fails the run, retryable: the re-read is newest-wins),
//! since the crate never logs in again by itself. Assumes the crate's `log` output is kept at info or above by the
//! logging setup (at debug it prints session tokens).

mod results;
mod statements;

pub use statements::settle_aborts;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef};
use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
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

/// The HTTP client handed to the crate (and used for the window's statement and
/// its chunks): [`results::CaptureSession`] (keeps the session token the crate
/// sends), [`statements::LongStatements`] (polls handed-off statements, cancels
/// abandoned ones), then [`BaseUrl`] when a base URL is configured. Aborts go
/// out through the same client, without the polling.
fn http_client(
    http: reqwest::Client,
    base_url: Option<&url::Url>,
    seen: Arc<results::SessionSeen>,
) -> ClientWithMiddleware {
    let with_base = |builder: reqwest_middleware::ClientBuilder| match base_url {
        Some(base) => builder.with(BaseUrl(base.clone())),
        None => builder,
    };
    let aborts = with_base(reqwest_middleware::ClientBuilder::new(http.clone())).build();
    with_base(
        reqwest_middleware::ClientBuilder::new(http)
            .with(results::CaptureSession(seen))
            .with(statements::LongStatements::new(aborts)),
    )
    .build()
}

/// One login: the crate's API, the HTTP client it was given, and what its
/// statements show of the session.
struct Session {
    api: SnowflakeApi,
    client: ClientWithMiddleware,
    seen: Arc<results::SessionSeen>,
}

/// How much longer than `warehouse.query_timeout` one HTTP request may take:
/// a statement's `query_timeout` always fires first.
const HTTP_SLACK: Duration = Duration::from_millis(500);

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
    session: Mutex<Option<Arc<Session>>>,
    /// The stored name `describe` found for each requested table name.
    resolved: Resolved,
    /// `warehouse.ntz_time_zone`.
    ntz_time_zone: super::zone::Tz,
}

/// Requested table name -> the name that matched in the warehouse.
#[derive(Default)]
struct Resolved(std::sync::Mutex<HashMap<TableRef, TableRef>>);

impl Resolved {
    fn remember(&self, requested: &TableRef, stored: &TableRef) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(requested.clone(), stored.clone());
    }

    /// The stored name of `requested`, or `requested` itself if it was never described.
    fn get(&self, requested: &TableRef) -> TableRef {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(requested)
            .cloned()
            .unwrap_or_else(|| requested.clone())
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
            session: Mutex::new(None),
            resolved: Resolved::default(),
            ntz_time_zone: cfg.ntz_zone()?,
        })
    }

    fn build_session(&self) -> Result<Session> {
        let l = &self.login;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(l.timeout))
            // A statement's own bound is the `query_timeout` around it, which
            // says so and settles its cancellation; this one, a moment later,
            // bounds every other request (a result chunk's GET).
            .timeout(l.timeout + HTTP_SLACK)
            .gzip(true)
            .build()
            .map_err(|e| WarehouseError::Permanent(format!("HTTP client: {e}")))?;
        let seen = Arc::new(results::SessionSeen::default());
        let client = http_client(http, l.base_url.as_ref(), seen.clone());
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
        let api = SnowflakeApiBuilder::new(auth)
            .with_client(client.clone())
            .build()
            .map_err(classify)?;
        Ok(Session { api, client, seen })
    }

    async fn session(&self) -> Result<Arc<Session>> {
        let mut guard = self.session.lock().await;
        if let Some(session) = guard.as_ref() {
            return Ok(session.clone());
        }
        let session = Arc::new(self.build_session()?);
        *guard = Some(session.clone());
        Ok(session)
    }

    /// After a failed statement of `session`: a transient failure lets the
    /// cancellation of an abandoned statement go out before the error does (a
    /// one-shot command may exit right after it), and drops the session so the
    /// next statement logs in again.
    async fn failed(&self, session: &Arc<Session>, outcome: WarehouseError) -> WarehouseError {
        if outcome.is_retryable() {
            settle_aborts(ABORT_WAIT.min(self.login.timeout)).await;
            let mut guard = self.session.lock().await;
            if guard.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)) {
                *guard = None;
            }
        }
        outcome
    }

    fn timed_out(&self) -> WarehouseError {
        WarehouseError::Transient(format!(
            "Snowflake did not answer within warehouse.query_timeout ({})",
            humantime::format_duration(self.login.timeout)
        ))
    }

    /// Runs one statement with a timeout (polling it past Snowflake's answer
    /// window, see `statements`); after a transient failure the session is
    /// dropped so the next statement logs in again. A statement abandoned at
    /// the timeout is cancelled, and the call waits a moment for that.
    pub async fn exec(&self, sql: &str) -> Result<QueryResult> {
        let session = self.session().await?;
        super::count_statement();
        // Bound to a variable so the statement's future (and its abort guard)
        // is dropped here, before waiting for the abort.
        let answered = tokio::time::timeout(self.login.timeout, session.api.exec(sql)).await;
        let outcome = match answered {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) => classify(e),
            Err(_) => self.timed_out(),
        };
        Err(self.failed(&session, outcome).await)
    }

    /// Sends the window's one statement in the crate's session (logging in
    /// through the crate first when this session has sent nothing yet) and
    /// reads its answer: the inline rows and the chunks still to fetch.
    async fn read_window(&self, q: &super::WindowQuery) -> Result<results::Answer> {
        let text = window_sql(q, &self.resolved.get(&q.table));
        let mut session = self.session().await?;
        if !session.seen.is_known() {
            self.exec("SELECT 1").await?;
            session = self.session().await?;
        }
        super::count_statement();
        let answered = tokio::time::timeout(
            self.login.timeout,
            results::execute(&session.client, &session.seen, &text),
        )
        .await;
        let outcome = match answered {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) => e,
            Err(_) => self.timed_out(),
        };
        Err(self.failed(&session, outcome).await)
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

/// The SQL of the window of `table` (the stored name of `q.table`): every row
/// with an entity and a representable timestamp inside the window, in no
/// particular order.
fn window_sql(q: &super::WindowQuery, table: &TableRef) -> String {
    let kind = TimestampKind::of(&q.timestamp_type);
    let e = sql::ident(&q.entity_column);
    let ts = sql::ident(&q.timestamp_column);
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
    text
}

#[async_trait]
impl Warehouse for SnowflakeWarehouse {
    async fn describe(&self, table: &TableRef) -> Result<Vec<Column>> {
        if let Some(cols) = self.describe_exact(table).await? {
            self.resolved.remember(table, table);
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
                self.resolved.remember(table, &upper);
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
        Ok(NullKeyRows::from_text(rows.first().map(Vec::as_slice)))
    }

    fn pages<'a>(&'a self, q: &'a super::WindowQuery) -> BoxStream<'a, Result<Page>> {
        let page_rows = q.page_rows;
        stream::once(self.read_window(q))
            .map_ok(|answer| {
                let results::Answer {
                    inline,
                    chunks,
                    headers,
                    client,
                } = answer;
                // The inline part, then every chunk, fetched by tasks of their
                // own at most CHUNKS_IN_FLIGHT at once, in the order listed.
                stream::once(async move { Ok(inline) }).chain(
                    stream::iter(chunks)
                        .map(move |c| results::Fetch::start(client.clone(), c, headers.clone()))
                        .buffered(results::CHUNKS_IN_FLIGHT),
                )
            })
            .try_flatten()
            .map_ok(move |batches| {
                stream::iter(super::split_pages(batches, page_rows)).map(Ok::<_, WarehouseError>)
            })
            .try_flatten()
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
/// scale 0; a collation (`COLLATE 'en-ci'`) is ignored; a name not listed here (GEOGRAPHY, VECTOR) is
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
    // A collation (`VARCHAR(16777216) COLLATE 'en-ci'`) changes comparisons,
    // never values: the window statement neither orders nor compares entities.
    let t = match t.to_ascii_uppercase().find(" COLLATE ") {
        Some(at) => t[..at].trim_end(),
        None => t,
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

    // --- the window's statement, pure ---------------------------------------

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

    const T: Nanos = 1_700_000_000_000_000_000;

    #[test]
    fn one_statement_reads_the_whole_window_in_no_order_whatever_the_page_size() {
        for page_rows in [3, 1_000_000] {
            let q = window(page_rows, Some(T), "TIMESTAMP_NTZ(9)");
            assert_eq!(
                window_sql(&q, &q.table),
                "SELECT \"DOMAIN_USERID\", \"UPDATED_AT\", \"A\" FROM \"DB\".\"S\".\"T\" \
                 WHERE \"DOMAIN_USERID\" IS NOT NULL \
                 AND \"UPDATED_AT\" >= TO_TIMESTAMP_NTZ(-9223372036854775808, 9) \
                 AND \"UPDATED_AT\" <= TO_TIMESTAMP_NTZ(9223372036854775807, 9) \
                 AND \"UPDATED_AT\" > TO_TIMESTAMP_NTZ(1700000000000000000, 9)"
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
            ("VARCHAR(16777216) COLLATE 'en-ci'", TypeKind::Text),
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
    fn the_window_leaves_out_timestamps_nanos_cannot_hold_even_on_a_full_read() {
        let q = window(3, None, "TIMESTAMP_NTZ(9)");
        let sql = window_sql(&q, &q.table);
        // The bounds are exactly the first and last representable instants.
        assert!(
            sql.ends_with(
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
        resolved.remember(&lower, &q.table);
        assert_eq!(resolved.get(&lower), q.table);
        let q = super::super::WindowQuery {
            table: lower.clone(),
            ..q
        };
        let stored = resolved.get(&q.table);
        assert!(
            window_sql(&q, &stored).contains(" FROM \"DB\".\"S\".\"T\" WHERE "),
            "{}",
            window_sql(&q, &stored)
        );
        assert!(null_key_rows_sql(&q, &stored).ends_with(" FROM \"DB\".\"S\".\"T\""));
        // An exact match maps the name to itself.
        resolved.remember(&lower, &lower);
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
    fn zoned_timestamp_columns_compare_instants_of_their_own_type() {
        for (ty, function) in [
            ("TIMESTAMP_TZ(9)", "TO_TIMESTAMP_TZ("),
            ("TIMESTAMP_LTZ(3)", "TO_TIMESTAMP_LTZ("),
        ] {
            let q = window(3, Some(0), ty);
            let sql = window_sql(&q, &q.table);
            assert_eq!(sql.matches(&format!("{function}0, 9)")).count(), 1, "{sql}");
            assert_eq!(sql.matches(function).count(), 3, "{sql}");
            assert!(
                !sql.contains("TIMESTAMP_NTZ") && !sql.contains("::"),
                "{sql}"
            );
        }
    }
}
