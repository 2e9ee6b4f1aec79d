//! Statements that outlive Snowflake's answer window, and statements
//! abandoned before their answer.
//!
//! Snowflake answers a statement still running after about 45 s with its
//! handle instead of its rows: `"code": "333334"`, `data.queryId`,
//! `data.getResultUrl` (a path, `/queries/{id}/result`) and
//! `data.queryAbortsAfterSecs` (the statement is aborted if nobody asks for
//! its result that long). The client GETs that URL with the query's own
//! headers; while the statement runs the answer is `"code": "333333"` with
//! the same data, and once it is done it is the normal query response (rowset,
//! chunks), as the official Python connector's `_post_request` loop expects.
//! `snowflake-api` 0.14 does not poll, so [`LongStatements`], a middleware of
//! the HTTP client the crate is given, does: a `query-request` answered with a
//! hand-off is polled (50 ms doubling to 1 s between GETs) and the final
//! answer is handed to the crate as if it had come at once. The caller's
//! timeout (`warehouse.query_timeout`) bounds the whole.
//!
//! A statement whose request is dropped before its final answer (that
//! timeout, a shutdown, a run dropped mid-statement), or whose polling fails,
//! would go on running and billing. Its guard then sends
//! `POST /queries/v1/abort-request` with `{"sqlText", "requestId"}` (the
//! `requestId` query parameter of the original `query-request`), as the
//! Python connector's `_cancel_query` does, from a task of its own, and logs
//! the query id at info. [`settle_aborts`] waits for those tasks, so a
//! process that is about to exit can let them finish.
//!
//! Never logged: headers (the session token is in `Authorization`), the SQL.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
};
use hyper::body::Bytes;
use reqwest::ResponseBuilderExt;
use reqwest_middleware::{ClientWithMiddleware, Middleware, Next};
use serde::{Deserialize, Serialize};

/// The path of every statement the crate sends.
pub(super) const QUERY_PATH: &str = "/queries/v1/query-request";
/// Answer codes of a statement still running: handed off (333334) and, on a
/// poll of its result URL, still running (333333).
const STILL_RUNNING: [&str; 2] = ["333334", "333333"];
/// Pause before the first poll; doubles up to [`LAST_POLL_DELAY`]. Snowflake
/// itself holds a result GET open until the result is ready or its own window
/// passes, so this only spaces out servers that answer at once.
const FIRST_POLL_DELAY: Duration = Duration::from_millis(50);
const LAST_POLL_DELAY: Duration = Duration::from_secs(1);
/// A hand-off answer is a few hundred bytes; larger bodies (rows) are never
/// parsed here, only passed on.
const MAX_HANDOFF_BYTES: usize = 64 * 1024;
/// Upper bound of one `abort-request`.
const ABORT_TIMEOUT: Duration = Duration::from_secs(10);

/// `abort-request` tasks not finished yet (see [`settle_aborts`]).
static PENDING_ABORTS: AtomicUsize = AtomicUsize::new(0);

