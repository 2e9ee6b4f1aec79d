//! PostgreSQL backend on `tokio-postgres` (also for Redshift-style SQL sources).
//!
//! Promises the [`Warehouse`] contract: a window is read with one statement
//! (`SELECT entity, ts, fields FROM schema.table WHERE <keyed, representable,
//! in the window>`, no `ORDER BY`, no `LIMIT`), its bounds bound as
//! parameters (binary timestamps, so no `DateStyle` or `TimeZone` changes
//! them), its rows fetched in binary and streamed: `tokio-postgres` reads the
//! socket only as fast as rows are consumed, so the server waits on a full
//! socket and memory holds about one page however large the window. Rows
//! are cut into pages of at most `page_rows` rows of Arrow arrays in the
//! shapes `decode` reads (see [`column_type`] for the mapping). A run costs a
//! constant number of statements (describe, now, the NULL-key count, the
//! window); the server scans the window twice (the count and the read).
//! Rows with a NULL entity or timestamp, or a timestamp [`Nanos`] cannot
//! hold, are left out of pages and counted by `null_key_rows`.
//!
//! Connections: one, kept, for the short statements (describe, now, count,
//! ping), with the server's `statement_timeout` set to `query_timeout` at
//! connect; and one per window read, without a server timeout (a streamed
//! read lasts as long as its consumer takes) but with `query_timeout` between
//! pages on the client. Every statement is bounded client-side by
//! `query_timeout`; a statement abandoned before its end (a timeout, a
//! shutdown, a dropped run) is cancelled on the server (a cancel request on
//! its own connection, [`finish`](Warehouse::finish) waits for those) and its
//! connection is not used again. After a transient failure the kept
//! connection is dropped, so the next statement connects anew.
//!
//! Names resolve like Postgres' unquoted identifiers: an exact match of
//! schema and table first, else the lower-case form, else the one
//! case-insensitive match; `describe` remembers the stored names and the
//! reads use them (quoted). A batch source's `database`, when given, must
//! be the URL's database (Postgres reads one database per connection).
//!
//! Secrets: the URL (with its password) is only handed to `tokio-postgres`;
//! errors and `Debug` show host, port, database and user, never the URL.

use std::collections::HashMap;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};
use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::Mutex;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{CancelToken, Client, RowStream};

use super::sql::TimestampKind;
use super::{
    Column, ColumnType, Nanos, NullKeyRows, Page, Result, TableRef, TypeKind, Warehouse,
    WarehouseError, WindowQuery,
};
use crate::config::PostgresConfig;

mod rows;
use rows::{be_i64, field_of, Builder, Raw};

/// Microseconds from 1970-01-01 to 2000-01-01, Postgres' epoch.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
/// The `application_name` connections use unless the URL sets one, so
/// operators can find (and tests can watch) the daemon's statements.
pub const APPLICATION_NAME: &str = "materializer";

/// The URL as `tokio-postgres` reads it, checked: a `postgres://` or
/// `postgresql://` URL (or key=value form) naming a host and a database.
/// Errors never quote the URL.
pub fn parse_url(url: &str) -> anyhow::Result<tokio_postgres::Config> {
    let config = tokio_postgres::Config::from_str(url.trim()).map_err(|e| {
        anyhow::anyhow!(
            "warehouse.url: not a postgres://user[:password]@host:port/dbname URL ({})",
            // Names an option (`invalid value for option `port``), never a value.
            e.to_string().lines().next().unwrap_or("unreadable")
        )
    })?;
    if config.get_hosts().is_empty() {
        anyhow::bail!("warehouse.url: names no host");
    }
    if config.get_dbname().is_none() {
        anyhow::bail!("warehouse.url: names no database (postgres://user@host:port/dbname)");
    }
    if config.get_user().is_none() {
        anyhow::bail!("warehouse.url: names no user (postgres://user@host:port/dbname)");
    }
    Ok(config)
}

/// TLS as `sslmode` asks: `require` encrypts and verifies the server's
/// certificate against the system's roots; `disable` and `prefer` (the
/// default) connect in plain text (`prefer` does not try TLS: a server's
/// self-signed certificate would otherwise fail a connection that `prefer`
/// promises to make).
#[derive(Clone)]
enum Tls {
    Plain,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

fn tls_for(mode: SslMode) -> anyhow::Result<Tls> {
    if mode != SslMode::Require {
        return Ok(Tls::Plain);
    }
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        anyhow::bail!("warehouse.url: sslmode=require, but the system has no root certificates");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| anyhow::anyhow!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(
        config,
    )))
}

/// One connection; its driver task ends when the client is dropped.
struct Conn {
    client: Client,
}

