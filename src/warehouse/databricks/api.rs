//! The SQL Statement Execution API 2.0 as the backend uses it: statements
//! sent, polled while they run, cancelled when abandoned; result chunks
//! found by index and downloaded from their external links.
//!
//! A statement is `POST /api/2.0/sql/statements` with `disposition =
//! EXTERNAL_LINKS`, `format = ARROW_STREAM`, `on_wait_timeout = CONTINUE` and
//! a `wait_timeout` well inside `warehouse.query_timeout` ([`wait_timeout`]),
//! so the answer always comes back before the caller gives up and names the
//! statement. A statement still `PENDING`/`RUNNING` is polled at `GET
//! .../statements/{id}` (50 ms doubling to 1 s between polls) until it ends.
//! From the moment its id is known until it ends, a guard owns it: dropped
//! early (the caller's timeout, a shutdown, a dropped run) or after a failed
//! poll, it sends `POST .../statements/{id}/cancel` from a task of its own
//! (stopping polling does not stop a statement; only a cancel does), which
//! [`settle_cancels`] lets finish before the process exits.
//!
//! A result is `manifest.total_chunk_count` chunks, each an Arrow IPC stream
//! behind a pre-signed link: the answer carries the first link(s), the rest
//! come from `GET .../result/chunks/{i}` when the chunk is wanted, and so does
//! a link that has expired (links live ≤ 15 minutes). A link is fetched
//! without the `Authorization` header (it carries its own credentials, and
//! cloud storage refuses a second mechanism), with the link's `http_headers`.
//!
//! Auth is a personal access token, or OAuth machine-to-machine: `POST
//! {host}/oidc/v1/token` (`grant_type=client_credentials&scope=all-apis`,
//! client id and secret as HTTP Basic), the access token cached until a
//! minute before it expires and fetched anew after a 401/403.
//!
//! Never logged or put in errors: tokens, the client secret, link URLs (their
//! query strings are credentials), link headers, the SQL.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use serde::{Deserialize, Serialize};

use crate::config::Secret;
use crate::warehouse::{Result, WarehouseError};

/// Result chunks downloaded (and decoded) at once, per window being read.
pub(crate) const CHUNKS_IN_FLIGHT: usize = 2;
/// Tries of one chunk download (a GET, idempotent) before the read fails, retryable.
const CHUNK_ATTEMPTS: u32 = 3;
const FIRST_POLL_DELAY: Duration = Duration::from_millis(50);
const LAST_POLL_DELAY: Duration = Duration::from_secs(1);
/// Upper bound of one cancel request.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);
/// A link this close to its expiration is asked for again instead.
const LINK_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// Cancel requests not finished yet (see [`settle_cancels`]).
static PENDING_CANCELS: AtomicUsize = AtomicUsize::new(0);

/// Waits until every cancel sent for an abandoned statement has been answered
/// (or has failed), at most `limit`; true when none is left.
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

/// How the daemon proves who it is.
pub(crate) enum Auth {
    Token(Secret),
    OAuth { client_id: String, secret: Secret },
}

/// `wait_timeout` for a statement bounded by `query_timeout`: half of it, at
/// most 30 s, in whole seconds; `0s` (answer at once, then poll) when that is
/// under the API's least wait of 5 s. Half, so the answer (and with it the
/// statement's id, which a cancel needs) arrives long before the caller gives up.
pub(crate) fn wait_timeout(query_timeout: Duration) -> String {
    let secs = (query_timeout / 2).as_secs().min(30);
    if secs < 5 {
        "0s".into()
    } else {
        format!("{secs}s")
    }
}

#[derive(Serialize)]
struct ExecuteRequest<'a> {
    statement: &'a str,
    warehouse_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    catalog: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schema: Option<&'a str>,
    wait_timeout: &'a str,
    on_wait_timeout: &'static str,
    disposition: &'static str,
    format: &'static str,
}

#[derive(Deserialize, Default)]
pub(crate) struct StatementResponse {
    statement_id: Option<String>,
    status: Option<Status>,
    manifest: Option<Manifest>,
    result: Option<ResultData>,
}

