//! The Databricks backend against the Statement Execution API stand-in
//! (`tests/support/databricks_server.py`), and the stand-in against the
//! vendor's own client.
//!
//! - The stand-in is faithful as far as `databricks-sdk` can tell: its
//!   `statement_execution` (hand-off, polling, chunk links, pre-signed
//!   downloads, errors) reads the same rows of the 14 Databricks column types
//!   as the daemon's backend does, and over OAuth M2M too.
//! - A sync of the built binary writes every row, costs 4 statements
//!   whatever the page size, reads chunks at most 2 at a time and never
//!   sends the API's credentials to a link.
//! - Statements handed off after the wait timeout are polled; one outliving
//!   `query_timeout` fails the run, retryable, and is cancelled at the
//!   warehouse; a missing column, a wrong token or client secret fail it
//!   permanently, naming what is wrong and never showing the secret; an
//!   unreachable workspace fails it retryable.

use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use materializer::config::DatabricksConfig;
use materializer::warehouse::databricks::DatabricksWarehouse;
use materializer::warehouse::{TableRef, TypeKind, Warehouse};
use serde_json::{json, Value as Json};

use crate::fixtures::{shown, stat, stderr, stdout, Base, ConfigToml, BASE_NANOS, SECOND};
use crate::support::{
    free_port, project_root, scratch_dir, unique_name, venv_python, DatabricksServer,
    DATABRICKS_CLIENT_ID, DATABRICKS_CLIENT_SECRET, DATABRICKS_TOKEN, DATABRICKS_WAREHOUSE,
};

/// A Redis and scratch directory of its own, a Databricks stand-in of its
/// own, and a catalog `cat` with schema `s` on it.
struct World {
    base: Base,
    dbx: DatabricksServer,
    catalog: String,
}

impl std::ops::Deref for World {
    type Target = Base;
    fn deref(&self) -> &Base {
        &self.base
    }
}

impl World {
    async fn new() -> World {
        let dbx = DatabricksServer::start();
        let catalog = unique_name("cat").to_lowercase();
        dbx.exec(&[
            &format!("CREATE CATALOG `{catalog}`"),
            &format!("CREATE SCHEMA `{catalog}`.`s`"),
        ])
        .await;
        let w = World {
            base: Base::new("databricks"),
            dbx,
            catalog,
        };
        w.write_config(&w.config());
        w
    }

    /// Token auth, this world's Redis, views in `views/`, short timeouts, small pages.
    fn config(&self) -> ConfigToml {
        ConfigToml::default()
            .set("warehouse.kind", "databricks")
            .set("warehouse.host", &self.dbx.host)
            .set("warehouse.warehouse_id", DATABRICKS_WAREHOUSE)
            .set("warehouse.token", DATABRICKS_TOKEN)
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
        format!("`{}`.`s`.`{name}`", self.catalog)
    }

    /// A generated table of `n` rows: row `s` is entity `u{s % entities}`,
    /// `VAL = s`, `TS = 2024-01-01T00:00:00 + s seconds` (TIMESTAMP_NTZ),
    /// and the view `view` reading it.
    async fn generated(&self, view: &str, entities: u64, n: u64) {
        let table = format!("events_{view}");
        let values: Vec<String> = (0..n)
            .map(|s| {
                let ts = chrono::DateTime::from_timestamp(1_704_067_200 + s as i64, 0)
                    .unwrap()
                    .format("%Y-%m-%d %H:%M:%S");
                format!("('u{}', {s}, TIMESTAMP_NTZ '{ts}')", s % entities)
            })
            .collect();
        self.dbx
            .exec(&[
                &format!(
                    "CREATE TABLE {} (`user_id` STRING, `val` BIGINT, `ts` TIMESTAMP_NTZ)",
                    self.table(&table)
                ),
                &format!(
                    "INSERT INTO {} VALUES {}",
                    self.table(&table),
                    values.join(", ")
                ),
            ])
            .await;
        let doc = json!({
            "name": view, "version": 1, "entity": {"name": "user_id"},
            "batch_source": {"database": self.catalog, "schema": "s", "table": table, "timestamp_field": "ts"},
            "fields": [{"name": "val", "type": "int64"}], "online": true
        });
        std::fs::write(self.views().join(format!("{view}.json")), doc.to_string()).unwrap();
    }