pub struct PostgresWarehouse {
    /// For short statements: the server's `statement_timeout` is `query_timeout`.
    control: tokio_postgres::Config,
    /// For window reads: no server timeout (see the module doc).
    reader: tokio_postgres::Config,
    tls: Tls,
    timeout: Duration,
    /// The URL's database, for checking a batch source's `database`.
    database: String,
    /// `host:port/dbname as user`, for messages.
    shown: String,
    conn: Mutex<Option<Arc<Conn>>>,
    /// Requested table -> stored (schema, table) names, from `describe`.
    resolved: std::sync::Mutex<HashMap<TableRef, (String, String)>>,
    ntz_time_zone: super::zone::Tz,
}

impl std::fmt::Debug for PostgresWarehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresWarehouse")
            .field("server", &self.shown)
            .finish_non_exhaustive()
    }
}

/// Cancel requests still on their way (see [`Warehouse::finish`]).
static CANCELS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Sends a cancel request for the statement running on `token`'s
/// connection, in the background (a `Drop` cannot wait).
fn cancel_in_background(token: CancelToken, tls: Tls) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    CANCELS_IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    handle.spawn(async move {
        let sent = tokio::time::timeout(Duration::from_secs(5), async {
            match tls {
                Tls::Plain => token.cancel_query(tokio_postgres::NoTls).await,
                Tls::Rustls(t) => token.cancel_query(t).await,
            }
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::warn!("could not cancel an abandoned Postgres statement; the server's statement_timeout ends it");
        }
        CANCELS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    });
}

/// Cancels the statement of its connection when dropped before [`Self::done`].
struct CancelOnDrop {
    token: Option<CancelToken>,
    tls: Tls,
}

impl CancelOnDrop {
    fn done(&mut self) {
        self.token = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            cancel_in_background(token, self.tls.clone());
        }
    }
}