/// Waits until every `abort-request` sent for an abandoned statement has been
/// answered (or has failed), at most `limit`; true when none is left. Call
/// before the process exits (a one-shot command after a timeout, the daemon
/// after abandoning runs at shutdown), or the aborts die with the runtime.
pub async fn settle_aborts(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if PENDING_ABORTS.load(Ordering::SeqCst) == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls statements Snowflake handed off, and cancels abandoned ones. Must
/// come before [`super::BaseUrl`] in the client: it resolves result URLs
/// against the account-host URL the crate built, and its polls go through
/// the rest of the chain.
pub(super) struct LongStatements {
    /// Sends `abort-request`s (the same HTTP client, with the base-URL rewrite
    /// when one is configured, without this middleware).
    aborts: ClientWithMiddleware,
}

impl LongStatements {
    pub(super) fn new(aborts: ClientWithMiddleware) -> Self {
        LongStatements { aborts }
    }
}

#[async_trait]
impl Middleware for LongStatements {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        if req.method() != reqwest::Method::POST || !req.url().path().ends_with(QUERY_PATH) {
            return next.run(req, extensions).await;
        }
        let statement = Statement::of(&req);
        let mut guard = AbortOnDrop(Some(Abort {
            client: self.aborts.clone(),
            query_url: statement.url.clone(),
            authorization: statement.headers.get(AUTHORIZATION).cloned(),
            request_id: statement.request_id.clone(),
            sql_text: statement.sql_text.clone(),
            query_id: None,
        }));
        let response = match next.clone().run(req, extensions).await {
            Ok(r) => r,
            Err(e) => {
                if never_sent(&e) {
                    guard.disarm();
                }
                return Err(e);
            }
        };
        let (mut head, mut body) = read(response).await?;
        let mut delay = FIRST_POLL_DELAY;
        let mut polls = 0u32;
        loop {
            let (query_id, result_url) = match answer(&body).map_err(middleware_error)? {
                Answer::Final => break,
                Answer::Running {
                    query_id,
                    result_url,
                } => (query_id, result_url),
            };
            if polls == 0 {
                tracing::debug!(
                    query_id = query_id.as_deref().unwrap_or("unknown"),
                    "Snowflake handed the statement off; polling its result"
                );
            }
            if let Some(id) = query_id {
                guard.know_query_id(id);
            }
            let url = result_url_of(&statement.url, &result_url).map_err(middleware_error)?;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(LAST_POLL_DELAY);
            polls += 1;
            let response = next.clone().run(statement.poll(url), extensions).await?;
            (head, body) = read(response).await?;
        }
        guard.disarm();
        if polls > 0 {
            tracing::debug!(polls, "Snowflake answered a handed-off statement");
        }
        Ok(head.response(body))
    }
}

/// What the middleware keeps of a `query-request` to poll and cancel it.
struct Statement {
    url: url::Url,
    headers: HeaderMap,
    timeout: Option<Duration>,
    /// The `requestId` query parameter: what `abort-request` names.
    request_id: String,
    sql_text: String,
}

impl Statement {
    fn of(req: &reqwest::Request) -> Statement {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            sql_text: String,
        }
        Statement {
            url: req.url().clone(),
            headers: req.headers().clone(),
            timeout: req.timeout().copied(),
            request_id: request_id(req.url()).unwrap_or_default(),
            sql_text: req
                .body()
                .and_then(|b| b.as_bytes())
                .and_then(|b| serde_json::from_slice::<Body>(b).ok())
                .map(|b| b.sql_text)
                .unwrap_or_default(),
        }
    }

    /// A GET of `url` with the statement's own headers (its session token),
    /// less those of its body.
    fn poll(&self, url: url::Url) -> reqwest::Request {
        let mut req = reqwest::Request::new(reqwest::Method::GET, url);
        for (name, value) in &self.headers {
            if name != CONTENT_TYPE && name != CONTENT_LENGTH && name != CONTENT_ENCODING {
                req.headers_mut().append(name, value.clone());
            }
        }
        *req.timeout_mut() = self.timeout;
        req
    }
}

/// The `requestId` query parameter of a `query-request` URL.
fn request_id(url: &url::Url) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == "requestId")
        .map(|(_, v)| v.into_owned())
}

/// What an answer to a statement says.
#[derive(Debug, PartialEq)]
enum Answer {
    /// Rows, an error, anything but a statement still running: for the crate.
    Final,
    /// Still running: poll `result_url` (as given, relative to the server).
    Running {
        query_id: Option<String>,
        result_url: String,
    },
}

/// Sorts an answer body; an error for a statement said to be running without
/// a URL to poll.
fn answer(body: &[u8]) -> Result<Answer, String> {
    #[derive(Deserialize)]
    struct Probe {
        code: Option<serde_json::Value>,
        data: Option<ProbeData>,
    }
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct ProbeData {
        query_id: Option<String>,
        get_result_url: Option<String>,
    }
    if body.len() > MAX_HANDOFF_BYTES {
        return Ok(Answer::Final);
    }
    let Ok(probe) = serde_json::from_slice::<Probe>(body) else {
        return Ok(Answer::Final);
    };
    let code = match probe.code {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return Ok(Answer::Final),
    };
    if !STILL_RUNNING.contains(&code.as_str()) {
        return Ok(Answer::Final);
    }
    let data = probe.data.unwrap_or_default();
    match data.get_result_url.filter(|u| !u.trim().is_empty()) {
        Some(result_url) => Ok(Answer::Running {
            query_id: data.query_id.filter(|q| !q.is_empty()),
            result_url,
        }),
        None => Err(format!(
            "Snowflake answered code {code} (statement {} still running) without data.getResultUrl",
            data.query_id.as_deref().unwrap_or("unknown")
        )),
    }
}

