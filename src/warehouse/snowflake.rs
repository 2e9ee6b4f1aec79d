//! Snowflake backend on the `snowflake-api` crate (REST + Arrow).
//!
//! Promises the [`Warehouse`] contract: windows are read with keyset
//! pagination (`ORDER BY ts, entity LIMIT page_rows`, continuing after the
//! greatest `(ts, entity)` of the previous page, computed from the page itself
//! because result chunks arrive out of order); rows with a NULL entity or
//! timestamp, or a timestamp [`Nanos`] cannot hold, are left out of pages and
//! counted by `null_key_rows`. The cursor's entity is compared as text, so a
//! NUMBER entity column (ordered numerically by Snowflake) can have rows at a
//! page edge read twice, never skipped.
//!
//! Table names resolve like unquoted identifiers: `describe` remembers the
//! name that matched (e.g. `DB.S.T` for `db.s.t`), and the reads use it.
//!
//! Works around the crate's pitfalls: every call has a timeout; requests go
//! through our own HTTP client (timeouts, no blind retries of POSTs, optional
//! base-URL rewrite of account-host requests for proxies, private endpoints and
//! tests); URLs in errors lose their query strings (pre-signed chunk URLs carry
//! credentials there); the session is
//! rebuilt after any transient failure, since the crate never logs in again by
//! itself. Assumes the crate's `log` output is kept at info or above by the
//! logging setup (at debug it prints session tokens).

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