impl PostgresWarehouse {
    /// A client for `cfg` (reads the URL now; connects on first use).
    pub fn new(cfg: &PostgresConfig) -> anyhow::Result<Self> {
        let url = cfg.url()?;
        let mut base = parse_url(url.expose())?;
        let tls = tls_for(base.get_ssl_mode())?;
        if base.get_application_name().is_none() {
            base.application_name(APPLICATION_NAME);
        }
        base.connect_timeout(cfg.query_timeout.min(Duration::from_secs(10)));
        let database = base.get_dbname().unwrap_or_default().to_string();
        let host = match base.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => String::new(),
        };
        let port = base.get_ports().first().copied().unwrap_or(5432);
        let shown = format!(
            "{host}:{port}/{database} as {}",
            base.get_user().unwrap_or_default()
        );
        // Options ride in the startup packet: no statement, and nothing a
        // role's defaults can override later. The session zone is UTC so
        // text forms in messages read the same everywhere (rows are binary).
        let options = |statement_timeout_ms: u128| {
            format!("-c statement_timeout={statement_timeout_ms} -c TimeZone=UTC")
        };
        let mut control = base.clone();
        control.options(options(cfg.query_timeout.as_millis().max(1)));
        let mut reader = base;
        reader.options(options(0));
        Ok(PostgresWarehouse {
            control,
            reader,
            tls,
            timeout: cfg.query_timeout,
            database,
            shown,
            conn: Mutex::new(None),
            resolved: std::sync::Mutex::new(HashMap::new()),
            ntz_time_zone: cfg.ntz_zone()?,
        })
    }

    async fn connect(&self, config: &tokio_postgres::Config) -> Result<Client> {
        let connected = tokio::time::timeout(self.timeout, async {
            match &self.tls {
                Tls::Plain => config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map(|(client, conn)| {
                        tokio::spawn(conn);
                        client
                    }),
                Tls::Rustls(t) => config.connect(t.clone()).await.map(|(client, conn)| {
                    tokio::spawn(conn);
                    client
                }),
            }
        })
        .await;
        match connected {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(self.classify("connect", e)),
            Err(_) => Err(self.timed_out("connect")),
        }
    }

    async fn control(&self) -> Result<Arc<Conn>> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| !c.client.is_closed()) {
            return Ok(c.clone());
        }
        let conn = Arc::new(Conn {
            client: self.connect(&self.control).await?,
        });
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the kept connection if it is still `conn`.
    async fn drop_control(&self, conn: &Arc<Conn>) {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *guard = None;
        }
    }

    fn timed_out(&self, what: &str) -> WarehouseError {
        WarehouseError::Transient(format!(
            "Postgres warehouse ({}) did not answer {what} within warehouse.query_timeout ({})",
            self.shown,
            humantime::format_duration(self.timeout)
        ))
    }

    fn classify(&self, what: &str, e: tokio_postgres::Error) -> WarehouseError {
        // The server's statement_timeout is query_timeout too, so it may end
        // the statement a moment before the client's timer does (a loaded
        // machine): the same timeout, reported the same way.
        let statement_timeout = e.as_db_error().is_some_and(|db| {
            db.code().code() == "57014" && db.message().contains("statement timeout")
        });
        if statement_timeout {
            return self.timed_out(what);
        }
        classify(&self.shown, what, &e)
    }

    /// Runs one short statement on the kept connection, bounded by
    /// `query_timeout`; a statement abandoned at the timeout is cancelled.
    async fn rows(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let conn = self.control().await?;
        super::count_statement();
        let mut guard = CancelOnDrop {
            token: Some(conn.client.cancel_token()),
            tls: self.tls.clone(),
        };
        let answered = tokio::time::timeout(self.timeout, conn.client.query(sql, params)).await;
        let outcome = match answered {
            Ok(Ok(rows)) => {
                guard.done();
                return Ok(rows);
            }
            Ok(Err(e)) => {
                guard.done();
                self.classify(what, e)
            }
            // The guard cancels the statement on the server as it drops.
            Err(_) => self.timed_out(what),
        };
        drop(guard);
        if outcome.is_retryable() {
            self.drop_control(&conn).await;
        }
        Err(outcome)
    }

    /// The stored (schema, table) of `table`, or `requested` as given.
    fn stored(&self, table: &TableRef) -> (String, String) {
        self.resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(table)
            .cloned()
            .unwrap_or_else(|| {
                (
                    table.schema.clone().unwrap_or_else(|| "public".into()),
                    table.table.clone(),
                )
            })
    }

    fn check_database(&self, table: &TableRef) -> Result<()> {
        match &table.database {
            Some(db) if !db.eq_ignore_ascii_case(&self.database) => {
                Err(WarehouseError::Permanent(format!(
                    "table {table}: database {db} is not the database of warehouse.url ({}); \
                     Postgres reads one database per connection",
                    self.database
                )))
            }
            _ => Ok(()),
        }
    }

    /// Opens a connection of its own and starts the window's statement;
    /// returns the row stream and the guard that cancels it if dropped early.
    async fn start_window(&self, q: &WindowQuery) -> Result<(RowStream, CancelOnDrop, Client)> {
        let (schema, table) = self.stored(&q.table);
        let kind = TimestampKind::of(&q.timestamp_type);
        let (text, params) = window_sql(q, &schema, &table, kind);
        let client = self.connect(&self.reader).await?;
        super::count_statement();
        let guard = CancelOnDrop {
            token: Some(client.cancel_token()),
            tls: self.tls.clone(),
        };
        let params: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let started =
            tokio::time::timeout(self.timeout, client.query_raw(text.as_str(), params)).await;
        match started {
            Ok(Ok(rows)) => Ok((rows, guard, client)),
            Ok(Err(e)) => {
                let mut guard = guard;
                guard.done();
                Err(self.classify("the window's statement", e))
            }
            Err(_) => Err(self.timed_out("the window's statement")),
        }
    }
}

/// Sorts `tokio-postgres` errors into retryable and permanent; the text names
/// the server (never the URL) and the server's message.
fn classify(shown: &str, what: &str, e: &tokio_postgres::Error) -> WarehouseError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let mut text = format!(
            "Postgres warehouse ({shown}) refused {what}: {} ({code})",
            db.message()
        );
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; {detail}"));
        }
        // Classes a person must fix: syntax/access (42: missing table or
        // column, permissions), data (22), authorization (28), catalog and
        // schema names (3D, 3F), feature not supported (0A).
        let permanent = ["42", "22", "28", "3D", "3F", "0A"]
            .iter()
            .any(|class| code.starts_with(class));
        return if permanent {
            WarehouseError::Permanent(text)
        } else {
            WarehouseError::Transient(text)
        };
    }
    // Without a server code: the connection (refused, reset, closed) or the protocol.
    let mut text = format!("Postgres warehouse ({shown}) failed {what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s = s.to_string();
        if !text.contains(&s) {
            text.push_str(&format!(": {s}"));
        }
        source = s_source(source);
    }
    WarehouseError::Transient(text)
}

fn s_source<'a>(
    e: Option<&'a (dyn std::error::Error + 'static)>,
) -> Option<&'a (dyn std::error::Error + 'static)> {
    e.and_then(std::error::Error::source)
}

/// `"name"` with embedded quotes doubled.
fn ident(name: &str) -> String {
    super::sql::ident(name)
}

