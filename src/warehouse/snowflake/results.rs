//! The window's one statement, sent by us, and its result streamed.
//!
//! `snowflake-api` 0.14 holds a whole result in memory (it downloads every
//! chunk at once before returning), so the window's statement does not go
//! through it. The statement goes out as the crate sends its own: `POST
//! /queries/v1/query-request` with `{"sqlText", "asyncExec": false,
//! "sequenceId", "isInternal": false}`, `Accept: application/snowflake` (the
//! Arrow result format), the crate's session token in `Authorization`, through
//! the same HTTP client (so [`super::statements::LongStatements`] polls it past
//! Snowflake's answer window and cancels it when abandoned, and the base URL
//! applies). [`CaptureSession`], the outermost middleware of that client, keeps
//! the token, URL and sequence number of the crate's latest statement for this.
//!
//! A large result comes in parts: `data.rowsetBase64` (an Arrow IPC stream,
//! possibly empty) inline, and `data.chunks[]` (`url`, `rowCount`), each an
//! Arrow IPC stream, gzip'd, fetched from (on Snowflake, pre-signed cloud
//! storage) URLs with the headers of `data.chunkHeaders`, or, without those,
//! the SSE-C headers built from `data.qrmk` (as the Python connector does).
//! Chunks are fetched by tasks of their own, at most [`CHUNKS_IN_FLIGHT`] at
//! once, each decoded as it arrives and handed on in pages; the caller's
//! consumption paces the downloads, so memory holds a few chunks whatever the
//! result's size. A chunk GET carries only those headers (never the session
//! token) and is tried up to [`CHUNK_ATTEMPTS`] times.

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use base64::Engine;
use http::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest_middleware::{ClientWithMiddleware, Middleware, Next};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use snowflake_api::SnowflakeApiError;

use super::statements::{uuid_v4, QUERY_PATH};
use super::{classify, redact_urls};
use crate::warehouse::truncate;
use crate::warehouse::{Result, WarehouseError};

/// Result chunks downloaded (and decoded) at once, per window being read.
pub(super) const CHUNKS_IN_FLIGHT: usize = 2;
/// Tries of one chunk GET (it is idempotent) before the read fails, retryable.
const CHUNK_ATTEMPTS: u32 = 3;

/// What [`CaptureSession`] saw of the crate's latest statement. No `Debug`:
/// it holds the session token.
#[derive(Clone)]
struct Seen {
    authorization: HeaderValue,
    /// The `query-request` URL, without its query string.
    query_url: url::Url,
    sequence_id: u64,
}

/// The session of one `SnowflakeApi`, as its statements show it.
#[derive(Default)]
pub(super) struct SessionSeen(Mutex<Option<Seen>>);

impl SessionSeen {
    /// Whether the crate has sent a statement of this session yet.
    pub(super) fn is_known(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// The token header, a fresh `query-request` URL and the next sequence number.
    fn next_statement(&self) -> Option<(HeaderValue, url::Url, u64)> {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let seen = guard.as_mut()?;
        seen.sequence_id += 1;
        let mut url = seen.query_url.clone();
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string();
        url.query_pairs_mut()
            .append_pair("clientStartTime", &start)
            .append_pair("requestId", &uuid_v4())
            .append_pair("request_guid", &uuid_v4());
        Some((seen.authorization.clone(), url, seen.sequence_id))
    }

    fn saw(
        &self,
        mut authorization: HeaderValue,
        mut query_url: url::Url,
        sequence_id: Option<u64>,
    ) {
        // Never printed, whatever later formats a request or header map.
        authorization.set_sensitive(true);
        query_url.set_query(None);
        query_url.set_fragment(None);
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let sequence_id = sequence_id
            .unwrap_or(0)
            .max(guard.as_ref().map_or(0, |s| s.sequence_id));
        *guard = Some(Seen {
            authorization,
            query_url,
            sequence_id,
        });
    }
}

/// Keeps the session token, URL and sequence number of every statement the
/// crate sends (and of ours: the same values). Never logs them.
pub(super) struct CaptureSession(pub(super) Arc<SessionSeen>);

#[async_trait]
impl Middleware for CaptureSession {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        if req.method() == reqwest::Method::POST && req.url().path().ends_with(QUERY_PATH) {
            if let Some(auth) = req
                .headers()
                .get(AUTHORIZATION)
                .filter(|a| a.as_bytes().starts_with(b"Snowflake Token="))
            {
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Body {
                    sequence_id: Option<u64>,
                }
                let sequence_id = req
                    .body()
                    .and_then(|b| b.as_bytes())
                    .and_then(|b| serde_json::from_slice::<Body>(b).ok())
                    .and_then(|b| b.sequence_id);
                self.0.saw(auth.clone(), req.url().clone(), sequence_id);
            }
        }
        next.run(req, extensions).await
    }
}

