//! The BigQuery backend against the REST stand-in
//! (`tests/support/bigquery_server.py`), and the stand-in against the
//! vendor's own client.
//!
//! - The stand-in is faithful as far as `google-cloud-bigquery` can tell:
//!   its `query_and_wait` (jobs.query, jobs.get, getQueryResults pages)
//!   reads the same rows of the 13 column types as the backend does.
//! - A sync of the built binary writes every row in 3 query jobs whatever
//!   the page size, with one access token, pages of at most `page_rows`,
//!   and never shows the key.
//! - The window is read page by page as it is consumed, one page ahead.
//! - Jobs handed off (`jobComplete: false`) are polled; one outliving
//!   `query_timeout` fails the run, retryable, and is cancelled.
//! - A missing column or table fails permanently naming it; an
//!   unreachable or hung endpoint fails retryably.

use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float64Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use base64::Engine as _;
use futures::StreamExt;
use materializer::config::BigqueryConfig;
use materializer::warehouse::bigquery::BigqueryWarehouse;
use materializer::warehouse::{TableRef, TimestampKind, TypeKind, Warehouse, WindowQuery};
use serde_json::{json, Value as Json};

use crate::fixtures::{shown, stat, stderr, stdout, Base, ConfigToml};
use crate::support::{
    free_port, project_root, scratch_dir, unique_name, venv_python, BigQueryServer,
};

/// The project that runs (and pays for) the jobs.
const BILLING: &str = "billing-project";
/// The project holding the data: views name it as `database`.
const DATA: &str = "data-project";

/// A Redis and scratch directory of its own, a stand-in of its own, a
/// dataset in [`DATA`] and a service-account key file.
struct World {
    base: Base,
    bq: BigQueryServer,
    dataset: String,
    key: std::path::PathBuf,
}

impl std::ops::Deref for World {
    type Target = Base;
    fn deref(&self) -> &Base {
        &self.base
    }
}

impl World {
    async fn new() -> World {
        let bq = BigQueryServer::start();
        let dataset = unique_name("ds").to_lowercase();
        bq.exec(BILLING, &[&format!("CREATE SCHEMA `{DATA}`.`{dataset}`")])
            .await;
        let base = Base::new("bigquery");
        let key = bq.key_file(&scratch_dir("bigquery-key"));
        let w = World {
            base,
            bq,
            dataset,
            key,
        };
        w.write_config(&w.config());
        w
    }

    fn config(&self) -> ConfigToml {
        ConfigToml::default()
            .set("warehouse.kind", "bigquery")
            .set("warehouse.project", BILLING)
            .set("warehouse.api_url", &self.bq.api_url)
            .set("warehouse.token_url", &self.bq.token_url)
            .set("warehouse.credentials_path", self.key.display().to_string())
            .set("warehouse.query_timeout", "5s")
            .set("profiles.redis_url", &self.redis.url)
            .set("profiles.project", "signals")
            .set(
                "registry.files",
                [format!("{}/*.json", self.views().display())],
            )
            .set("sync.page_rows", 100)
            .set("sync.write_batch", 20)
            .set("log.format", "json")
            .set("log.level", "info,materializer=debug")
    }

    fn table(&self, name: &str) -> String {
        format!("`{DATA}`.`{}`.`{name}`", self.dataset)
    }

    fn table_ref(&self, name: &str) -> TableRef {
        TableRef {
            database: Some(DATA.into()),
            schema: Some(self.dataset.clone()),
            table: name.into(),
        }
    }

