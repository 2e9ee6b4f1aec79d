//! BigQuery's REST API v2 as the backend uses it: `jobs.query` starts a
//! query and answers its first result page, `jobs.getQueryResults` polls a
//! query still running and serves the following pages (`pageToken`),
//! `jobs.cancel` stops one abandoned, `tables.get` describes a table and
//! `datasets.list` proves the credentials (a ping that starts no job).
//!
//! A query is `POST {api}/projects/{project}/queries` with standard SQL,
//! `maxResults` (the page size), `formatOptions.useInt64Timestamp` (TIMESTAMP
//! cells as exact microseconds instead of float seconds) and a `timeoutMs`
//! well inside `warehouse.query_timeout` ([`wait_ms`]), so the answer, and
//! with it the job's id, comes back before the caller gives up. An answer
//! with `jobComplete: false` hands the job off: `GET
//! .../queries/{jobId}?timeoutMs=…` (a long poll) until it is complete; the
//! answer that says so carries the first page. From the moment the job's
//! id is known until it is complete, a guard owns it: dropped early (the
//! caller's timeout, a shutdown, a dropped run) it sends `POST
//! .../jobs/{jobId}/cancel` from a task of its own, which [`settle_cancels`]
//! lets finish before the process exits.
//!
//! Auth is a service account: a JWT (RS256, signed with the key file's
//! private key; `iss` the account, `aud` the token endpoint, `scope`
//! BigQuery's) exchanged at the token endpoint (`grant_type=
//! urn:ietf:params:oauth:grant-type:jwt-bearer`) for an access token,
//! cached until a minute before it expires and fetched anew after a 401.
//!
//! Never logged or put in errors: the key, the JWT, the access token, the SQL.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::header::{HeaderValue, AUTHORIZATION};
use serde::{Deserialize, Serialize};

use crate::config::ServiceAccountKey;
use crate::warehouse::{truncate, Result, WarehouseError};

/// Upper bound of one cancel request.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);
/// The OAuth scope of the access token.
const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";
/// The longest `timeoutMs` asked for: BigQuery answers after at most ~10 s anyway.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Cancel requests not finished yet (see [`settle_cancels`]).
static PENDING_CANCELS: AtomicUsize = AtomicUsize::new(0);

/// Waits until every cancel sent for an abandoned job has been answered (or
/// has failed), at most `limit`; true when none is left.
pub async fn settle_cancels(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if PENDING_CANCELS.load(Ordering::SeqCst) == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `timeoutMs` of a query or poll bounded by `query_timeout`: a third of it,
/// at most [`MAX_WAIT`], so the answer (and with it the job id a cancel
/// needs) arrives long before the caller gives up.
pub(crate) fn wait_ms(query_timeout: Duration) -> u64 {
    (query_timeout / 3).min(MAX_WAIT).as_millis() as u64
}

/// A column of a result or table schema (`schema.fields[]`).
#[derive(Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct FieldSchema {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) type_name: String,
    #[serde(default)]
    pub(crate) mode: Option<String>,
    #[serde(default)]
    pub(crate) fields: Vec<FieldSchema>,
}

impl FieldSchema {
    pub(crate) fn repeated(&self) -> bool {
        self.mode.as_deref() == Some("REPEATED")
    }
}

#[derive(Deserialize, Default, Clone, Debug)]
pub(crate) struct Schema {
    #[serde(default)]
    pub(crate) fields: Vec<FieldSchema>,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobReference {
    pub(crate) job_id: String,
    pub(crate) location: Option<String>,
}

/// An answer of `jobs.query` / `jobs.getQueryResults`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueryResponse {
    schema: Option<Schema>,
    job_reference: Option<JobReference>,
    #[serde(default)]
    job_complete: bool,
    page_token: Option<String>,
    #[serde(default)]
    rows: Vec<Row>,
    total_bytes_processed: Option<String>,
    #[serde(default)]
    errors: Vec<ErrorProto>,
}