/// The body of a `query-request`, as the crate sends it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueryBody<'a> {
    sql_text: &'a str,
    async_exec: bool,
    sequence_id: u64,
    is_internal: bool,
}

/// One result chunk still to fetch.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(super) struct ChunkRef {
    pub(super) url: String,
}

/// A statement's answer: its inline rows, and the chunks to fetch with `headers`.
pub(super) struct Answer {
    pub(super) inline: Vec<RecordBatch>,
    pub(super) chunks: Vec<ChunkRef>,
    pub(super) headers: HeaderMap,
    pub(super) client: ClientWithMiddleware,
}

#[derive(Deserialize)]
struct Reply {
    success: Option<bool>,
    code: Option<serde_json::Value>,
    message: Option<String>,
    data: Option<ReplyData>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ReplyData {
    error_code: Option<serde_json::Value>,
    rowset_base64: Option<String>,
    rowset: Option<IgnoredAny>,
    returned: Option<i64>,
    #[serde(default)]
    chunks: Vec<ChunkRef>,
    #[serde(default)]
    chunk_headers: HashMap<String, String>,
    qrmk: Option<String>,
}

fn text_of(v: Option<serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Sends `sql` as a statement of the session `seen` describes, through `client`,
/// and reads its answer (the inline part decoded; the chunks not fetched yet).
pub(super) async fn execute(
    client: &ClientWithMiddleware,
    seen: &SessionSeen,
    sql: &str,
) -> Result<Answer> {
    let (authorization, url, sequence_id) = seen.next_statement().ok_or_else(|| {
        WarehouseError::Transient("no Snowflake session to send the statement in".into())
    })?;
    let sent = client
        .post(url)
        .header(ACCEPT, HeaderValue::from_static("application/snowflake"))
        .header(AUTHORIZATION, authorization)
        .json(&QueryBody {
            sql_text: sql,
            async_exec: false,
            sequence_id,
            is_internal: false,
        })
        .send()
        .await
        .map_err(|e| {
            WarehouseError::Transient(redact_urls(&format!("Snowflake request failed: {e}")))
        })?;
    let status = sent.status();
    let body = sent.bytes().await.map_err(|e| {
        WarehouseError::Transient(redact_urls(&format!("Snowflake request failed: {e}")))
    })?;
    let reply: Reply = serde_json::from_slice(&body).map_err(|e| {
        WarehouseError::Transient(format!(
            "Snowflake answered HTTP {status} with an unreadable reply ({e}): {}",
            redact_urls(&truncate(&String::from_utf8_lossy(&body), 200))
        ))
    })?;
    drop(body);
    parse(reply, client.clone())
}

fn parse(reply: Reply, client: ClientWithMiddleware) -> Result<Answer> {
    let data = reply.data.unwrap_or_default();
    if reply.success != Some(true) {
        let code = text_of(data.error_code)
            .or_else(|| text_of(reply.code))
            .unwrap_or_else(|| "000000".into());
        return Err(classify(SnowflakeApiError::ApiError(
            code,
            reply.message.unwrap_or_default(),
        )));
    }
    let headers = chunk_headers(&data.chunk_headers, data.qrmk.as_deref())?;
    let inline = match (&data.rowset_base64, &data.rowset) {
        _ if data.returned == Some(0) && data.chunks.is_empty() => Vec::new(),
        (Some(b64), _) if b64.is_empty() => Vec::new(),
        (Some(b64), _) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| {
                    WarehouseError::Transient(format!(
                        "Snowflake's rowsetBase64 is not base64: {e}"
                    ))
                })?;
            decode_ipc(&bytes)?
        }
        (None, Some(_)) => {
            return Err(WarehouseError::Transient(
                "expected Arrow rows, got a JSON rowset".into(),
            ))
        }
        (None, None) => {
            return Err(WarehouseError::Transient(
                "Snowflake answered without rows (no rowsetBase64)".into(),
            ))
        }
    };
    Ok(Answer {
        inline,
        chunks: data.chunks,
        headers,
        client,
    })
}