/// A bound timestamp: microseconds since 1970-01-01 (UTC wall time for
/// `timestamp`, the instant for `timestamptz`), sent in binary.
#[derive(Debug, Clone, Copy)]
struct Micros(i64);

impl ToSql for Micros {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&(self.0 - PG_EPOCH_MICROS).to_be_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::TIMESTAMP | Type::TIMESTAMPTZ)
    }

    tokio_postgres::types::to_sql_checked!();
}

/// The first and last microsecond [`Nanos`] can hold.
const FIRST_MICROS: i64 = Nanos::MIN / 1000; // rounds toward zero: the first whole microsecond inside
const LAST_MICROS: i64 = Nanos::MAX / 1000;

/// The window's SQL and parameters: `$1`/`$2` the representable bounds,
/// `$3` the lower bound of the window (exclusive) when there is one.
fn window_sql(
    q: &WindowQuery,
    schema: &str,
    table: &str,
    kind: TimestampKind,
) -> (String, Vec<Micros>) {
    let cast = cast_of(kind);
    let e = ident(&q.entity_column);
    let ts = ident(&q.timestamp_column);
    let mut cols = vec![e.clone(), ts.clone()];
    cols.extend(q.field_columns.iter().map(|c| ident(c)));
    let mut text = format!(
        "SELECT {} FROM {}.{} WHERE {e} IS NOT NULL AND {ts} >= $1::{cast} AND {ts} <= $2::{cast}",
        cols.join(", "),
        ident(schema),
        ident(table),
    );
    let mut params = vec![Micros(FIRST_MICROS), Micros(LAST_MICROS)];
    if let Some(since) = q.since {
        text += &format!(" AND {ts} > $3::{cast}");
        params.push(Micros(since.div_euclid(1000)));
    }
    (text, params)
}

fn cast_of(kind: TimestampKind) -> &'static str {
    match kind {
        TimestampKind::Ntz => "timestamp",
        TimestampKind::Ltz | TimestampKind::Tz => "timestamptz",
    }
}

/// The count of rows pages leave out (see [`Warehouse::null_key_rows`]);
/// `COUNT(CASE ...)` rather than `FILTER`, which Redshift lacks.
fn null_key_rows_sql(
    q: &WindowQuery,
    schema: &str,
    table: &str,
    kind: TimestampKind,
) -> (String, Vec<Micros>) {
    let cast = cast_of(kind);
    let e = ident(&q.entity_column);
    let ts = ident(&q.timestamp_column);
    let mut params = vec![Micros(FIRST_MICROS), Micros(LAST_MICROS)];
    let in_window = match q.since {
        Some(s) => {
            params.push(Micros(s.div_euclid(1000)));
            format!("{ts} > $3::{cast}")
        }
        None => format!("{ts} IS NOT NULL"),
    };
    let null_ts = if q.since.is_none() {
        format!("COUNT(CASE WHEN {ts} IS NULL THEN 1 END)")
    } else {
        "0::bigint".to_string()
    };
    let text = format!(
        "SELECT COUNT(CASE WHEN {e} IS NULL AND {in_window} THEN 1 END), {null_ts}, \
         COUNT(CASE WHEN {e} IS NOT NULL AND {in_window} \
         AND NOT ({ts} >= $1::{cast} AND {ts} <= $2::{cast}) THEN 1 END) \
         FROM {}.{}",
        ident(schema),
        ident(table)
    );
    (text, params)
}