use super::{
    decode, sql, Column, Nanos, NullKeyRows, Page, Result, TableRef, Warehouse, WarehouseError,
};
use crate::config::{Credentials, WarehouseConfig};

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
    pub fn new(cfg: &WarehouseConfig) -> anyhow::Result<Self> {
        let base_url = cfg
            .base_url
            .as_deref()
            .map(url::Url::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("warehouse.base_url: {e}"))?;
        Ok(SnowflakeWarehouse {
            login: Login {
                account: cfg.account.clone().unwrap_or_default(),
                user: cfg.user.clone().unwrap_or_default(),
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
        let mut client = reqwest_middleware::ClientBuilder::new(http);
        if let Some(base) = &l.base_url {
            client = client.with(BaseUrl(base.clone()));
        }
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
        let client: ClientWithMiddleware = client.build();
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

    /// Runs one statement with a timeout; after a transient failure the
    /// session is dropped so the next statement logs in again.
    pub async fn exec(&self, sql: &str) -> Result<QueryResult> {
        let api = self.api().await?;
        let timeout = self.login.timeout;
        let outcome = match tokio::time::timeout(timeout, api.exec(sql)).await {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) => classify(e),
            Err(_) => WarehouseError::Transient(format!(
                "Snowflake did not answer within warehouse.query_timeout ({})",
                humantime::format_duration(timeout)
            )),
        };
        if outcome.is_retryable() {
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
                    Some(Column {
                        name: it.next()??,
                        data_type: it.next()??,
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
        let batches = match self.exec(&window_page_sql(q, &table, after)).await? {
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
fn representable(ts: &str, zoned: bool) -> String {
    format!(
        "{ts} >= {} AND {ts} <= {}",
        sql::timestamp_literal(Nanos::MIN, zoned),
        sql::timestamp_literal(Nanos::MAX, zoned)
    )
}

/// The SQL of one keyset page of `table` (the stored name of `q.table`): the
/// window's rows after the cursor `after` (the previous page's greatest
/// `(timestamp, entity)`), ordered by `(timestamp, entity)`. Rows sharing the
/// cursor's timestamp continue by entity, so a bulk update stamping more rows
/// than a page is never skipped at a page edge (and, for a text entity, never
/// read twice).
fn window_page_sql(
    q: &super::WindowQuery,
    table: &TableRef,
    after: Option<&(Nanos, String)>,
) -> String {
    let zoned = is_zoned(&q.timestamp_type);
    let e = sql::ident(&q.entity_column);
    let ts = sql::ident(&q.timestamp_column);
    let mut cols = vec![e.clone(), ts.clone()];
    cols.extend(q.field_columns.iter().map(|c| sql::ident(c)));
    let mut text = format!(
        "SELECT {} FROM {} WHERE {e} IS NOT NULL AND {}",
        cols.join(", "),
        sql::table(table),
        representable(&ts, zoned)
    );
    if let Some(since) = q.since {
        text += &format!(" AND {ts} > {}", sql::timestamp_literal(since, zoned));
    }
    if let Some((at, entity)) = after {
        let lit = sql::timestamp_literal(*at, zoned);
        text += &format!(
            " AND ({ts} > {lit} OR ({ts} = {lit} AND {e} > {}))",
            sql::string_literal(entity)
        );
    }
    text += &format!(" ORDER BY {ts}, {e} LIMIT {}", q.page_rows);
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
}

/// The SQL counting the window's rows of `table` (the stored name of
/// `q.table`) that pages leave out: NULL entity; NULL timestamp (full reads
/// only); entity present but a timestamp [`Nanos`] cannot hold.
fn null_key_rows_sql(q: &super::WindowQuery, table: &TableRef) -> String {
    let zoned = is_zoned(&q.timestamp_type);
    let e = sql::ident(&q.entity_column);
    let ts = sql::ident(&q.timestamp_column);
    let in_window = match q.since {
        Some(s) => format!("{ts} > {}", sql::timestamp_literal(s, zoned)),
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
        representable(&ts, zoned),
        sql::table(table)
    )
}

fn is_zoned(snowflake_type: &str) -> bool {
    let t = snowflake_type.to_ascii_uppercase();
    t.starts_with("TIMESTAMP_TZ") || t.starts_with("TIMESTAMP_LTZ")
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
                " (an unreadable reply; queries running longer than ~45s return one, \
                 consider a smaller sync.page_rows)"
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
            timestamp_type: timestamp_type.into(),
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

    /// `window_page_sql` of the query's own table name.
    fn page_sql(q: &super::super::WindowQuery, after: Option<&(Nanos, String)>) -> String {
        window_page_sql(q, &q.table, after)
    }

    #[test]
    fn first_page_sql_reads_the_window_in_key_order() {
        assert_eq!(
            page_sql(&window(3, Some(T), "TIMESTAMP_NTZ(9)"), None),
            "SELECT \"DOMAIN_USERID\", \"UPDATED_AT\", \"A\" FROM \"DB\".\"S\".\"T\" \
             WHERE \"DOMAIN_USERID\" IS NOT NULL \
             AND \"UPDATED_AT\" >= '1677-09-21 00:12:43.145224192'::TIMESTAMP_NTZ \
             AND \"UPDATED_AT\" <= '2262-04-11 23:47:16.854775807'::TIMESTAMP_NTZ \
             AND \"UPDATED_AT\" > '2023-11-14 22:13:20.000000000'::TIMESTAMP_NTZ \
             ORDER BY \"UPDATED_AT\", \"DOMAIN_USERID\" LIMIT 3"
        );
    }

    #[test]
    fn pages_leave_out_timestamps_nanos_cannot_hold_even_on_a_full_read() {
        // A table whose first rows (in key order) are stamped 0001-01-01 must
        // not fill a page with rows that cannot be paged past.
        let sql = page_sql(&window(3, None, "TIMESTAMP_NTZ(9)"), None);
        assert!(
            sql.contains(
                " AND \"UPDATED_AT\" >= '1677-09-21 00:12:43.145224192'::TIMESTAMP_NTZ \
                 AND \"UPDATED_AT\" <= '2262-04-11 23:47:16.854775807'::TIMESTAMP_NTZ"
            ),
            "{sql}"
        );
        // The bounds are exactly the first and last representable instants.
        assert_eq!(
            sql::timestamp_literal(Nanos::MIN, false),
            "'1677-09-21 00:12:43.145224192'::TIMESTAMP_NTZ"
        );
        assert_eq!(
            sql::timestamp_literal(Nanos::MAX, true),
            "'2262-04-11 23:47:16.854775807 +00:00'::TIMESTAMP_TZ"
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
            window_page_sql(&q, &stored, None).contains(" FROM \"DB\".\"S\".\"T\" WHERE "),
            "{}",
            window_page_sql(&q, &stored, None)
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
             AND NOT (\"UPDATED_AT\" >= '1677-09-21 00:12:43.145224192'::TIMESTAMP_NTZ \
             AND \"UPDATED_AT\" <= '2262-04-11 23:47:16.854775807'::TIMESTAMP_NTZ)) AS OUT_OF_RANGE \
             FROM \"DB\".\"S\".\"T\""
        );
        let q = window(3, Some(0), "TIMESTAMP_TZ(9)");
        let sql = null_key_rows_sql(&q, &q.table);
        assert!(sql.contains(" 0 AS NULL_TS, "), "{sql}");
        assert!(
            sql.contains(
                "COUNT_IF(\"DOMAIN_USERID\" IS NOT NULL \
                 AND \"UPDATED_AT\" > '1970-01-01 00:00:00.000000000 +00:00'::TIMESTAMP_TZ \
                 AND NOT (\"UPDATED_AT\" >= '1677-09-21 00:12:43.145224192 +00:00'::TIMESTAMP_TZ \
                 AND \"UPDATED_AT\" <= '2262-04-11 23:47:16.854775807 +00:00'::TIMESTAMP_TZ)) AS OUT_OF_RANGE"
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
                " AND (\"UPDATED_AT\" > '2023-11-14 22:13:20.000000001'::TIMESTAMP_NTZ \
                 OR (\"UPDATED_AT\" = '2023-11-14 22:13:20.000000001'::TIMESTAMP_NTZ \
                 AND \"DOMAIN_USERID\" > 'o''b\\\\')) \
                 ORDER BY \"UPDATED_AT\", \"DOMAIN_USERID\" LIMIT 3"
            ),
            "{sql}"
        );
    }

    #[test]
    fn zoned_timestamp_columns_compare_instants() {
        for ty in ["TIMESTAMP_TZ(9)", "TIMESTAMP_LTZ(3)"] {
            let sql = page_sql(&window(3, Some(0), ty), Some(&(0, "e".into())));
            assert_eq!(
                sql.matches("'1970-01-01 00:00:00.000000000 +00:00'::TIMESTAMP_TZ")
                    .count(),
                3,
                "{sql}"
            );
            assert_eq!(sql.matches(" +00:00'::TIMESTAMP_TZ").count(), 5, "{sql}");
            assert!(!sql.contains("TIMESTAMP_NTZ"), "{sql}");
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