/// The headers of chunk GETs: `chunkHeaders` as given, else SSE-C with `qrmk`.
fn chunk_headers(given: &HashMap<String, String>, qrmk: Option<&str>) -> Result<HeaderMap> {
    let bad = |e: String| WarehouseError::Transient(format!("Snowflake's chunkHeaders: {e}"));
    let mut headers = HeaderMap::new();
    if !given.is_empty() {
        for (k, v) in given {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| bad(e.to_string()))?;
            let mut value = HeaderValue::from_str(v).map_err(|e| bad(e.to_string()))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
    } else if let Some(key) = qrmk.filter(|k| !k.is_empty()) {
        headers.insert(
            "x-amz-server-side-encryption-customer-algorithm",
            HeaderValue::from_static("AES256"),
        );
        let mut value = HeaderValue::from_str(key).map_err(|e| bad(e.to_string()))?;
        value.set_sensitive(true);
        headers.insert("x-amz-server-side-encryption-customer-key", value);
    }
    Ok(headers)
}

/// The record batches of an Arrow IPC stream, gunzipped first when gzip'd
/// (a chunk whose `Content-Encoding` the HTTP client already removed is not).
pub(super) fn decode_ipc(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    let bad = |e: String| WarehouseError::Transient(format!("unreadable Arrow result: {e}"));
    let mut unzipped = Vec::new();
    let raw: &[u8] = if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut unzipped)
            .map_err(|e| bad(format!("gzip: {e}")))?;
        &unzipped
    } else {
        bytes
    };
    let reader =
        arrow_ipc::reader::StreamReader::try_new(raw, None).map_err(|e| bad(e.to_string()))?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))
}

/// Fetches and decodes one chunk.
async fn fetch_chunk(
    client: ClientWithMiddleware,
    url: String,
    headers: HeaderMap,
) -> Result<Vec<RecordBatch>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let failure = match client.get(&url).headers(headers.clone()).send().await {
            Ok(r) if r.status().is_success() => match r.bytes().await {
                Ok(bytes) => return decode_ipc(&bytes),
                Err(e) => e.to_string(),
            },
            Ok(r) if r.status().is_client_error() => {
                attempt = CHUNK_ATTEMPTS;
                format!("HTTP {}", r.status())
            }
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => e.to_string(),
        };
        if attempt >= CHUNK_ATTEMPTS {
            return Err(WarehouseError::Transient(redact_urls(&format!(
                "result chunk {url}: {failure}"
            ))));
        }
        tokio::time::sleep(Duration::from_millis(200) * attempt).await;
    }
}

/// A chunk being fetched by a task of its own (so it downloads while the
/// caller works on the previous one); the task is aborted when this is dropped.
pub(super) struct Fetch(tokio::task::JoinHandle<Result<Vec<RecordBatch>>>);

impl Fetch {
    pub(super) fn start(
        client: ClientWithMiddleware,
        chunk: ChunkRef,
        headers: HeaderMap,
    ) -> Fetch {
        Fetch(tokio::spawn(fetch_chunk(client, chunk.url, headers)))
    }
}

impl Future for Fetch {
    type Output = Result<Vec<RecordBatch>>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::{split_pages, Page};
    use arrow_array::Int64Array;
    use arrow_schema::{DataType, Field, Schema};
    use std::io::Write;