/// `getResultUrl` resolved against the statement's URL. Only a URL on the
/// statement's own server is polled: the poll carries the session token.
fn result_url_of(statement: &url::Url, get_result_url: &str) -> Result<url::Url, String> {
    let url = statement
        .join(get_result_url.trim())
        .map_err(|e| format!("Snowflake's getResultUrl is not a URL: {e}"))?;
    if url.origin() != statement.origin() {
        return Err(format!(
            "Snowflake's getResultUrl points at another server ({}); not polling it with the session token",
            super::redact_urls(url.as_str())
        ));
    }
    Ok(url)
}

/// The `abort-request` URL next to the statement's `query-request` URL, with
/// a fresh `requestId` of its own.
fn abort_url(query_url: &url::Url) -> url::Url {
    let mut url = query_url.clone();
    let path = url.path();
    let base = path
        .strip_suffix("query-request")
        .unwrap_or(path)
        .to_string();
    url.set_path(&format!("{base}abort-request"));
    url.set_query(Some(&format!("requestId={}", uuid_v4())));
    url.set_fragment(None);
    url
}

/// The body of an `abort-request` (the Python connector's `_cancel_query`).
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct AbortBody<'a> {
    sql_text: &'a str,
    request_id: &'a str,
}

/// A random (version 4) UUID in its usual text form.
pub(super) fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Whether a request failed before anything reached the server (so no
/// statement runs there): connection refused, DNS, TLS handshake.
fn never_sent(e: &reqwest_middleware::Error) -> bool {
    matches!(e, reqwest_middleware::Error::Reqwest(r) if r.is_connect())
}

fn middleware_error(message: String) -> reqwest_middleware::Error {
    reqwest_middleware::Error::Middleware(anyhow::anyhow!(message))
}

/// A response's status line, headers and URL, kept while its body is read.
struct Head {
    status: http::StatusCode,
    version: http::Version,
    headers: HeaderMap,
    url: url::Url,
}

impl Head {
    /// The response again, its body now in memory (the crate reads it whole anyway).
    fn response(self, body: Bytes) -> reqwest::Response {
        let mut builder = http::Response::builder()
            .status(self.status)
            .version(self.version)
            .url(self.url);
        if let Some(headers) = builder.headers_mut() {
            *headers = self.headers;
        }
        let response = builder
            .body(body)
            .expect("status, version and headers are typed values");
        reqwest::Response::from(response)
    }
}

async fn read(response: reqwest::Response) -> reqwest_middleware::Result<(Head, Bytes)> {
    let head = Head {
        status: response.status(),
        version: response.version(),
        headers: response.headers().clone(),
        url: response.url().clone(),
    };
    let body = response.bytes().await?;
    Ok((head, body))
}

/// Sends an `abort-request` for its statement when dropped armed.
struct AbortOnDrop(Option<Abort>);

impl AbortOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }

    fn know_query_id(&mut self, id: String) {
        if let Some(abort) = &mut self.0 {
            abort.query_id = Some(id);
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(abort) = self.0.take() else {
            return;
        };
        let query_id = abort
            .query_id
            .as_deref()
            .unwrap_or("unknown (not handed off yet)");
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                query_id,
                request_id = %abort.request_id,
                "abandoned Snowflake statement not cancelled: no runtime left"
            );
            return;
        };
        tracing::info!(
            query_id,
            request_id = %abort.request_id,
            "cancelling an abandoned Snowflake statement"
        );
        let pending = Pending::start();
        runtime.spawn(async move {
            let _pending = pending;
            abort.send().await;
        });
    }
}

/// Counts a running `abort-request` task in [`PENDING_ABORTS`] while alive.
struct Pending;