/// One row: `{"f": [{"v": cell}, ...]}`; cells are strings, null, or for
/// ARRAY/STRUCT nested `{"v": [...]}` / `{"f": [...]}`.
#[derive(Deserialize, Clone, Debug)]
pub(crate) struct Row {
    pub(crate) f: Vec<Cell>,
}

#[derive(Deserialize, Clone, Debug)]
pub(crate) struct Cell {
    #[serde(default)]
    pub(crate) v: serde_json::Value,
}

/// One page of a complete query's result.
pub(crate) struct ResultPage {
    pub(crate) schema: std::sync::Arc<Schema>,
    pub(crate) rows: Vec<Row>,
    pub(crate) page_token: Option<String>,
}

/// A complete query: its first page and where the next ones are.
pub(crate) struct Done {
    pub(crate) job: JobReference,
    pub(crate) first: ResultPage,
}

#[derive(Deserialize, Default, Clone, Debug)]
struct ErrorProto {
    reason: Option<String>,
    message: Option<String>,
}

/// An error answer: `{"error": {"code", "message", "status", "errors": [{"reason", "message"}]}}`.
#[derive(Deserialize, Default)]
struct ErrorBody {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    message: Option<String>,
    status: Option<String>,
    #[serde(default)]
    errors: Vec<ErrorProto>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueryRequest<'a> {
    query: &'a str,
    use_legacy_sql: bool,
    max_results: usize,
    timeout_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<&'a str>,
    format_options: FormatOptions,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FormatOptions {
    use_int64_timestamp: bool,
}

/// The service account: who it is and how it signs. No `Debug`: the key signs.
pub(crate) struct Signer {
    client_email: String,
    key: jsonwebtoken::EncodingKey,
    key_id: Option<String>,
    token_url: String,
}

impl Signer {
    /// Errors name the key file, never its content.
    pub(crate) fn new(sa: &ServiceAccountKey, token_url: String) -> Result<Signer> {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(sa.private_key_pem.expose().as_bytes())
            .map_err(|_| {
            WarehouseError::Permanent(
                "warehouse.credentials_path: private_key is not an RSA private key in PEM".into(),
            )
        })?;
        Ok(Signer {
            client_email: sa.client_email.clone(),
            key,
            key_id: sa.private_key_id.clone(),
            token_url,
        })
    }

    fn assertion(&self) -> Result<String> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            scope: &'a str,
            aud: &'a str,
            iat: i64,
            exp: i64,
        }
        let now = chrono::Utc::now().timestamp();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = self.key_id.clone();
        jsonwebtoken::encode(
            &header,
            &Claims {
                iss: &self.client_email,
                scope: SCOPE,
                aud: &self.token_url,
                iat: now,
                exp: now + 3600,
            },
            &self.key,
        )
        .map_err(|e| WarehouseError::Permanent(format!("cannot sign the token request: {e}")))
    }
}

/// The client of one billing project. Cheap to clone (shares the pool and token cache).
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    api: url::Url,
    project: String,
    location: Option<String>,
    signer: std::sync::Arc<Signer>,
    /// The access token (already `Bearer ...`, sensitive) and when to stop using it.
    token: std::sync::Arc<tokio::sync::Mutex<Option<(HeaderValue, Instant)>>>,
    wait_ms: u64,
}