/// A Postgres type, as `describe` reads it from the catalog (`format_type`
/// for the name; the base type's `typname` and `typtype`; for arrays the
/// element's), mapped once:
///
/// | Postgres | [`TypeKind`] | page column |
/// |---|---|---|
/// | smallint, integer, bigint, oid | Number (scale 0) | Int64 |
/// | numeric(p,s) / numeric | Number (scale s / 0) | Decimal128 at the page's largest scale (Float64 for a page holding NaN, ±inf or more than 38 digits) |
/// | real, double precision | Float | Float64 |
/// | boolean | Boolean | Boolean |
/// | text, varchar, char, name, uuid, citext, enums | Text | Utf8 |
/// | bytea | Binary | Binary |
/// | timestamp | Timestamp (NTZ) | Timestamp(µs) |
/// | timestamptz | Timestamp (TZ) | Timestamp(µs, UTC) |
/// | date | Date | Date32 |
/// | json, jsonb | Variant | Utf8 JSON text |
/// | T[] (one dimension) | Array(T) | List of T's column |
/// | time, interval, inet, ... | Time / Other | (refused by `check`) |
pub fn column_type(
    display: &str,
    typname: &str,
    typtype: &str,
    element: Option<(&str, &str)>,
) -> ColumnType {
    if let Some((elem, elem_typtype)) = element {
        let elem_display = display.strip_suffix("[]").unwrap_or(elem);
        return ColumnType::new(
            TypeKind::Array(Some(Box::new(column_type(
                elem_display,
                elem,
                elem_typtype,
                None,
            )))),
            display,
        );
    }
    let kind = match typname {
        "int2" | "int4" | "int8" | "oid" => TypeKind::Number { scale: 0 },
        "numeric" => TypeKind::Number {
            scale: display
                .split_once(',')
                .and_then(|(_, s)| s.trim_end_matches(')').trim().parse().ok())
                .unwrap_or(0),
        },
        "float4" | "float8" => TypeKind::Float,
        "bool" => TypeKind::Boolean,
        "text" | "varchar" | "bpchar" | "name" | "char" | "uuid" | "citext" => TypeKind::Text,
        _ if typtype == "e" => TypeKind::Text,
        "bytea" => TypeKind::Binary,
        "timestamp" => TypeKind::Timestamp(TimestampKind::Ntz),
        "timestamptz" => TypeKind::Timestamp(TimestampKind::Tz),
        "date" => TypeKind::Date,
        "time" | "timetz" => TypeKind::Time,
        "json" | "jsonb" => TypeKind::Variant,
        _ => TypeKind::Other,
    };
    ColumnType::new(kind, display)
}

/// The catalog query of `describe`: every column of the tables whose schema
/// and name match case-insensitively (the caller picks the match), in
/// column order. Tables, views, materialized views, partitioned and foreign
/// tables; `format_type` names types as Postgres prints them.
const DESCRIBE_SQL: &str = "SELECT n.nspname::text, c.relname::text, a.attname::text, \
     format_type(a.atttypid, a.atttypmod), t.typname::text, t.typtype::text, \
     et.typname::text, et.typtype::text \
     FROM pg_catalog.pg_attribute a \
     JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
     LEFT JOIN pg_catalog.pg_type et ON et.oid = t.typelem AND t.typcategory = 'A' \
     WHERE a.attnum > 0 AND NOT a.attisdropped \
     AND c.relkind IN ('r', 'v', 'm', 'p', 'f') \
     AND lower(n.nspname) = lower(COALESCE($1::text, current_schema())) \
     AND lower(c.relname) = lower($2::text) \
     ORDER BY n.nspname, c.relname, a.attnum";

/// Of the (schema, table) pairs that matched case-insensitively: the exact
/// one, else the lower-case form (what an unquoted name means), else the
/// only one; `None` when nothing or several equally good ones matched.
fn pick_table<'a>(
    found: &'a [(String, String)],
    schema: Option<&str>,
    table: &str,
) -> Option<&'a (String, String)> {
    let exact = |s: &str, t: &str| found.iter().find(|(fs, ft)| fs == s && ft == t);
    let schema_matches = |fs: &str| schema.is_none_or(|s| fs == s || fs == s.to_lowercase());
    if let Some(s) = schema {
        if let Some(hit) = exact(s, table) {
            return Some(hit);
        }
        if let Some(hit) = exact(&s.to_lowercase(), &table.to_lowercase()) {
            return Some(hit);
        }
    }
    if let Some(hit) = found
        .iter()
        .find(|(fs, ft)| schema_matches(fs) && (ft == table || *ft == table.to_lowercase()))
    {
        return Some(hit);
    }
    match found {
        [only] => Some(only),
        _ => None,
    }
}