    /// Every entity of a generated view holds its latest row.
    async fn assert_converged(&self, view: &str, entities: u64, n: u64) {
        for e in 0..entities {
            let last = (0..n).filter(|s| s % entities == e).max().unwrap();
            let got = self
                .stored_values(&format!("{view}_v1"), "user_id", &format!("u{e}"), &["val"])
                .await;
            assert_eq!(got.map(|v| v["val"].clone()), Some(json!(last)), "u{e}");
        }
    }

    fn warehouse(&self) -> DatabricksWarehouse {
        DatabricksWarehouse::new(&DatabricksConfig {
            host: self.dbx.host.clone(),
            warehouse_id: DATABRICKS_WAREHOUSE.into(),
            token: Some(materializer::config::Secret(DATABRICKS_TOKEN.into())),
            token_file: None,
            client_id: None,
            client_secret: None,
            catalog: None,
            schema: None,
            query_timeout: Duration::from_secs(30),
            ntz_time_zone: "UTC".into(),
        })
        .unwrap()
    }
}

/// Runs `tests/support/databricks_sdk.py` (the vendor SDK) on `request`,
/// comparing with the Arrow IPC stream of `compare` when given.
fn sdk(request: &Json, compare: Option<&[RecordBatch]>) -> Json {
    let dir = scratch_dir("databricks-sdk");
    let req = dir.join("request.json");
    std::fs::write(&req, request.to_string()).unwrap();
    let mut cmd = std::process::Command::new(venv_python("databricks"));
    cmd.arg(project_root().join("tests/support/databricks_sdk.py"))
        .arg(&req);
    if let Some(batches) = compare {
        let file = dir.join("backend.arrow");
        let mut out = Vec::new();
        let mut w =
            arrow_ipc::writer::StreamWriter::try_new(&mut out, &batches[0].schema()).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
        drop(w);
        std::fs::write(&file, out).unwrap();
        cmd.arg("--compare").arg(&file);
    }
    let out = cmd.output().expect("run databricks_sdk.py");
    assert!(out.status.success(), "databricks_sdk.py: {}", shown(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

const TYPES_TABLE_COLUMNS: &str = "`e` STRING, `big` BIGINT, `i` INT, `small` SMALLINT, \
    `tiny` TINYINT, `dec` DECIMAL(10,2), `dbl` DOUBLE, `flt` FLOAT, `ok` BOOLEAN, `bin` BINARY, \
    `ts` TIMESTAMP, `ntz` TIMESTAMP_NTZ, `day` DATE, `tags` ARRAY<STRING>";

#[tokio::test(flavor = "multi_thread")]
async fn the_vendor_sdk_reads_the_same_rows_of_every_type_as_the_backend() {
    let w = World::new().await;
    let t = w.table("types");
    let mut rows = vec![
        "('typical', 9223372036854775807, -2147483648, 32767, -128, 12.34, 0.1, 1.5, true, X'DEADBEEF', \
         TIMESTAMP '2024-05-01 10:00:00.123456+00:00', TIMESTAMP_NTZ '2024-05-01 10:00:00.654321', \
         DATE '2024-05-01', ARRAY('a', 'b''q', NULL))"
            .to_string(),
        "('edges', -9223372036854775808, 2147483647, -32768, 127, -99999999.99, 1e300, -0.0, false, X'', \
         TIMESTAMP '1900-01-01 00:00:00+00:00', TIMESTAMP_NTZ '1969-12-31 23:59:59.999999', \
         DATE '0001-01-01', ARRAY())"
            .to_string(),
        "('nulls', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
            .to_string(),
    ];
    // More rows than one chunk holds (TEST_CHUNK_ROWS): links come from the
    // answer and from the chunk endpoint.
    for i in 0..120 {
        rows.push(format!(
            "('r{i}', {i}, {i}, {i}, {}, {i}.5, {i}.25, {i}.5, {}, X'0{}', TIMESTAMP '2024-01-01 00:00:{:02}+00:00', \
             TIMESTAMP_NTZ '2024-01-01 00:00:{:02}', DATE '2024-01-01', ARRAY('x{i}'))",
            i % 100,
            i % 2 == 0,
            i % 10,
            i % 60,
            i % 60
        ));
    }
    w.dbx
        .exec(&[
            &format!("CREATE TABLE {t} ({TYPES_TABLE_COLUMNS})"),
            &format!("INSERT INTO {t} VALUES {}", rows.join(", ")),
        ])
        .await;

    // The backend's own describe maps every type.
    let wh = w.warehouse();
    let columns = wh
        .describe(&TableRef {
            database: Some(w.catalog.clone()),
            schema: Some("s".into()),
            table: "types".into(),
        })
        .await
        .unwrap();
    let kinds: Vec<(String, String, TypeKind)> = columns
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.data_type.name.clone(),
                c.data_type.kind.clone(),
            )
        })
        .collect();
    use materializer::warehouse::TimestampKind::{Ltz, Ntz};
    let num = TypeKind::Number { scale: 0 };
    assert_eq!(
        kinds,
        vec![
            ("e".into(), "string".into(), TypeKind::Text),
            ("big".into(), "bigint".into(), num.clone()),
            ("i".into(), "int".into(), num.clone()),
            ("small".into(), "smallint".into(), num.clone()),
            ("tiny".into(), "tinyint".into(), num.clone()),
            (
                "dec".into(),
                "decimal(10,2)".into(),
                TypeKind::Number { scale: 2 }
            ),
            ("dbl".into(), "double".into(), TypeKind::Float),
            ("flt".into(), "float".into(), TypeKind::Float),
            ("ok".into(), "boolean".into(), TypeKind::Boolean),
            ("bin".into(), "binary".into(), TypeKind::Binary),
            ("ts".into(), "timestamp".into(), TypeKind::Timestamp(Ltz)),
            (
                "ntz".into(),
                "timestamp_ntz".into(),
                TypeKind::Timestamp(Ntz)
            ),
            ("day".into(), "date".into(), TypeKind::Date),
            (
                "tags".into(),
                "array<string>".into(),
                TypeKind::Array(Some(Box::new(
                    materializer::warehouse::databricks::column_type("string")
                )))
            ),
        ]
    );

    let select = format!("SELECT * FROM {t}");
    let batches = wh.query(&select).await.unwrap();
    assert_eq!(
        batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
        123
    );

    w.dbx.configure(&[]).await;
    let read = sdk(
        &json!({"host": w.dbx.host, "token": DATABRICKS_TOKEN, "warehouse_id": DATABRICKS_WAREHOUSE,
                "statements": [select, format!("SELECT `nope` FROM {t}")]}),
        Some(&batches),
    );
    let sdk_result = &read["results"][0];
    assert_eq!(sdk_result["state"], "SUCCEEDED", "{read}");
    // 123 rows in chunks of 50: 3 chunks, 2 of them asked for by index.
    assert_eq!(sdk_result["total_chunk_count"], 3, "{sdk_result}");
    assert_eq!(sdk_result["chunks_read"], 3);
    assert_eq!(
        sdk_result["rows"], read["compare_rows"],
        "the SDK and the backend read different rows"
    );
    assert_eq!(
        sdk_result["rows"][0],
        json!(["typical", 9223372036854775807i64, -2147483648i64, 32767, -128, "12.34", 0.1, 1.5, true,
               {"hex": "deadbeef"}, "2024-05-01T10:00:00.123456+00:00", "2024-05-01T10:00:00.654321",
               "2024-05-01", ["a", "b'q", null]])
    );
    let types: Vec<(Option<&str>, &str)> = sdk_result["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type_name"].as_str(), c["type_text"].as_str().unwrap()))
        .collect();
    // The SDK's ColumnInfoTypeName has no TIMESTAMP_NTZ: it reads that
    // type_name as None (unknown enum values are dropped), the type_text stays.
    assert_eq!(
        types,
        [
            (Some("STRING"), "STRING"),
            (Some("LONG"), "BIGINT"),
            (Some("INT"), "INT"),
            (Some("SHORT"), "SMALLINT"),
            (Some("BYTE"), "TINYINT"),
            (Some("DECIMAL"), "DECIMAL(10,2)"),
            (Some("DOUBLE"), "DOUBLE"),
            (Some("FLOAT"), "FLOAT"),
            (Some("BOOLEAN"), "BOOLEAN"),
            (Some("BINARY"), "BINARY"),
            (Some("TIMESTAMP"), "TIMESTAMP"),
            (None, "TIMESTAMP_NTZ"),
            (Some("DATE"), "DATE"),
            (Some("ARRAY"), "ARRAY<STRING>"),
        ]
    );
    // The SDK saw the same error shape the backend sorts.
    let failed = &read["results"][1];
    assert_eq!(failed["state"], "FAILED", "{failed}");
    assert_eq!(failed["error"]["error_code"], "BAD_REQUEST");
    let log = w.dbx.log().await;
    // wait_timeout 0s: the SDK polled (a statement that fails at once needs
    // no poll, so one at least); links went out bare.
    assert!(log["polls"].as_u64().unwrap() >= 1, "{log}");
    assert_eq!(log["chunk_requests"], 2, "{log}");
    assert_eq!(log["links_refused"], 0, "{log}");

    // OAuth M2M through the SDK reads the same.
    let oauth = sdk(
        &json!({"host": w.dbx.host, "client_id": DATABRICKS_CLIENT_ID, "client_secret": DATABRICKS_CLIENT_SECRET,
                "warehouse_id": DATABRICKS_WAREHOUSE, "statements": [format!("SELECT * FROM {t}")]}),
        None,
    );
    assert_eq!(oauth["results"][0]["rows"], sdk_result["rows"]);
    assert!(w.dbx.log().await["tokens_issued"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_writes_every_row_in_four_statements_with_bounded_chunks_in_flight() {
    let w = World::new().await;
    w.generated("events", 40, 400).await;
    // 8 chunks of 50; each link GET takes 100 ms.
    w.dbx.configure(&[("link_delay_ms", "100".into())]).await;
    w.write_config(&w.config().set("sync.page_rows", 7));
    let out = w.materializer(&["sync"], &[]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", shown(&out));
    assert_eq!(stat(&text, "read"), "400", "{text}");
    assert_eq!(stat(&text, "statements"), "4", "{text}");
    w.assert_converged("events", 40, 400).await;
    let log = w.dbx.log().await;
    assert_eq!(log["statements"], 4, "{log}");
    // The window's 8; describe's, now's and the NULL-key count's 1 each.
    assert_eq!(log["links_served"], 8 + 3, "{log}");
    let in_flight = log["max_links_in_flight"].as_u64().unwrap();
    assert!((1..=2).contains(&in_flight), "{log}");
    assert_eq!(log["links_refused"], 0, "{log}");
    assert_eq!(log["cancels"], json!([]), "{log}");
    // The window statement names the catalog and quotes with backticks.
    let sql: Vec<&str> = log["sql"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        sql.iter().any(|s| s.starts_with(&format!(
            "SELECT `user_id`, `ts`, `val` FROM `{}`.`s`.`events_events` WHERE",
            w.catalog
        ))),
        "{sql:?}"
    );

    // An incremental run reads only what is newer, in as many statements.
    w.dbx
        .exec(&[&format!(
            "INSERT INTO {} VALUES ('u1', 1000, TIMESTAMP_NTZ '2024-01-01 01:00:00')",
            w.table("events_events")
        )])
        .await;
    let text = w.sync();
    assert_eq!(stat(&text, "statements"), "4", "{text}");
    let got = w
        .stored_values("events_v1", "user_id", "u1", &["val"])
        .await
        .unwrap();
    assert_eq!(got["val"], json!(1000));
    let _ = (BASE_NANOS, SECOND);
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth_m2m_syncs_and_a_wrong_secret_fails_permanently_without_showing_it() {
    let w = World::new().await;
    w.generated("oauth", 5, 20).await;
    let oauth = w
        .config()
        .unset("warehouse.token")
        .set("warehouse.client_id", DATABRICKS_CLIENT_ID)
        .set("warehouse.client_secret", DATABRICKS_CLIENT_SECRET);
    w.write_config(&oauth);
    let text = w.sync();
    assert!(text.contains(" ok "), "{text}");
    w.assert_converged("oauth", 5, 20).await;
    // One token for the whole run (cached), whatever the statement count.
    assert_eq!(w.dbx.log().await["tokens_issued"], 1);

    w.write_config(&oauth.set("warehouse.client_secret", "wrong-Secret-9f8e7d"));
    let out = w.materializer(&["sync"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("FAILED (permanent)") && all.contains("invalid_client"),
        "{}",
        shown(&out)
    );
    assert!(!all.contains("wrong-Secret-9f8e7d"), "{all}");

    let token = w.config().set("warehouse.token", "dapi-wrong-Token-1234");
    w.write_config(&token);
    let out = w.materializer(&["sync"], &[]);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("FAILED (permanent)") && all.contains("Invalid access token"),
        "{}",
        shown(&out)
    );
    assert!(
        !all.contains("dapi-wrong-Token-1234") && !all.contains(DATABRICKS_TOKEN),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn statements_past_the_wait_timeout_are_polled_and_one_past_query_timeout_is_cancelled() {
    let w = World::new().await;
    w.generated("slow", 10, 60).await;
    // Every statement takes 700 ms; with query_timeout 5s the daemon asks
    // for wait_timeout 0s and polls each.
    w.dbx
        .configure(&[("statement_delay_ms", "700".into())])
        .await;
    let text = w.sync();
    assert!(
        text.contains(" ok ") && stat(&text, "read") == "60",
        "{text}"
    );
    w.assert_converged("slow", 10, 60).await;
    let log = w.dbx.log().await;
    assert!(log["polls"].as_u64().unwrap() >= 4 * 2, "{log}");
    assert_eq!(log["cancels"], json!([]), "{log}");

    // Now every statement outlives a 2 s query_timeout.
    w.dbx
        .configure(&[("statement_delay_ms", "10000".into())])
        .await;
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
    // The statement in flight was cancelled before the command exited, and the log names it.
    let log = w.dbx.log().await;
    let cancels = log["cancels"].as_array().unwrap();
    assert_eq!(cancels.len(), 1, "{log}");
    assert!(
        matches!(
            cancels[0]["state_before"].as_str(),
            Some("PENDING" | "RUNNING")
        ),
        "{log}"
    );
    let id = cancels[0]["statement_id"].as_str().unwrap();
    assert!(
        stderr(&out)
            .lines()
            .any(|l| l.contains("cancelling an abandoned Databricks statement") && l.contains(id)),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(DATABRICKS_TOKEN));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_column_fails_permanently_and_an_unreachable_workspace_retryably() {
    let w = World::new().await;
    w.generated("cols", 3, 9).await;
    let mut doc: Json =
        serde_json::from_str(&std::fs::read_to_string(w.views().join("cols.json")).unwrap())
            .unwrap();
    doc["fields"] = json!([{"name": "nope", "type": "int64"}]);
    std::fs::write(w.views().join("cols.json"), doc.to_string()).unwrap();
    let out = w.materializer(&["sync"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        stdout(&out).contains("FAILED (permanent)") && stdout(&out).contains("nope"),
        "{}",
        shown(&out)
    );
    // `check` names it too.
    let out = w.materializer(&["check"], &[]);
    assert!(
        !out.status.success() && stdout(&out).contains("nope"),
        "{}",
        shown(&out)
    );

    w.write_config(&w.config().set(
        "warehouse.host",
        format!("http://127.0.0.1:{}", free_port()),
    ));
    let out = w.materializer(&["sync"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        stdout(&out).contains("FAILED (retryable)"),
        "{}",
        shown(&out)
    );
}