impl Client {
    pub(crate) fn new(
        api: url::Url,
        project: String,
        location: Option<String>,
        signer: Signer,
        query_timeout: Duration,
    ) -> Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(query_timeout))
            // Queries are bounded by the caller's `query_timeout`; this, a
            // moment later, bounds every single request (a poll, a page).
            .timeout(query_timeout + Duration::from_millis(500))
            .gzip(true)
            .build()
            .map_err(|e| WarehouseError::Permanent(format!("HTTP client: {e}")))?;
        Ok(Client {
            http,
            api,
            project,
            location,
            signer: std::sync::Arc::new(signer),
            token: Default::default(),
            wait_ms: wait_ms(query_timeout),
        })
    }

    /// `{api}/{segments...}`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> url::Url {
        let mut url = self.api.clone();
        url.set_query(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn authorization(&self) -> Result<HeaderValue> {
        let mut cached = self.token.lock().await;
        if let Some((v, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(v.clone());
            }
        }
        let assertion = self.signer.assertion()?;
        let reply = self
            .http
            .post(&self.signer.token_url)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| transport("OAuth token request", e))?;
        let status = reply.status();
        if !status.is_success() {
            let body = reply.text().await.unwrap_or_default();
            let text = format!(
                "the token endpoint refused the service account (HTTP {status}): {}",
                super::super::oauth_error(&body)
            );
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                WarehouseError::Transient(text)
            } else {
                WarehouseError::Permanent(format!("{text} (check warehouse.credentials_path)"))
            });
        }
        let (v, until) = super::super::bearer_from_token_reply(reply).await?;
        *cached = Some((v.clone(), until));
        Ok(v)
    }

    /// Sends an API request with the access token; after a 401 the cached
    /// token is dropped and the request sent once more with a new one.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<T> {
        let mut retried = false;
        loop {
            let auth = self.authorization().await?;
            let reply = build(&self.http)
                .header(AUTHORIZATION, auth)
                .send()
                .await
                .map_err(|e| transport(what, e))?;
            let status = reply.status();
            let body = reply.bytes().await.map_err(|e| transport(what, e))?;
            if status.as_u16() == 401 && !retried {
                *self.token.lock().await = None;
                retried = true;
                continue;
            }
            if !status.is_success() {
                return Err(api_error(what, status, &body));
            }
            return serde_json::from_slice(&body).map_err(|e| {
                WarehouseError::Transient(format!(
                    "BigQuery answered the {what} with an unreadable reply: {e}"
                ))
            });
        }
    }

    /// Runs `sql` until it is complete and returns its first page of at most
    /// `page_rows` rows. Counted by the caller; bounded by the caller's
    /// timeout (dropping this future cancels the job).
    pub(crate) async fn query(&self, sql: &str, page_rows: usize) -> Result<Done> {
        let body = QueryRequest {
            query: sql,
            use_legacy_sql: false,
            max_results: page_rows.max(1),
            timeout_ms: self.wait_ms,
            location: self.location.as_deref(),
            format_options: FormatOptions {
                use_int64_timestamp: true,
            },
        };
        let url = self.url(&["projects", &self.project, "queries"]);
        let mut answer: QueryResponse = self
            .send("query", |http| http.post(url.clone()).json(&body))
            .await?;
        let job = answer.job_reference.clone().ok_or_else(|| {
            WarehouseError::Transient("BigQuery answered a query without jobReference".into())
        })?;
        let mut guard = CancelOnDrop(Some((self.clone(), job.clone())));
        let mut polls = 0u32;
        while !answer.job_complete {
            polls += 1;
            answer = self.results(&job, None, page_rows, self.wait_ms).await?;
        }
        guard.0 = None;
        if let Some(e) = answer.errors.first() {
            return Err(job_error(e));
        }
        tracing::debug!(
            job_id = %job.job_id,
            polls,
            bytes_processed = answer.total_bytes_processed.as_deref().unwrap_or("?"),
            "BigQuery query complete"
        );
        Ok(Done {
            job,
            first: ResultPage {
                schema: std::sync::Arc::new(answer.schema.unwrap_or_default()),
                rows: answer.rows,
                page_token: answer.page_token,
            },
        })
    }

    /// `jobs.getQueryResults`: a poll (`page_token` None, `wait_ms` > 0) or a page.
    async fn results(
        &self,
        job: &JobReference,
        page_token: Option<&str>,
        page_rows: usize,
        wait_ms: u64,
    ) -> Result<QueryResponse> {
        let mut url = self.url(&["projects", &self.project, "queries", &job.job_id]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("maxResults", &page_rows.max(1).to_string());
            q.append_pair("timeoutMs", &wait_ms.to_string());
            q.append_pair("formatOptions.useInt64Timestamp", "true");
            if let Some(l) = &job.location {
                q.append_pair("location", l);
            }
            if let Some(t) = page_token {
                q.append_pair("pageToken", t);
            }
        }
        let what = if page_token.is_some() {
            "result page"
        } else {
            "query poll"
        };
        self.send(what, |http| http.get(url.clone())).await
    }

    /// The page `page_token` names of a complete job's result.
    pub(crate) async fn page(
        &self,
        job: &JobReference,
        schema: std::sync::Arc<Schema>,
        page_token: &str,
        page_rows: usize,
    ) -> Result<ResultPage> {
        let answer = self.results(job, Some(page_token), page_rows, 0).await?;
        if let Some(e) = answer.errors.first() {
            return Err(job_error(e));
        }
        Ok(ResultPage {
            schema,
            rows: answer.rows,
            page_token: answer.page_token,
        })
    }

    /// `tables.get`: the table's schema, or `None` when it does not exist.
    pub(crate) async fn table_schema(
        &self,
        project: &str,
        dataset: &str,
        table: &str,
    ) -> Result<Option<Schema>> {
        #[derive(Deserialize)]
        struct Table {
            schema: Option<Schema>,
        }
        let url = self.url(&["projects", project, "datasets", dataset, "tables", table]);
        match self
            .send::<Table>("table lookup", |http| http.get(url.clone()))
            .await
        {
            Ok(t) => Ok(Some(t.schema.unwrap_or_default())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `datasets.list` of the billing project, one at most: proves the
    /// endpoint and credentials without starting a job.
    pub(crate) async fn ping(&self) -> Result<()> {
        let mut url = self.url(&["projects", &self.project, "datasets"]);
        url.query_pairs_mut().append_pair("maxResults", "1");
        self.send::<serde_json::Value>("ping", |http| http.get(url.clone()))
            .await
            .map(|_| ())
    }

    async fn cancel(&self, job: &JobReference) -> Result<()> {
        let mut url = self.url(&["projects", &self.project, "jobs", &job.job_id, "cancel"]);
        if let Some(l) = &job.location {
            url.query_pairs_mut().append_pair("location", l);
        }
        self.send::<serde_json::Value>("cancel", |http| {
            http.post(url.clone()).timeout(CANCEL_TIMEOUT)
        })
        .await
        .map(|_| ())
    }
}

/// Marks the "not found" errors `tables.get` answers for a missing
/// project, dataset or table.
const NOT_FOUND: &str = "(notFound)";

fn is_not_found(e: &WarehouseError) -> bool {
    !e.is_retryable() && e.to_string().contains(NOT_FOUND)
}

/// Reasons after which a retry can help (BigQuery's error table).
fn retryable_reason(reason: &str) -> bool {
    matches!(
        reason,
        "backendError"
            | "internalError"
            | "rateLimitExceeded"
            | "jobBackendError"
            | "jobInternalError"
            | "quotaExceeded"
            | "tableUnavailable"
            | "timeout"
    )
}

/// A job that ended with an error (an `errors[]` entry of a complete answer).
fn job_error(e: &ErrorProto) -> WarehouseError {
    let reason = e.reason.as_deref().unwrap_or("unknown");
    let text = format!(
        "BigQuery job failed ({reason}): {}",
        truncate(e.message.as_deref().unwrap_or(""), 500)
    );
    if retryable_reason(reason) {
        WarehouseError::Transient(text)
    } else {
        WarehouseError::Permanent(text)
    }
}

/// A refused request: the first error's reason decides, else the status
/// (401/403 and 4xx are for a person, 429 and 5xx pass).
fn api_error(what: &str, status: http::StatusCode, body: &[u8]) -> WarehouseError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let detail = parsed.error.unwrap_or_default();
    let reason = detail
        .errors
        .first()
        .and_then(|e| e.reason.clone())
        .or(detail.status)
        .unwrap_or_else(|| status.as_u16().to_string());
    let message = detail
        .message
        .unwrap_or_else(|| truncate(&String::from_utf8_lossy(body), 200));
    let text = format!(
        "BigQuery refused the {what} (HTTP {status}, {reason}): {}",
        truncate(&message, 500)
    );
    if retryable_reason(&reason) || status.as_u16() == 429 || status.is_server_error() {
        return WarehouseError::Transient(text);
    }
    match (status.as_u16(), reason.as_str()) {
        (401 | 403, _) => WarehouseError::Permanent(format!(
            "{text} (check warehouse.credentials_path and the account's roles)"
        )),
        (404, _) | (_, "notFound") => WarehouseError::Permanent(format!("{text} {NOT_FOUND}")),
        _ => WarehouseError::Permanent(text),
    }
}

/// A request that got no answer: retryable. The URL is left out (page
/// tokens are in it).
fn transport(what: &str, e: reqwest::Error) -> WarehouseError {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text += &format!(": {s}");
        source = s.source();
    }
    WarehouseError::Transient(format!("BigQuery {what} failed: {text}"))
}