    /// A table `events_{view}` of `n` rows: row `s` is entity `u{s % entities}`,
    /// `val = s`, `ts = 2024-01-01T00:00:00Z + s seconds` (TIMESTAMP), and
    /// the view `view` reading it.
    async fn generated(&self, view: &str, entities: u64, n: u64) {
        let table = format!("events_{view}");
        let values: Vec<String> = (0..n)
            .map(|s| {
                format!(
                    "('u{}', {s}, TIMESTAMP_MICROS({}))",
                    s % entities,
                    (1_704_067_200 + s as i64) * 1_000_000
                )
            })
            .collect();
        self.bq
            .exec(
                BILLING,
                &[
                    &format!(
                        "CREATE TABLE {} (user_id STRING, val INT64, ts TIMESTAMP)",
                        self.table(&table)
                    ),
                    &format!(
                        "INSERT INTO {} VALUES {}",
                        self.table(&table),
                        values.join(", ")
                    ),
                ],
            )
            .await;
        let doc = json!({
            "name": view, "version": 1, "entity": {"name": "user_id"},
            "batch_source": {"database": DATA, "schema": self.dataset, "table": table, "timestamp_field": "ts"},
            "fields": [{"name": "val", "type": "int64"}], "online": true
        });
        std::fs::write(self.views().join(format!("{view}.json")), doc.to_string()).unwrap();
    }

    async fn assert_converged(&self, view: &str, entities: u64, n: u64) {
        for e in 0..entities {
            let last = (0..n).filter(|s| s % entities == e).max().unwrap();
            let got = self
                .stored_values(&format!("{view}_v1"), "user_id", &format!("u{e}"), &["val"])
                .await;
            assert_eq!(got.map(|v| v["val"].clone()), Some(json!(last)), "u{e}");
        }
    }

    fn warehouse(&self, query_timeout: Duration) -> BigqueryWarehouse {
        BigqueryWarehouse::new(&BigqueryConfig {
            project: BILLING.into(),
            location: None,
            credentials_path: Some(self.key.clone()),
            dataset: None,
            api_url: Some(self.bq.api_url.clone()),
            storage_url: None,
            token_url: Some(self.bq.token_url.clone()),
            query_timeout,
            ntz_time_zone: "UTC".into(),
        })
        .unwrap()
    }
}