    fn batch(from: i64, n: i64) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("V", DataType::Int64, true)]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(Int64Array::from_iter_values(from..from + n))],
        )
        .unwrap()
    }

    fn ipc(batches: &[RecordBatch]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w =
            arrow_ipc::writer::StreamWriter::try_new(&mut out, &batches[0].schema()).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
        drop(w);
        out
    }

    fn values(pages: &[Page]) -> Vec<Vec<i64>> {
        pages
            .iter()
            .map(|p| {
                p.batches
                    .iter()
                    .flat_map(|b| {
                        b.column(0)
                            .as_any()
                            .downcast_ref::<Int64Array>()
                            .unwrap()
                            .values()
                            .to_vec()
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn batches_split_into_pages_of_at_most_page_rows_across_batch_edges() {
        let pages = split_pages(vec![batch(0, 5), batch(5, 0), batch(5, 4)], 4);
        assert_eq!(
            values(&pages),
            vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8]]
        );
        assert!(pages.iter().all(|p| p.num_rows() <= 4));
        assert!(split_pages(vec![batch(0, 0)], 4).is_empty());
        assert_eq!(
            values(&split_pages(vec![batch(0, 3)], 1_000_000)),
            vec![vec![0, 1, 2]]
        );
    }

    #[test]
    fn chunks_decode_gzipped_or_plain() {
        let plain = ipc(&[batch(0, 3), batch(3, 2)]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        for bytes in [&plain, &gz] {
            let batches = decode_ipc(bytes).unwrap();
            assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
        }
        let e = decode_ipc(b"not arrow").unwrap_err();
        assert!(e.is_retryable(), "{e}");
    }

    fn client() -> ClientWithMiddleware {
        reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).build()
    }

    #[test]
    fn answers_give_inline_rows_chunks_and_their_headers() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(ipc(&[batch(0, 2)]));
        let reply: Reply = serde_json::from_value(serde_json::json!({
            "success": true, "code": null, "message": null,
            "data": {"rowsetBase64": b64, "returned": 2, "total": 10, "rowtype": [],
                     "chunks": [{"url": "https://b.s3.amazonaws.com/r/0?sig=x", "rowCount": 8, "uncompressedSize": 100}],
                     "chunkHeaders": {"x-amz-server-side-encryption-customer-key": "k"}}
        }))
        .unwrap();
        let a = parse(reply, client()).unwrap();
        assert_eq!(a.inline.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        assert_eq!(a.chunks.len(), 1);
        assert_eq!(
            a.headers
                .get("x-amz-server-side-encryption-customer-key")
                .unwrap(),
            "k"
        );
        // Without chunkHeaders, qrmk gives the SSE-C headers.
        let h = chunk_headers(&HashMap::new(), Some("qk")).unwrap();
        assert_eq!(
            h.get("x-amz-server-side-encryption-customer-algorithm")
                .unwrap(),
            "AES256"
        );
        assert_eq!(
            h.get("x-amz-server-side-encryption-customer-key").unwrap(),
            "qk"
        );
        assert!(chunk_headers(&HashMap::new(), None).unwrap().is_empty());
        // No rows: nothing inline, nothing to fetch.
        let empty: Reply = serde_json::from_value(serde_json::json!({
            "success": true, "data": {"rowsetBase64": "", "returned": 0, "total": 0}
        }))
        .unwrap();
        let a = parse(empty, client()).unwrap();
        assert!(a.inline.is_empty() && a.chunks.is_empty());
    }

    #[test]
    fn error_answers_classify_like_the_crates() {
        let reply = |code: &str| -> Reply {
            serde_json::from_value(serde_json::json!({
                "success": false, "code": code, "message": "m",
                "data": {"errorCode": code, "queryId": ""}
            }))
            .unwrap()
        };
        let err = |code: &str| match parse(reply(code), client()) {
            Ok(_) => panic!("{code} parsed as rows"),
            Err(e) => e,
        };
        assert!(err("390112").is_retryable());
        let missing = err("002003");
        assert!(
            !missing.is_retryable() && missing.to_string().contains("002003"),
            "{missing}"
        );
    }

    #[test]
    fn statements_reuse_the_crates_session_with_a_fresh_request_id() {
        let seen = SessionSeen::default();
        assert!(seen.next_statement().is_none() && !seen.is_known());
        let url = url::Url::parse(
            "https://acme.snowflakecomputing.com/queries/v1/query-request?requestId=r1&request_guid=g",
        )
        .unwrap();
        seen.saw(
            HeaderValue::from_static("Snowflake Token=\"t\""),
            url,
            Some(7),
        );
        let (auth, url, seq) = seen.next_statement().unwrap();
        assert_eq!(auth, "Snowflake Token=\"t\"");
        assert_eq!(seq, 8);
        assert_eq!(url.path(), "/queries/v1/query-request");
        let params: HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(params.len(), 3, "{url}");
        assert_ne!(params["requestId"], "r1");
        // A later statement of the crate with a lower number never goes back.
        seen.saw(
            HeaderValue::from_static("Snowflake Token=\"t2\""),
            url::Url::parse("https://acme.snowflakecomputing.com/queries/v1/query-request")
                .unwrap(),
            Some(3),
        );
        let (auth, _, seq) = seen.next_statement().unwrap();
        assert_eq!((auth.to_str().unwrap(), seq), ("Snowflake Token=\"t2\"", 9));
    }
}