/// Cancels its job when dropped armed.
struct CancelOnDrop(Option<(Client, JobReference)>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some((client, job)) = self.0.take() else {
            return;
        };
        let job_id = job.job_id.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(%job_id, "abandoned BigQuery job not cancelled: no runtime left");
            return;
        };
        tracing::info!(%job_id, "cancelling an abandoned BigQuery job");
        PENDING_CANCELS.fetch_add(1, Ordering::SeqCst);
        runtime.spawn(async move {
            match client.cancel(&job).await {
                Ok(()) => tracing::debug!(%job_id, "BigQuery took the cancel"),
                Err(e) => {
                    tracing::warn!(%job_id, error = %e, "could not cancel an abandoned BigQuery job")
                }
            }
            PENDING_CANCELS.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_well_inside_the_query_timeout() {
        for (timeout, wait) in [(1, 333), (5, 1666), (30, 10_000), (3600, 10_000)] {
            assert_eq!(wait_ms(Duration::from_secs(timeout)), wait, "{timeout}");
        }
    }

    #[test]
    fn refused_requests_classify_by_reason_then_status() {
        let body = |reason: &str, code: u16| {
            serde_json::json!({"error": {"code": code, "message": "m", "status": "X",
                "errors": [{"message": "m", "domain": "global", "reason": reason}]}})
            .to_string()
        };
        let nf = api_error(
            "table lookup",
            http::StatusCode::NOT_FOUND,
            body("notFound", 404).as_bytes(),
        );
        assert!(!nf.is_retryable() && is_not_found(&nf), "{nf}");
        let bad = api_error(
            "query",
            http::StatusCode::BAD_REQUEST,
            body("invalidQuery", 400).as_bytes(),
        );
        assert!(!bad.is_retryable() && !is_not_found(&bad), "{bad}");
        for (reason, status) in [
            ("rateLimitExceeded", 403),
            ("backendError", 500),
            ("quotaExceeded", 403),
        ] {
            let e = api_error(
                "query",
                http::StatusCode::from_u16(status).unwrap(),
                body(reason, status).as_bytes(),
            );
            assert!(e.is_retryable(), "{reason}: {e}");
        }
        let denied = api_error(
            "query",
            http::StatusCode::FORBIDDEN,
            body("accessDenied", 403).as_bytes(),
        );
        assert!(!denied.is_retryable() && denied.to_string().contains("credentials_path"));
        assert!(api_error("query", http::StatusCode::BAD_GATEWAY, b"<html>").is_retryable());
    }

    #[test]
    fn urls_percent_encode_each_segment() {
        let c = Client {
            http: reqwest::Client::new(),
            api: url::Url::parse("http://h:1/bigquery/v2/").unwrap(),
            project: "example.com:p".into(),
            location: None,
            signer: std::sync::Arc::new(Signer {
                client_email: String::new(),
                key: jsonwebtoken::EncodingKey::from_secret(b"x"),
                key_id: None,
                token_url: String::new(),
            }),
            token: Default::default(),
            wait_ms: 0,
        };
        assert_eq!(
            c.url(&[
                "projects",
                "example.com:p",
                "datasets",
                "d/x",
                "tables",
                "t"
            ])
            .as_str(),
            "http://h:1/bigquery/v2/projects/example.com:p/datasets/d%2Fx/tables/t"
        );
    }
}