/// Runs `tests/support/bigquery_client.py` (the vendor client) on `queries`.
fn vendor_client(bq: &BigQueryServer, queries: &[String], page_size: usize) -> Json {
    let dir = scratch_dir("bigquery-client");
    let req = dir.join("request.json");
    let request = json!({"api_endpoint": bq.base_url, "project": BILLING,
                         "queries": queries, "page_size": page_size});
    std::fs::write(&req, request.to_string()).unwrap();
    let out = std::process::Command::new(venv_python("bigquery"))
        .arg(project_root().join("tests/support/bigquery_client.py"))
        .arg(&req)
        .output()
        .expect("run bigquery_client.py");
    assert!(out.status.success(), "bigquery_client.py: {}", shown(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One cell of a backend page in `bigquery_client.py`'s canonical form
/// (floats as f64, compared by [`same_cell`]).
fn canonical(col: &ArrayRef, i: usize, json_text: bool) -> Json {
    if col.is_null(i) {
        return Json::Null;
    }
    match col.data_type() {
        DataType::Int64 => json!(col.as_primitive::<Int64Type>().value(i).to_string()),
        DataType::Decimal128(_, scale) => {
            let v = col.as_primitive::<Decimal128Type>().value(i);
            let scale = *scale as u32;
            let digits = v.unsigned_abs().to_string();
            let digits = format!("{digits:0>width$}", width = scale as usize + 1);
            let (int, frac) = digits.split_at(digits.len() - scale as usize);
            let frac = frac.trim_end_matches('0');
            let sign = if v < 0 { "-" } else { "" };
            json!(if frac.is_empty() {
                format!("{sign}{int}")
            } else {
                format!("{sign}{int}.{frac}")
            })
        }
        DataType::Float64 => json!(col.as_primitive::<Float64Type>().value(i)),
        DataType::Boolean => json!(col.as_boolean().value(i)),
        DataType::Utf8 if json_text => {
            let v: Json = serde_json::from_str(col.as_string::<i32>().value(i)).unwrap();
            json!(serde_json::to_string(&v).unwrap())
        }
        DataType::Utf8 => json!(col.as_string::<i32>().value(i)),
        DataType::Binary => {
            json!(base64::engine::general_purpose::STANDARD.encode(col.as_binary::<i32>().value(i)))
        }
        DataType::Timestamp(_, _) => json!(col.as_primitive::<TimestampMicrosecondType>().value(i)),
        DataType::Date32 => json!(col.as_primitive::<Date32Type>().value(i)),
        DataType::List(_) => {
            let list = col.as_list::<i32>();
            let values = list.value(i);
            Json::Array(
                (0..values.len())
                    .map(|j| canonical(&values, j, false))
                    .collect(),
            )
        }
        other => panic!("no canonical form for {other}"),
    }
}

/// Whether the vendor's cell and the backend's agree (floats by value, NaN
/// equal to NaN; JSON documents by value).
fn same_cell(vendor: &Json, backend: &Json) -> bool {
    match (vendor, backend) {
        (Json::String(s), Json::Number(n)) => {
            let (a, b) = (s.parse::<f64>().unwrap(), n.as_f64().unwrap());
            a == b || (a.is_nan() && b.is_nan())
        }
        // The vendor client reads a JSON `null` document as None; decode
        // takes it as NULL too.
        (Json::Null, Json::String(b)) => b == "null",
        (Json::Array(a), Json::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_cell(x, y))
        }
        (Json::String(a), Json::String(b)) if a.starts_with(['{', '[']) || a == "null" => {
            serde_json::from_str::<Json>(a).ok() == serde_json::from_str::<Json>(b).ok()
        }
        _ => vendor == backend,
    }
}

/// Every row of `batches` in canonical form, sorted by the first column.
fn canonical_rows(batches: &[RecordBatch]) -> Vec<Vec<Json>> {
    let mut rows = Vec::new();
    for b in batches {
        let schema = b.schema();
        for i in 0..b.num_rows() {
            rows.push(
                b.columns()
                    .iter()
                    .zip(schema.fields())
                    .map(|(c, f)| canonical(c, i, f.metadata().get("logicalType").is_some()))
                    .collect::<Vec<_>>(),
            );
        }
    }
    rows.sort_by_key(|r| r[0].to_string());
    rows
}

const TYPES_COLUMNS: &str = "e STRING, i INT64, n NUMERIC, bn BIGNUMERIC, f FLOAT64, ok BOOL, \
    bin BYTES, ts TIMESTAMP, dt DATETIME, d DATE, tags ARRAY<STRING>, nums ARRAY<INT64>, j JSON";

#[tokio::test(flavor = "multi_thread")]
async fn the_vendor_client_reads_the_same_rows_of_every_type_as_the_backend() {
    let w = World::new().await;
    let t = w.table("types");
    let mut rows = vec![
        "('typical', 9223372036854775807, 12.34, 1.5, 0.1, true, b'\\xde\\xad\\xbe\\xef', \
         TIMESTAMP '2024-05-01 10:00:00.123456+00:00', DATETIME '2024-05-01 10:00:00.654321', \
         DATE '2024-05-01', ['a', 'b\\'q'], [1, -2], JSON '{\"k\": [1, \"x\"]}')"
            .to_string(),
        "('edges', -9223372036854775808, -99999999999999999999999999999.999999999, \
         1.0000000001, 1e300, false, b'', TIMESTAMP '1500-01-01 00:00:00+00:00', \
         DATETIME '1969-12-31 23:59:59.999999', DATE '0001-01-01', [], [], JSON 'null')"
            .to_string(),
        "('nulls', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
            .to_string(),
    ];
    for i in 0..120 {
        rows.push(format!(
            "('r{i:03}', {i}, {i}.5, {i}, {i}.25, {}, b'{i}', TIMESTAMP_MICROS({i}000001), \
             DATETIME(TIMESTAMP_MICROS({i}), 'UTC'), DATE_FROM_UNIX_DATE({i}), ['x{i}'], [{i}], JSON '{i}')",
            i % 2 == 0
        ));
    }
    w.bq.exec(
        BILLING,
        &[
            &format!("CREATE TABLE {t} ({TYPES_COLUMNS})"),
            &format!("INSERT INTO {t} VALUES {}", rows.join(", ")),
        ],
    )
    .await;

    let wh = w.warehouse(Duration::from_secs(30));
    let columns = wh.describe(&w.table_ref("types")).await.unwrap();
    let kinds: Vec<(String, TypeKind)> = columns
        .iter()
        .map(|c| (c.data_type.name.clone(), c.data_type.kind.clone()))
        .collect();
    let int = TypeKind::Number { scale: 0 };
    let named = |kinds: &[(String, TypeKind)], i: usize| kinds[i].clone();
    assert_eq!(
        kinds.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        [
            "STRING",
            "INT64",
            "NUMERIC",
            "BIGNUMERIC",
            "FLOAT64",
            "BOOL",
            "BYTES",
            "TIMESTAMP",
            "DATETIME",
            "DATE",
            "ARRAY<STRING>",
            "ARRAY<INT64>",
            "JSON"
        ]
    );
    assert_eq!(named(&kinds, 1).1, int);
    assert_eq!(named(&kinds, 2).1, TypeKind::Number { scale: 9 });
    assert_eq!(named(&kinds, 7).1, TypeKind::Timestamp(TimestampKind::Ltz));
    assert_eq!(named(&kinds, 8).1, TypeKind::Timestamp(TimestampKind::Ntz));
    assert_eq!(named(&kinds, 9).1, TypeKind::Date);
    assert!(matches!(named(&kinds, 11).1, TypeKind::Array(Some(e)) if e.kind == int));
    assert_eq!(named(&kinds, 12).1, TypeKind::Variant);

    // Pages of at most 40 rows: both clients page through getQueryResults.
    w.bq.configure(&[("page_rows_cap", "40".into())]).await;
    let select = format!("SELECT * FROM {t}");
    let batches = wh.query(&select).await.unwrap();
    assert_eq!(batches.len(), 4, "123 rows in pages of at most 40");
    let backend = canonical_rows(&batches);
    assert_eq!(backend.len(), 123);

    let read = vendor_client(&w.bq, std::slice::from_ref(&select), 40);
    let mut vendor: Vec<Vec<Json>> =
        serde_json::from_value(read["results"][0]["rows"].clone()).unwrap();
    vendor.sort_by_key(|r| r[0].to_string());
    assert_eq!(vendor.len(), backend.len());
    for (v, b) in vendor.iter().zip(&backend) {
        assert!(
            v.len() == b.len() && v.iter().zip(b).all(|(x, y)| same_cell(x, y)),
            "the vendor client and the backend read different rows:\n{v:?}\n{b:?}"
        );
    }
    let typical = vendor.iter().find(|r| r[0] == "typical").unwrap();
    assert_eq!(
        typical[1..10].to_vec(),
        [
            json!("9223372036854775807"),
            json!("12.34"),
            json!("1.5"),
            json!("0.1"),
            json!(true),
            json!("3q2+7w=="),
            json!(1_714_557_600_123_456i64),
            json!(1_714_557_600_654_321i64),
            json!(19844)
        ]
    );
    let fields = &read["results"][0]["fields"];
    assert_eq!(
        fields[10],
        json!(["tags", "STRING", "REPEATED"]),
        "{fields}"
    );
    assert_eq!(fields[1], json!(["i", "INTEGER", "NULLABLE"]), "{fields}");
    // The vendor client paged through jobs.get and getQueryResults.
    let log = w.bq.log().await;
    assert!(log["pages"].as_u64().unwrap() >= 3 + 3, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_writes_every_row_in_three_jobs_with_one_token_and_never_shows_the_key() {
    let w = World::new().await;
    w.generated("events", 40, 400).await;
    w.bq.configure(&[]).await;
    w.write_config(&w.config().set("sync.page_rows", 70));
    let out = w.materializer(&["sync"], &[]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", shown(&out));
    assert_eq!(stat(&text, "read"), "400", "{text}");
    assert_eq!(stat(&text, "statements"), "3", "{text}");
    w.assert_converged("events", 40, 400).await;
    let log = w.bq.log().await;
    assert_eq!(log["queries"], 3, "{log}");
    assert_eq!(log["tables_get"], 1, "{log}");
    // 400 rows in pages of 70: the first with the answer, 5 more by token.
    assert_eq!(log["pages"], 5, "{log}");
    assert!(
        log["max_results"].as_array().unwrap().contains(&json!(70)),
        "{log}"
    );
    assert_eq!(log["tokens_issued"], 1, "{log}");
    assert_eq!(log["unauthenticated"], 0, "{log}");
    assert_eq!(log["rejected_tokens"], 0, "{log}");
    assert_eq!(log["cancels"], json!([]), "{log}");
    let sql: Vec<&str> = log["sql"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        sql.iter().any(|s| s.starts_with(&format!(
            "SELECT `user_id`, `ts`, `val` FROM `{DATA}`.`{}`.`events_events` WHERE",
            w.dataset
        ))),
        "{sql:?}"
    );
    let key = crate::support::test_private_key_pem();
    let key_line = key.lines().nth(1).unwrap();
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains(key_line) && !all.contains("ya29."), "{all}");

    // An incremental run reads only what is newer, in as many jobs.
    w.bq.exec(
        BILLING,
        &[&format!(
            "INSERT INTO {} VALUES ('u1', 1000, TIMESTAMP '2024-01-01 01:00:00+00:00')",
            w.table("events_events")
        )],
    )
    .await;
    let text = w.sync();
    assert_eq!(stat(&text, "statements"), "3", "{text}");
    let got = w
        .stored_values("events_v1", "user_id", "u1", &["val"])
        .await
        .unwrap();
    assert_eq!(got["val"], json!(1000));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_window_is_read_as_consumed_one_page_ahead_in_pages_of_at_most_page_rows() {
    let w = World::new().await;
    w.generated("paged", 7, 300).await;
    let wh = w.warehouse(Duration::from_secs(30));
    let columns = wh.describe(&w.table_ref("events_paged")).await.unwrap();
    let ts_type = columns
        .iter()
        .find(|c| c.name == "ts")
        .unwrap()
        .data_type
        .clone();
    let query = WindowQuery {
        table: w.table_ref("events_paged"),
        entity_column: "user_id".into(),
        timestamp_column: "ts".into(),
        timestamp_type: ts_type,
        field_columns: vec!["val".into()],
        since: Some((1_704_067_200 + 49) * 1_000_000_000),
        page_rows: 25,
    };
    w.bq.configure(&[]).await;
    let mut pages = wh.pages(&query);
    let first = pages.next().await.unwrap().unwrap();
    assert_eq!(first.num_rows(), 25);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One page came with the answer, one more is fetched ahead; no more.
    assert_eq!(w.bq.log().await["pages"], 1);
    let mut total = first.num_rows();
    while let Some(page) = pages.next().await {
        let page = page.unwrap();
        assert!((1..=25).contains(&page.num_rows()));
        let schema = page.batches[0].schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["user_id", "ts", "val"]);
        total += page.num_rows();
    }
    // Rows 50..300: the window is exclusive of `since`.
    assert_eq!(total, 250);
    assert_eq!(w.bq.log().await["pages"], 9);
    drop(pages);
    let nulls = wh.null_key_rows(&query).await.unwrap();
    assert_eq!(
        (nulls.null_entity, nulls.null_timestamp, nulls.out_of_range),
        (0, 0, 0)
    );
    let now = wh.now().await.unwrap();
    let wall = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    assert!((now - wall).abs() < 60_000_000_000, "{now} vs {wall}");
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_handed_off_are_polled_and_one_past_query_timeout_is_cancelled() {
    let w = World::new().await;
    w.generated("slow", 10, 60).await;
    // Jobs reading a table take 1.5 s; with query_timeout 3s the daemon
    // asks for timeoutMs 1000, so the answer says jobComplete: false.
    w.bq.configure(&[("query_delay_ms", "1500".into())]).await;
    let out = w.materializer(
        &["sync"],
        &[("MATERIALIZER__WAREHOUSE__QUERY_TIMEOUT", "3s")],
    );
    let text = stdout(&out);
    assert!(
        text.contains(" ok ") && stat(&text, "read") == "60",
        "{}",
        shown(&out)
    );
    w.assert_converged("slow", 10, 60).await;
    let log = w.bq.log().await;
    assert!(log["polls"].as_u64().unwrap() >= 2, "{log}");
    assert_eq!(log["cancels"], json!([]), "{log}");

    // Now every job reading a table outlives a 2 s query_timeout.
    w.bq.configure(&[("query_delay_ms", "10000".into())]).await;
    let started = Instant::now();
    let out = w.materializer(
        &["sync"],
        &[("MATERIALIZER__WAREHOUSE__QUERY_TIMEOUT", "2s")],
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        stdout(&out).contains("FAILED (retryable)")
            && stdout(&out).contains("did not answer within warehouse.query_timeout (2s)"),
        "{}",
        shown(&out)
    );
    let log = w.bq.log().await;
    let cancels = log["cancels"].as_array().unwrap();
    assert_eq!(cancels.len(), 1, "{log}");
    assert_eq!(cancels[0]["state_before"], "RUNNING", "{log}");
    let id = cancels[0]["job_id"].as_str().unwrap();
    assert!(
        stderr(&out)
            .lines()
            .any(|l| l.contains("cancelling an abandoned BigQuery job") && l.contains(id)),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_columns_and_tables_fail_permanently_unreachable_and_hung_retryably() {
    let mut w = World::new().await;
    w.generated("cols", 3, 9).await;
    let path = w.views().join("cols.json");
    let mut doc: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    doc["fields"] = json!([{"name": "nope", "type": "int64"}]);
    std::fs::write(&path, doc.to_string()).unwrap();
    let out = w.materializer(&["sync"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        stdout(&out).contains("FAILED (permanent)") && stdout(&out).contains("nope"),
        "{}",
        shown(&out)
    );
    doc["fields"] = json!([{"name": "val", "type": "int64"}]);
    doc["batch_source"]["table"] = json!("gone");
    std::fs::write(&path, doc.to_string()).unwrap();
    let out = w.materializer(&["sync"], &[]);
    assert!(
        stdout(&out).contains("FAILED (permanent)") && stdout(&out).contains("does not exist"),
        "{}",
        shown(&out)
    );
    // A job failing at the warehouse: BigQuery's own error, permanent.
    let wh = w.warehouse(Duration::from_secs(5));
    let e = wh
        .query(&format!("SELECT `nope` FROM {}", w.table("events_cols")))
        .await
        .unwrap_err();
    assert!(
        !e.is_retryable()
            && e.to_string().contains("invalidQuery")
            && e.to_string().contains("nope"),
        "{e}"
    );
    // A backend error is retryable.
    w.bq.configure(&[("fail_next", "backendError".into())])
        .await;
    let e = wh.query("SELECT 1").await.unwrap_err();
    assert!(e.is_retryable(), "{e}");

    let unreachable = w.config().set(
        "warehouse.api_url",
        format!("http://127.0.0.1:{}/bigquery/v2", free_port()),
    );
    w.write_config(&unreachable);
    doc["batch_source"]["table"] = json!("events_cols");
    std::fs::write(&path, doc.to_string()).unwrap();
    let out = w.materializer(&["sync"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        stdout(&out).contains("FAILED (retryable)"),
        "{}",
        shown(&out)
    );

    // Hung: the endpoint stops answering mid-way; the run ends at query_timeout.
    w.write_config(&w.config().set("warehouse.query_timeout", "2s"));
    w.bq.pause();
    let started = Instant::now();
    let out = w.materializer(&["sync"], &[]);
    w.bq.resume();
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        stdout(&out).contains("FAILED (retryable)"),
        "{}",
        shown(&out)
    );
    // Back, the same view syncs.
    let text = w.sync();
    assert!(text.contains(" ok "), "{text}");
    w.bq.stop();
}