#[async_trait]
impl Warehouse for PostgresWarehouse {
    async fn describe(&self, table: &TableRef) -> Result<Vec<Column>> {
        self.check_database(table)?;
        let rows = self
            .rows(
                "describe",
                DESCRIBE_SQL,
                &[&table.schema.as_deref(), &table.table.as_str()],
            )
            .await?;
        let text = |r: &tokio_postgres::Row, i: usize| -> Option<String> { r.get(i) };
        let mut tables: Vec<(String, String)> = Vec::new();
        for r in &rows {
            let key = (
                text(r, 0).unwrap_or_default(),
                text(r, 1).unwrap_or_default(),
            );
            if !tables.contains(&key) {
                tables.push(key);
            }
        }
        let Some((schema, name)) =
            pick_table(&tables, table.schema.as_deref(), &table.table).cloned()
        else {
            let why = if tables.is_empty() {
                "does not exist or is not visible to the configured user".to_string()
            } else {
                format!(
                    "matches several tables that differ only in case ({}); name one exactly",
                    tables
                        .iter()
                        .map(|(s, t)| format!("{s}.{t}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(WarehouseError::Permanent(format!("table {table} {why}")));
        };
        let columns = rows
            .iter()
            .filter(|r| {
                text(r, 0).as_deref() == Some(&schema) && text(r, 1).as_deref() == Some(&name)
            })
            .map(|r| {
                let elem = text(r, 6);
                let elem_typtype = text(r, 7).unwrap_or_default();
                Column {
                    name: text(r, 2).unwrap_or_default(),
                    data_type: column_type(
                        &text(r, 3).unwrap_or_default(),
                        &text(r, 4).unwrap_or_default(),
                        &text(r, 5).unwrap_or_default(),
                        elem.as_deref().map(|e| (e, elem_typtype.as_str())),
                    ),
                }
            })
            .collect();
        self.resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(table.clone(), (schema, name));
        Ok(columns)
    }

    async fn now(&self) -> Result<Nanos> {
        let rows = self.rows("SELECT now()", "SELECT now()", &[]).await?;
        let micros = rows
            .first()
            .and_then(|r| r.try_get::<_, Option<Raw>>(0).ok().flatten())
            .and_then(|raw| be_i64(raw.0))
            .ok_or_else(|| WarehouseError::Transient("SELECT now() returned no time".into()))?;
        Ok((micros + PG_EPOCH_MICROS).saturating_mul(1000))
    }

    async fn null_key_rows(&self, q: &WindowQuery) -> Result<NullKeyRows> {
        let (schema, table) = self.stored(&q.table);
        let (text, params) =
            null_key_rows_sql(q, &schema, &table, TimestampKind::of(&q.timestamp_type));
        let params: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let rows = self.rows("the NULL-key count", &text, &params).await?;
        let num = |i: usize| -> u64 {
            rows.first()
                .and_then(|r| r.try_get::<_, Option<i64>>(i).ok().flatten())
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0)
        };
        Ok(NullKeyRows {
            null_entity: num(0),
            null_timestamp: num(1),
            out_of_range: num(2),
        })
    }

    fn pages<'a>(&'a self, q: &'a WindowQuery) -> BoxStream<'a, Result<Page>> {
        let page_rows = q.page_rows.max(1);
        let timeout = self.timeout;
        stream::once(self.start_window(q))
            .flat_map(move |started| match started {
                Err(e) => stream::once(async move { Err(e) }).boxed(),
                Ok((rows, guard, client)) => {
                    let state = Reading {
                        rows: Box::pin(rows),
                        guard,
                        _client: client,
                        page_rows,
                        timeout,
                        shown: self.shown.clone(),
                        done: false,
                    };
                    stream::unfold(state, |mut state| async move {
                        if state.done {
                            return None;
                        }
                        let next = state.next_page().await;
                        match next {
                            Ok(Some(page)) => Some((Ok(page), state)),
                            Ok(None) => None,
                            Err(e) => {
                                state.done = true;
                                Some((Err(e), state))
                            }
                        }
                    })
                    .boxed()
                }
            })
            .boxed()
    }

    async fn ping(&self) -> Result<()> {
        self.rows("SELECT 1", "SELECT 1", &[]).await.map(|_| ())
    }

    async fn finish(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while CANCELS_IN_FLIGHT.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn ntz_time_zone(&self) -> super::zone::Tz {
        self.ntz_time_zone
    }
}

/// A window being read: its rows, the guard that cancels it if dropped
/// early, and its connection (dropped with it).
struct Reading {
    rows: Pin<Box<RowStream>>,
    guard: CancelOnDrop,
    _client: Client,
    page_rows: usize,
    timeout: Duration,
    shown: String,
    done: bool,
}

impl Reading {
    /// The next page (`None` after the last row); waiting for rows is
    /// bounded by `query_timeout` per page.
    async fn next_page(&mut self) -> Result<Option<Page>> {
        let mut builders: Option<Vec<Builder>> = None;
        let mut fields: Vec<Field> = Vec::new();
        let mut n = 0;
        let deadline = tokio::time::Instant::now() + self.timeout;
        while n < self.page_rows {
            let next = match tokio::time::timeout_at(deadline, self.rows.next()).await {
                Ok(next) => next,
                Err(_) => {
                    return Err(WarehouseError::Transient(format!(
                        "Postgres warehouse ({}) sent no page of the window within warehouse.query_timeout ({})",
                        self.shown,
                        humantime::format_duration(self.timeout)
                    )))
                }
            };
            let row = match next {
                None => {
                    self.done = true;
                    self.guard.done();
                    break;
                }
                Some(Err(e)) => {
                    self.guard.done();
                    return Err(classify(&self.shown, "the window's rows", &e));
                }
                Some(Ok(row)) => row,
            };
            let builders = builders.get_or_insert_with(|| {
                fields = row
                    .columns()
                    .iter()
                    .map(|c| field_of(c.name(), c.type_()))
                    .collect();
                row.columns()
                    .iter()
                    .map(|c| Builder::of(c.type_()))
                    .collect()
            });
            for (i, b) in builders.iter_mut().enumerate() {
                let raw: Option<Raw> = row
                    .try_get(i)
                    .map_err(|e| WarehouseError::Transient(format!("Postgres row: {e}")))?;
                b.push(raw.map(|r| r.0)).map_err(|e| {
                    WarehouseError::Permanent(format!("column {}: {e}", row.columns()[i].name()))
                })?;
            }
            n += 1;
        }
        let Some(builders) = builders else {
            return Ok(None);
        };
        let columns: Vec<ArrayRef> = builders.into_iter().map(Builder::finish).collect();
        // A numeric column's type is decided per page (its scale, or Float64).
        let fields: Vec<Field> = fields
            .into_iter()
            .zip(&columns)
            .map(|(f, c)| f.with_data_type(c.data_type().clone()))
            .collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| WarehouseError::Permanent(format!("Postgres page: {e}")))?;
        Ok(Some(Page {
            batches: vec![batch],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::rows::*;
    use super::*;
    use arrow_array::Array;
    use arrow_array::Decimal128Array;
    use arrow_schema::DataType;

    fn numeric_bytes(ndigits: i16, weight: i16, sign: u16, dscale: u16, digits: &[i16]) -> Vec<u8> {
        let mut b = Vec::new();
        for x in [ndigits, weight, sign as i16, dscale as i16] {
            b.extend_from_slice(&x.to_be_bytes());
        }
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numerics_decode_exactly_at_their_scale() {
        // 12.50: digits [12, 5000], weight 0, dscale 2.
        assert_eq!(
            numeric_from_sql(&numeric_bytes(2, 0, 0, 2, &[12, 5000])),
            Ok(Numeric::Exact {
                unscaled: 1250,
                scale: 2
            })
        );
        // -9223372036854775808.00
        assert_eq!(
            numeric_from_sql(&numeric_bytes(
                5,
                4,
                0x4000,
                2,
                &[922, 3372, 368, 5477, 5808]
            )),
            Ok(Numeric::Exact {
                unscaled: -922_337_203_685_477_580_800,
                scale: 2
            })
        );
        // 1e300: one digit (1) at weight 75, beyond 38 digits: a float.
        assert_eq!(
            numeric_from_sql(&numeric_bytes(1, 75, 0, 0, &[1])),
            Ok(Numeric::Float(1e300))
        );
        // 0.0001 (weight -1), 0 (no digits), NaN.
        assert_eq!(
            numeric_from_sql(&numeric_bytes(1, -1, 0, 4, &[1])),
            Ok(Numeric::Exact {
                unscaled: 1,
                scale: 4
            })
        );
        assert_eq!(
            numeric_from_sql(&numeric_bytes(0, 0, 0, 0, &[])),
            Ok(Numeric::Exact {
                unscaled: 0,
                scale: 0
            })
        );
        assert!(
            matches!(numeric_from_sql(&numeric_bytes(0, 0, 0xC000, 0, &[])), Ok(Numeric::Float(f)) if f.is_nan())
        );
    }

    #[test]
    fn a_page_of_numerics_takes_its_largest_scale_or_becomes_float() {
        let a = numeric_array(&[
            Some(Numeric::Exact {
                unscaled: 5,
                scale: 0,
            }),
            None,
            Some(Numeric::Exact {
                unscaled: 125,
                scale: 2,
            }),
        ]);
        assert_eq!(a.data_type(), &DataType::Decimal128(38, 2));
        let d = a.as_any().downcast_ref::<Decimal128Array>().unwrap();
        assert_eq!(d.value(0), 500);
        assert!(d.is_null(1));
        let f = numeric_array(&[
            Some(Numeric::Exact {
                unscaled: 5,
                scale: 0,
            }),
            Some(Numeric::Float(f64::NAN)),
        ]);
        assert_eq!(f.data_type(), &DataType::Float64);
    }

    #[test]
    fn type_names_map_to_kinds() {
        let t = |display: &str, typname: &str| column_type(display, typname, "b", None).kind;
        assert_eq!(t("bigint", "int8"), TypeKind::Number { scale: 0 });
        assert_eq!(t("numeric(10,2)", "numeric"), TypeKind::Number { scale: 2 });
        assert_eq!(t("numeric", "numeric"), TypeKind::Number { scale: 0 });
        assert_eq!(t("double precision", "float8"), TypeKind::Float);
        assert_eq!(t("character varying(20)", "varchar"), TypeKind::Text);
        assert_eq!(t("uuid", "uuid"), TypeKind::Text);
        assert_eq!(
            t("timestamp without time zone", "timestamp"),
            TypeKind::Timestamp(TimestampKind::Ntz)
        );
        assert_eq!(
            t("timestamp with time zone", "timestamptz"),
            TypeKind::Timestamp(TimestampKind::Tz)
        );
        assert_eq!(t("jsonb", "jsonb"), TypeKind::Variant);
        assert_eq!(t("interval", "interval"), TypeKind::Other);
        assert_eq!(column_type("mood", "mood", "e", None).kind, TypeKind::Text);
        let arr = column_type("bigint[]", "_int8", "b", Some(("int8", "b")));
        assert_eq!(
            arr.kind,
            TypeKind::Array(Some(Box::new(ColumnType::new(
                TypeKind::Number { scale: 0 },
                "bigint"
            ))))
        );
        assert_eq!(arr.to_string(), "bigint[]");
    }

    #[test]
    fn the_window_binds_its_bounds_and_quotes_names() {
        let q = WindowQuery {
            table: TableRef {
                database: None,
                schema: Some("s".into()),
                table: "t".into(),
            },
            entity_column: "E".into(),
            timestamp_column: "ts".into(),
            timestamp_type: column_type("timestamp with time zone", "timestamptz", "b", None),
            field_columns: vec!["a\"b".into()],
            since: Some(1_500),
            page_rows: 10,
        };
        let (sql, params) = window_sql(&q, "s", "t", TimestampKind::Tz);
        assert_eq!(
            sql,
            "SELECT \"E\", \"ts\", \"a\"\"b\" FROM \"s\".\"t\" WHERE \"E\" IS NOT NULL \
             AND \"ts\" >= $1::timestamptz AND \"ts\" <= $2::timestamptz AND \"ts\" > $3::timestamptz"
        );
        // 1.5 µs after the epoch: rows after it are those from 2 µs on.
        assert_eq!(params[2].0, 1);
        // The first and last whole microseconds inside Nanos' range.
        assert_eq!(
            (FIRST_MICROS, LAST_MICROS),
            (-9_223_372_036_854_775, 9_223_372_036_854_775)
        );
        let (count, _) = null_key_rows_sql(&q, "s", "t", TimestampKind::Tz);
        assert!(
            count.contains("0::bigint") && !count.contains("FILTER"),
            "{count}"
        );
    }

    #[test]
    fn tables_resolve_like_unquoted_identifiers() {
        let found = vec![
            ("public".to_string(), "events".to_string()),
            ("public".to_string(), "EVENTS".to_string()),
        ];
        assert_eq!(
            pick_table(&found, Some("public"), "EVENTS"),
            Some(&found[1])
        );
        assert_eq!(
            pick_table(&found, Some("PUBLIC"), "Events"),
            Some(&found[0])
        );
        let one = vec![("S".to_string(), "MixedCase".to_string())];
        assert_eq!(pick_table(&one, Some("s"), "mixedcase"), Some(&one[0]));
        let two = vec![
            ("s".to_string(), "Ab".to_string()),
            ("s".to_string(), "AB".to_string()),
        ];
        assert_eq!(pick_table(&two, Some("s"), "aB"), None);
    }

    #[test]
    fn arrays_of_one_dimension_become_lists() {
        // int4[] {7, NULL}: ndim 1, has-null 1, oid 23, len 2, lbound 1.
        let mut b = Vec::new();
        for x in [1i32, 1, 23, 2, 1, 4] {
            b.extend_from_slice(&x.to_be_bytes());
        }
        b.extend_from_slice(&7i32.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            array_elements(&b).unwrap(),
            vec![Some(&7i32.to_be_bytes()[..]), None]
        );
        assert_eq!(
            array_elements(&0i32.to_be_bytes().repeat(3)).unwrap(),
            Vec::<Option<&[u8]>>::new()
        );
    }

    #[test]
    fn urls_are_checked_without_quoting_them() {
        assert!(parse_url("postgres://u:pw@127.0.0.1:5432/test").is_ok());
        let e = parse_url("postgres://u:s3cret@127.0.0.1:notaport/test")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret") && e.contains("warehouse.url"), "{e}");
        let e = parse_url("postgres://u:s3cret@127.0.0.1:5432")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret") && e.contains("database"), "{e}");
    }
}