impl Pending {
    fn start() -> Pending {
        PENDING_ABORTS.fetch_add(1, Ordering::SeqCst);
        Pending
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        PENDING_ABORTS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Everything an `abort-request` needs, owned by the guard.
struct Abort {
    client: ClientWithMiddleware,
    query_url: url::Url,
    authorization: Option<HeaderValue>,
    request_id: String,
    sql_text: String,
    /// Known once Snowflake has handed the statement off.
    query_id: Option<String>,
}

impl Abort {
    async fn send(self) {
        #[derive(Deserialize)]
        struct Reply {
            success: Option<bool>,
            code: Option<serde_json::Value>,
            message: Option<String>,
        }
        let query_id = self.query_id.as_deref().unwrap_or("unknown");
        let mut request = self
            .client
            .post(abort_url(&self.query_url))
            .header(ACCEPT, HeaderValue::from_static("application/snowflake"))
            .json(&AbortBody {
                sql_text: &self.sql_text,
                request_id: &self.request_id,
            })
            .timeout(ABORT_TIMEOUT);
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let reply = match request.send().await {
            Ok(r) => r.json::<Reply>().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match reply {
            Ok(Reply {
                success: Some(true),
                ..
            }) => tracing::debug!(query_id, "Snowflake cancelled the abandoned statement"),
            Ok(r) => tracing::info!(
                query_id,
                code = %r.code.map(|c| c.to_string()).unwrap_or_default(),
                message = %crate::warehouse::truncate(&r.message.unwrap_or_default(), 200),
                "Snowflake did not cancel the abandoned statement (it may have finished)"
            ),
            Err(e) => tracing::warn!(
                query_id,
                error = %super::redact_urls(&e),
                "could not cancel an abandoned Snowflake statement"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    const QUERY: &str = "https://acme.snowflakecomputing.com/queries/v1/query-request?\
                         clientStartTime=1&requestId=5f0c3a52-1b1e-4a57-9d0c-6b1d0f7a9e11&request_guid=x";

    #[test]
    fn handed_off_and_still_running_answers_are_polled_at_their_result_url() {
        for code in ["\"333334\"", "\"333333\"", "333334"] {
            let body = format!(
                r#"{{"code":{code},"message":"Asynchronous execution in progress.","success":true,
                    "data":{{"queryId":"01b2-q","getResultUrl":"/queries/01b2-q/result",
                    "queryAbortsAfterSecs":300,"progressDesc":null}}}}"#
            );
            assert_eq!(
                answer(body.as_bytes()),
                Ok(Answer::Running {
                    query_id: Some("01b2-q".into()),
                    result_url: "/queries/01b2-q/result".into()
                }),
                "{code}"
            );
        }
    }

    #[test]
    fn rows_errors_and_unreadable_answers_go_to_the_crate_unchanged() {
        for body in [
            r#"{"code":null,"success":true,"data":{"rowsetBase64":"","total":0,"queryId":"q"}}"#,
            r#"{"data":{"queryId":"q","getResultUrl":"/queries/q/result"},"success":true}"#,
            r#"{"code":"000604","message":"SQL execution canceled","success":false,"data":{"queryId":"q"}}"#,
            r#"{"code":"390104","success":false,"data":null}"#,
            "not json",
            "",
        ] {
            assert_eq!(answer(body.as_bytes()), Ok(Answer::Final), "{body}");
        }
        // A body of rows is never parsed, whatever it holds.
        let big = format!(
            r#"{{"code":"333334","data":{{"getResultUrl":"/x","pad":"{}"}}}}"#,
            "a".repeat(MAX_HANDOFF_BYTES)
        );
        assert_eq!(answer(big.as_bytes()), Ok(Answer::Final));
    }

    #[test]
    fn a_running_statement_without_a_result_url_is_an_error_naming_it() {
        let e =
            answer(br#"{"code":"333334","success":true,"data":{"queryId":"01b2-q"}}"#).unwrap_err();
        assert!(e.contains("333334") && e.contains("01b2-q"), "{e}");
        assert!(answer(br#"{"code":"333333","data":{"getResultUrl":" "}}"#).is_err());
    }

    #[test]
    fn result_urls_resolve_against_the_statement_and_stay_on_its_server() {
        let q = url(QUERY);
        assert_eq!(
            result_url_of(&q, "/queries/01b2-q/result")
                .unwrap()
                .as_str(),
            "https://acme.snowflakecomputing.com/queries/01b2-q/result"
        );
        // Its own query string is kept, the statement's is not.
        assert_eq!(
            result_url_of(&q, "/queries/q/result?x=1").unwrap().as_str(),
            "https://acme.snowflakecomputing.com/queries/q/result?x=1"
        );
        assert_eq!(
            result_url_of(&q, "https://acme.snowflakecomputing.com/queries/q/result")
                .unwrap()
                .as_str(),
            "https://acme.snowflakecomputing.com/queries/q/result"
        );
        // The session token goes nowhere else.
        for other in [
            "https://evil.example/queries/q/result?tok=1",
            "//evil.example/queries/q/result",
            "http://acme.snowflakecomputing.com/queries/q/result",
            "https://acme.snowflakecomputing.com:8443/queries/q/result",
        ] {
            let e = result_url_of(&q, other).unwrap_err();
            assert!(
                e.contains("another server") && !e.contains("tok=1"),
                "{other}: {e}"
            );
        }
    }

    #[test]
    fn polls_carry_the_statement_headers_but_not_its_body_headers() {
        let mut req = reqwest::Request::new(reqwest::Method::POST, url(QUERY));
        let h = req.headers_mut();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Snowflake Token=\"t\""),
        );
        h.insert(ACCEPT, HeaderValue::from_static("application/snowflake"));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("40"));
        *req.body_mut() = Some(r#"{"sqlText":"SELECT 1","asyncExec":false}"#.into());
        *req.timeout_mut() = Some(Duration::from_secs(7));
        let s = Statement::of(&req);
        assert_eq!(
            (s.request_id.as_str(), s.sql_text.as_str()),
            ("5f0c3a52-1b1e-4a57-9d0c-6b1d0f7a9e11", "SELECT 1")
        );
        let poll = s.poll(result_url_of(&s.url, "/queries/q/result").unwrap());
        assert_eq!(poll.method(), reqwest::Method::GET);
        assert_eq!(
            poll.headers().get(AUTHORIZATION).unwrap(),
            "Snowflake Token=\"t\""
        );
        assert_eq!(poll.headers().get(ACCEPT).unwrap(), "application/snowflake");
        assert!(poll.headers().get(CONTENT_TYPE).is_none());
        assert!(poll.headers().get(CONTENT_LENGTH).is_none());
        assert!(poll.body().is_none());
        assert_eq!(poll.timeout(), Some(&Duration::from_secs(7)));
    }

    #[test]
    fn aborts_name_the_original_request_id_and_sql_under_a_request_id_of_their_own() {
        let a = abort_url(&url(QUERY));
        assert_eq!(
            (a.host_str(), a.path()),
            (
                Some("acme.snowflakecomputing.com"),
                "/queries/v1/abort-request"
            )
        );
        let own = request_id(&a).unwrap();
        assert_eq!(a.query_pairs().count(), 1);
        assert_ne!(own, "5f0c3a52-1b1e-4a57-9d0c-6b1d0f7a9e11");
        assert_eq!(
            serde_json::to_value(AbortBody {
                sql_text: "SELECT 1",
                request_id: "5f0c3a52-1b1e-4a57-9d0c-6b1d0f7a9e11"
            })
            .unwrap(),
            serde_json::json!({"sqlText": "SELECT 1", "requestId": "5f0c3a52-1b1e-4a57-9d0c-6b1d0f7a9e11"})
        );
        // A base path (a proxy) is kept.
        let proxied = abort_url(&url(
            "http://127.0.0.1:9/sf/queries/v1/query-request?requestId=r",
        ));
        assert_eq!(proxied.path(), "/sf/queries/v1/abort-request");
    }

    #[test]
    fn request_ids_are_version_4_uuids() {
        let id = uuid_v4();
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert!(
            id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
            "{id}"
        );
        assert_eq!(&id[14..15], "4", "{id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(uuid_v4(), id);
    }
}