#[derive(Deserialize, Default)]
struct Status {
    state: Option<String>,
    error: Option<ServiceError>,
}

#[derive(Deserialize, Default)]
struct ServiceError {
    error_code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize, Default)]
struct Manifest {
    total_chunk_count: Option<u64>,
    #[serde(default)]
    truncated: bool,
}

#[derive(Deserialize, Default)]
struct ResultData {
    #[serde(default)]
    external_links: Vec<ExternalLink>,
}

/// A pre-signed link to one chunk. No `Debug`: the URL and headers are credentials.
#[derive(Deserialize, Clone)]
pub(crate) struct ExternalLink {
    chunk_index: u64,
    external_link: String,
    expiration: Option<String>,
    #[serde(default)]
    http_headers: HashMap<String, String>,
}

impl ExternalLink {
    /// Whether the link is still good for a while (unknown expirations are).
    fn fresh(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.expiration
            .as_deref()
            .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
            .is_none_or(|e| e.with_timezone(&chrono::Utc) - LINK_MARGIN > now)
    }
}

/// A statement that succeeded: where its result's chunks are.
pub(crate) struct Succeeded {
    pub(crate) statement_id: String,
    pub(crate) chunk_count: u64,
    /// Links the answer carried, by chunk index.
    pub(crate) links: HashMap<u64, ExternalLink>,
}

/// An error body of the REST API: `{"error_code", "message"}`.
#[derive(Deserialize, Default)]
struct ApiErrorBody {
    error_code: Option<String>,
    message: Option<String>,
}

/// The client of one workspace and warehouse. Cheap to clone (shares the pool and token cache).
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    host: url::Url,
    warehouse_id: String,
    auth: std::sync::Arc<Auth>,
    /// OAuth: the access token (already `Bearer ...`, sensitive) and when to stop using it.
    oauth: std::sync::Arc<tokio::sync::Mutex<Option<(HeaderValue, Instant)>>>,
    wait_timeout: String,
}

impl Client {
    pub(crate) fn new(
        host: url::Url,
        warehouse_id: String,
        auth: Auth,
        query_timeout: Duration,
    ) -> Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(query_timeout))
            // Statements are bounded by the caller's `query_timeout`; this, a
            // moment later, bounds every single request (a poll, a chunk).
            .timeout(query_timeout + Duration::from_millis(500))
            .build()
            .map_err(|e| WarehouseError::Permanent(format!("HTTP client: {e}")))?;
        Ok(Client {
            http,
            host,
            warehouse_id,
            auth: std::sync::Arc::new(auth),
            oauth: Default::default(),
            wait_timeout: wait_timeout(query_timeout),
        })
    }

    fn url(&self, path: &str) -> url::Url {
        let mut url = self.host.clone();
        let joined = format!("{}{path}", self.host.path().trim_end_matches('/'));
        url.set_path(&joined);
        url.set_query(None);
        url
    }

    /// The `Authorization` header value, fetching an OAuth token when none is cached.
    async fn authorization(&self) -> Result<HeaderValue> {
        let (client_id, secret) = match &*self.auth {
            Auth::Token(t) => {
                let mut v =
                    HeaderValue::from_str(&format!("Bearer {}", t.expose())).map_err(|_| {
                        WarehouseError::Permanent(
                            "warehouse.token: not a valid header value".into(),
                        )
                    })?;
                v.set_sensitive(true);
                return Ok(v);
            }
            Auth::OAuth { client_id, secret } => (client_id, secret),
        };
        let mut cached = self.oauth.lock().await;
        if let Some((v, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(v.clone());
            }
        }
        let reply = self
            .http
            .post(self.url("/oidc/v1/token"))
            .basic_auth(client_id, Some(secret.expose()))
            .form(&[("grant_type", "client_credentials"), ("scope", "all-apis")])
            .send()
            .await
            .map_err(|e| transport("OAuth token request", e))?;
        let status = reply.status();
        if !status.is_success() {
            let body = reply.text().await.unwrap_or_default();
            let text = format!(
                "Databricks refused the OAuth client credentials (HTTP {status}): {}",
                super::super::oauth_error(&body)
            );
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                WarehouseError::Transient(text)
            } else {
                WarehouseError::Permanent(text)
            });
        }
        let (v, until) = super::super::bearer_from_token_reply(reply).await?;
        *cached = Some((v.clone(), until));
        Ok(v)
    }

    /// Sends an API request with the credentials; after a 401/403 under OAuth
    /// the cached token is dropped and the request sent once more with a new one.
    async fn send(
        &self,
        what: &str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<bytes_body::Body> {
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
            if (status.as_u16() == 401 || status.as_u16() == 403)
                && matches!(*self.auth, Auth::OAuth { .. })
                && !retried
            {
                *self.oauth.lock().await = None;
                retried = true;
                continue;
            }
            if !status.is_success() {
                return Err(api_error(what, status, &body));
            }
            return Ok(bytes_body::Body(body));
        }
    }

    /// Runs `sql` to its end and returns where its result is. Counted by the
    /// caller; bounded by the caller's timeout (dropping this future cancels
    /// the statement at the warehouse).
    pub(crate) async fn execute(
        &self,
        sql: &str,
        catalog: Option<&str>,
        schema: Option<&str>,
    ) -> Result<Succeeded> {
        let body = ExecuteRequest {
            statement: sql,
            warehouse_id: &self.warehouse_id,
            catalog,
            schema,
            wait_timeout: &self.wait_timeout,
            on_wait_timeout: "CONTINUE",
            disposition: "EXTERNAL_LINKS",
            format: "ARROW_STREAM",
        };
        let url = self.url("/api/2.0/sql/statements");
        let first = self
            .send("statement", |http| http.post(url.clone()).json(&body))
            .await?;
        let mut answer: StatementResponse = first.json("statement")?;
        let id = answer.statement_id.clone().ok_or_else(|| {
            WarehouseError::Transient("Databricks answered a statement without statement_id".into())
        })?;
        let mut guard = CancelOnDrop(Some(Cancel {
            client: self.clone(),
            statement_id: id.clone(),
        }));
        let mut delay = FIRST_POLL_DELAY;
        let mut polls = 0u32;
        loop {
            match outcome(&id, answer)? {
                Outcome::Running => {}
                Outcome::Succeeded(s) => {
                    guard.disarm();
                    if polls > 0 {
                        tracing::debug!(statement_id = %id, polls, "Databricks statement done after polling");
                    }
                    return Ok(s);
                }
                Outcome::Ended(e) => {
                    guard.disarm();
                    return Err(e);
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(LAST_POLL_DELAY);
            polls += 1;
            let url = self.url(&format!("/api/2.0/sql/statements/{id}"));
            answer = self
                .send("statement poll", |http| http.get(url.clone()))
                .await?
                .json("statement poll")?;
        }
    }

    /// The link of chunk `index` of a statement, from the API.
    async fn link(&self, statement_id: &str, index: u64) -> Result<ExternalLink> {
        let url = self.url(&format!(
            "/api/2.0/sql/statements/{statement_id}/result/chunks/{index}"
        ));
        let data: ResultData = self
            .send("result chunk link", |http| http.get(url.clone()))
            .await?
            .json("result chunk link")?;
        data.external_links
            .into_iter()
            .find(|l| l.chunk_index == index)
            .ok_or_else(|| {
                WarehouseError::Transient(format!(
                    "Databricks gave no link for chunk {index} of statement {statement_id}"
                ))
            })
    }

    /// Downloads and decodes chunk `index`, using `known` when it is still
    /// fresh, else asking for its link; a refused download (an expired link)
    /// asks once more.
    pub(crate) async fn chunk(
        &self,
        statement_id: &str,
        index: u64,
        known: Option<ExternalLink>,
    ) -> Result<Vec<RecordBatch>> {
        let mut link = match known.filter(|l| l.fresh(chrono::Utc::now())) {
            Some(l) => l,
            None => self.link(statement_id, index).await?,
        };
        let mut attempt = 0;
        let mut renewed = false;
        loop {
            attempt += 1;
            let failure = match self.download(&link).await {
                Ok(bytes) => return decode_ipc(&bytes),
                Err(Download::Refused(status)) if !renewed => {
                    renewed = true;
                    link = self.link(statement_id, index).await?;
                    attempt -= 1;
                    format!("HTTP {status}")
                }
                Err(Download::Refused(status)) => {
                    attempt = CHUNK_ATTEMPTS;
                    format!("HTTP {status}")
                }
                Err(Download::Failed(e)) => e,
            };
            if attempt >= CHUNK_ATTEMPTS {
                return Err(WarehouseError::Transient(format!(
                    "result chunk {index} of Databricks statement {statement_id}: {failure}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200) * attempt).await;
        }
    }

    async fn download(&self, link: &ExternalLink) -> std::result::Result<Vec<u8>, Download> {
        let mut headers = HeaderMap::new();
        for (k, v) in &link.http_headers {
            let (Ok(name), Ok(mut value)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) else {
                return Err(Download::Failed(
                    "a link header is not a valid header".into(),
                ));
            };
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        // No Authorization: the link carries its own credentials.
        let reply = self
            .http
            .get(&link.external_link)
            .headers(headers)
            .send()
            .await
            .map_err(|e| Download::Failed(e.without_url().to_string()))?;
        let status = reply.status();
        if status.is_client_error() {
            return Err(Download::Refused(status));
        }
        if !status.is_success() {
            return Err(Download::Failed(format!("HTTP {status}")));
        }
        reply
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| Download::Failed(e.without_url().to_string()))
    }

    async fn cancel(&self, statement_id: &str) -> Result<()> {
        let url = self.url(&format!("/api/2.0/sql/statements/{statement_id}/cancel"));
        self.send("cancel", |http| {
            http.post(url.clone())
                .json(&serde_json::json!({}))
                .timeout(CANCEL_TIMEOUT)
        })
        .await
        .map(|_| ())
    }
}

enum Download {
    /// 4xx: the link was refused (expired, or not valid), retrying it cannot help.
    Refused(http::StatusCode),
    Failed(String),
}

mod bytes_body {
    /// A response body read whole (API answers are small: rows come by link).
    pub(crate) struct Body(pub(crate) hyper::body::Bytes);

    impl Body {
        pub(crate) fn json<T: serde::de::DeserializeOwned>(
            &self,
            what: &str,
        ) -> crate::warehouse::Result<T> {
            serde_json::from_slice(&self.0).map_err(|e| {
                crate::warehouse::WarehouseError::Transient(format!(
                    "Databricks answered the {what} with an unreadable reply: {e}"
                ))
            })
        }
    }
}

/// What an answer says of its statement.
enum Outcome {
    Running,
    Succeeded(Succeeded),
    /// Failed, cancelled or closed: the statement is over, with this error.
    Ended(WarehouseError),
}

/// Sorts a statement answer. A state not known (a newer API) counts as running.
fn outcome(id: &str, answer: StatementResponse) -> Result<Outcome> {
    let status = answer.status.unwrap_or_default();
    Ok(match status.state.as_deref().unwrap_or("") {
        "SUCCEEDED" => {
            let manifest = answer.manifest.unwrap_or_default();
            if manifest.truncated {
                return Ok(Outcome::Ended(WarehouseError::Permanent(format!(
                    "Databricks truncated the result of statement {id} (over the API's 100 GiB limit)"
                ))));
            }
            let links = answer
                .result
                .map(|r| r.external_links)
                .unwrap_or_default()
                .into_iter()
                .map(|l| (l.chunk_index, l))
                .collect();
            Outcome::Succeeded(Succeeded {
                statement_id: id.to_string(),
                chunk_count: manifest.total_chunk_count.unwrap_or(0),
                links,
            })
        }
        "FAILED" => {
            let e = status.error.unwrap_or_default();
            Outcome::Ended(statement_error(
                e.error_code.as_deref().unwrap_or("UNKNOWN"),
                e.message.as_deref().unwrap_or(""),
            ))
        }
        state @ ("CANCELED" | "CLOSED") => Outcome::Ended(WarehouseError::Transient(format!(
            "Databricks statement {id} ended {state} (cancelled or closed at the warehouse)"
        ))),
        _ => Outcome::Running,
    })
}

/// A statement's execution error: a retry helps only when the service says
/// it was busy or failed inside.
pub(crate) fn statement_error(code: &str, message: &str) -> WarehouseError {
    let text = format!(
        "Databricks error {code}: {}",
        crate::warehouse::truncate(message, 500)
    );
    match code {
        "TEMPORARILY_UNAVAILABLE"
        | "WORKSPACE_TEMPORARILY_UNAVAILABLE"
        | "SERVICE_UNDER_MAINTENANCE"
        | "RESOURCE_EXHAUSTED"
        | "DEADLINE_EXCEEDED"
        | "IO_ERROR"
        | "ABORTED"
        | "INTERNAL_ERROR" => WarehouseError::Transient(text),
        _ => WarehouseError::Permanent(text),
    }
}

/// A refused request (`{"error_code", "message"}` with an HTTP status):
/// credentials and bad requests are for a person, 429 and 5xx pass.
fn api_error(what: &str, status: http::StatusCode, body: &[u8]) -> WarehouseError {
    let parsed: ApiErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let code = parsed
        .error_code
        .unwrap_or_else(|| status.as_u16().to_string());
    let message = parsed
        .message
        .unwrap_or_else(|| crate::warehouse::truncate(&String::from_utf8_lossy(body), 200));
    let text = format!(
        "Databricks refused the {what} (HTTP {status}, {code}): {}",
        crate::warehouse::truncate(&message, 500)
    );
    match status.as_u16() {
        401 | 403 => WarehouseError::Permanent(format!(
            "{text} (check warehouse.token or client_id/client_secret)"
        )),
        429 | 500..=599 => WarehouseError::Transient(text),
        _ => WarehouseError::Permanent(text),
    }
}

/// A request that got no answer: retryable. The URL is left out (the host
/// is in the config; chunk URLs are credentials).
fn transport(what: &str, e: reqwest::Error) -> WarehouseError {
    WarehouseError::Transient(format!(
        "Databricks {what} failed: {}",
        error_chain(&e.without_url())
    ))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text += &format!(": {s}");
        source = s.source();
    }
    text
}

/// The record batches of an Arrow IPC stream (an empty body is none).
pub(crate) fn decode_ipc(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |e: String| WarehouseError::Transient(format!("unreadable Arrow result chunk: {e}"));
    let reader = arrow_ipc::reader::StreamReader::try_new(Cursor::new(bytes), None)
        .map_err(|e| bad(e.to_string()))?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))
}

/// Cancels its statement when dropped armed.
struct CancelOnDrop(Option<Cancel>);

struct Cancel {
    client: Client,
    statement_id: String,
}

impl CancelOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(Cancel {
            client,
            statement_id,
        }) = self.0.take()
        else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(%statement_id, "abandoned Databricks statement not cancelled: no runtime left");
            return;
        };
        tracing::info!(%statement_id, "cancelling an abandoned Databricks statement");
        PENDING_CANCELS.fetch_add(1, Ordering::SeqCst);
        runtime.spawn(async move {
            match client.cancel(&statement_id).await {
                Ok(()) => tracing::debug!(%statement_id, "Databricks took the cancel"),
                Err(e) => tracing::warn!(%statement_id, error = %e, "could not cancel an abandoned Databricks statement"),
            }
            PENDING_CANCELS.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> StatementResponse {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn wait_timeouts_stay_well_inside_the_query_timeout_and_inside_the_api_range() {
        for (timeout, wait) in [
            (2, "0s"),
            (5, "0s"),
            (9, "0s"),
            (10, "5s"),
            (30, "15s"),
            (120, "30s"),
            (3600, "30s"),
        ] {
            assert_eq!(
                wait_timeout(Duration::from_secs(timeout)),
                wait,
                "{timeout}"
            );
        }
    }

    #[test]
    fn answers_sort_into_running_succeeded_and_ended() {
        let running =
            parse(serde_json::json!({"statement_id": "s", "status": {"state": "PENDING"}}));
        assert!(matches!(outcome("s", running).unwrap(), Outcome::Running));
        let done = parse(serde_json::json!({
            "statement_id": "s", "status": {"state": "SUCCEEDED"},
            "manifest": {"format": "ARROW_STREAM", "schema": {"column_count": 1, "columns": [
                {"name": "n", "type_name": "LONG", "type_text": "BIGINT", "position": 0}]},
                "total_chunk_count": 3, "chunks": [], "total_row_count": 9, "truncated": false},
            "result": {"external_links": [{"chunk_index": 0, "row_offset": 0, "row_count": 3,
                "external_link": "https://bucket.s3.amazonaws.com/x?X-Amz-Signature=s",
                "expiration": "2099-01-01T00:00:00.000Z", "next_chunk_index": 1,
                "next_chunk_internal_link": "/api/2.0/sql/statements/s/result/chunks/1"}]}
        }));
        let Outcome::Succeeded(s) = outcome("s", done).unwrap() else {
            panic!("not succeeded")
        };
        assert_eq!(s.chunk_count, 3);
        assert!(s.links.contains_key(&0) && s.links[&0].fresh(chrono::Utc::now()));
        let failed = parse(
            serde_json::json!({"statement_id": "s", "status": {"state": "FAILED",
            "error": {"error_code": "BAD_REQUEST", "message": "[TABLE_OR_VIEW_NOT_FOUND] ..."}}}),
        );
        let Outcome::Ended(e) = outcome("s", failed).unwrap() else {
            panic!("not ended")
        };
        assert!(
            !e.is_retryable() && e.to_string().contains("TABLE_OR_VIEW_NOT_FOUND"),
            "{e}"
        );
        let cancelled =
            parse(serde_json::json!({"statement_id": "s", "status": {"state": "CANCELED"}}));
        let Outcome::Ended(e) = outcome("s", cancelled).unwrap() else {
            panic!("not ended")
        };
        assert!(e.is_retryable(), "{e}");
        let truncated = parse(
            serde_json::json!({"statement_id": "s", "status": {"state": "SUCCEEDED"},
            "manifest": {"total_chunk_count": 1, "truncated": true}}),
        );
        assert!(matches!(
            outcome("s", truncated).unwrap(),
            Outcome::Ended(WarehouseError::Permanent(_))
        ));
    }

    #[test]
    fn refused_requests_classify_by_status_and_expired_links_are_not_fresh() {
        let e = api_error(
            "statement",
            http::StatusCode::FORBIDDEN,
            br#"{"error_code":"PERMISSION_DENIED","message":"Invalid access token."}"#,
        );
        assert!(
            !e.is_retryable() && e.to_string().contains("Invalid access token"),
            "{e}"
        );
        assert!(api_error(
            "statement",
            http::StatusCode::SERVICE_UNAVAILABLE,
            b"<html>"
        )
        .is_retryable());
        assert!(api_error("statement", http::StatusCode::TOO_MANY_REQUESTS, b"{}").is_retryable());
        assert!(statement_error("TEMPORARILY_UNAVAILABLE", "busy").is_retryable());
        let link = |exp: &str| ExternalLink {
            chunk_index: 0,
            external_link: String::new(),
            expiration: Some(exp.into()),
            http_headers: HashMap::new(),
        };
        let now = chrono::Utc::now();
        assert!(!link("2000-01-01T00:00:00Z").fresh(now));
        let soon = (now + chrono::TimeDelta::seconds(10)).to_rfc3339();
        assert!(!link(&soon).fresh(now));
        let later = (now + chrono::TimeDelta::minutes(10)).to_rfc3339();
        assert!(link(&later).fresh(now));
    }
}
