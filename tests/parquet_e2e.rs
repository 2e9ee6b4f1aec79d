//! End to end on the embedded Parquet warehouse: the built binary syncs a table
//! of real Parquet files into a real Redis, then an incremental run reads only
//! the window: row groups whose statistics end before it are never read (proved
//! by destroying their data pages, footers intact), rows arriving out of order
//! are settled newest-wins, and NULL keys delivered in pages are counted.
//!
//! Assumes `redis-server` on PATH (tests/support).

mod support;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use materializer::profiles::{feast, read};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde_json::{json, Value as Json};
use support::{materializer_bin, scratch_dir, RedisServer};

const VIEW: &str = "web_features";
const FIELDS: [&str; 2] = ["VISITS", "PLAN"];
const MINUTE: i64 = 60;

/// (DOMAIN_USERID, seconds before now for UPDATED_AT, VISITS, PLAN)
type Row<'a> = (Option<&'a str>, Option<i64>, i32, &'a str);

struct World {
    redis: RedisServer,
    dir: PathBuf,
    table: PathBuf,
    config: PathBuf,
    now: i64,
}

impl World {
    fn new() -> World {
        let redis = RedisServer::start();
        let dir = scratch_dir("parquet-e2e");
        let table = dir.join("warehouse/WEB_EVENTS");
        std::fs::create_dir_all(&table).unwrap();
        std::fs::create_dir_all(dir.join("views")).unwrap();
        let view = json!({
            "name": VIEW, "version": 1,
            "entity": {"name": "domain_userid"},
            "batch_source": {"name": "web", "database": "ANY", "schema": "ANY",
                             "table": "web_events", "timestamp_field": "updated_at"},
            "fields": [{"name": "VISITS", "type": "int32"}, {"name": "PLAN", "type": "string"}],
            "online": true
        });
        std::fs::write(dir.join("views/web.json"), view.to_string()).unwrap();
        let config = dir.join("materializer.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[sync]
lookback = "10m"
page_rows = 3
write_batch = 2
[warehouse]
kind = "parquet"
path = "warehouse"
[profiles]
redis_url = "{}"
[registry]
files = ["views/*.json"]
[log]
format = "text"
"#,
                redis.url
            ),
        )
        .unwrap();
        World {
            redis,
            dir,
            table,
            config,
            now: chrono::Utc::now().timestamp(),
        }
    }

    /// Writes one file of the table, two rows per row group.
    fn write(&self, name: &str, rows: &[Row<'_>]) -> PathBuf {
        let schema = Arc::new(Schema::new(vec![
            Field::new("DOMAIN_USERID", DataType::Utf8, true),
            Field::new("VISITS", DataType::Int32, true),
            Field::new("PLAN", DataType::Utf8, true),
            Field::new(
                "UPDATED_AT",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.0))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.3))),
            Arc::new(
                TimestampMicrosecondArray::from_iter(
                    rows.iter()
                        .map(|r| r.1.map(|ago| (self.now - ago) * 1_000_000)),
                )
                .with_timezone("UTC"),
            ),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_size(2)
            .build();
        let path = self.table.join(name);
        let mut w =
            ArrowWriter::try_new(File::create(&path).unwrap(), schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        path
    }

    fn materializer(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(materializer_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("run materializer")
    }

    /// Runs `sync`; returns its line for the view and whether it succeeded.
    fn sync(&self) -> (bool, String) {
        let out = self.materializer(&["sync"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| l.contains(VIEW))
            .unwrap_or_else(|| {
                panic!(
                    "no line for the view\nstdout: {stdout}\nstderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .to_string();
        (out.status.success(), line)
    }

    async fn profile(&self, entity: &str) -> Option<BTreeMap<String, Json>> {
        let mut conn = self.redis.connection().await;
        let fv = format!("{VIEW}_v1");
        let key = feast::entity_key("domain_userid", entity.as_bytes(), "signals");
        let fields: Vec<Vec<u8>> = FIELDS
            .iter()
            .map(|f| feast::feature_field(&fv, f).to_vec())
            .collect();
        let raw: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(&key)
            .arg(&fields)
            .query_async(&mut conn)
            .await
            .unwrap();
        if raw.iter().all(Option::is_none) {
            return None;
        }
        Some(
            FIELDS
                .iter()
                .zip(raw)
                .map(|(f, v)| {
                    let v = v.map(|b| read::decode_value(&b).unwrap());
                    (f.to_string(), v.unwrap_or(Json::Null))
                })
                .collect(),
        )
    }

    async fn assert_profile(&self, entity: &str, visits: i32, plan: &str) {
        let p = self
            .profile(entity)
            .await
            .unwrap_or_else(|| panic!("no profile for {entity}"));
        assert_eq!(
            (p["VISITS"].clone(), p["PLAN"].clone()),
            (json!(visits), json!(plan)),
            "entity {entity}"
        );
    }
}

/// `key=value` from a sync output line.
fn stat(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        .to_string()
}

/// Zeroes everything between the leading magic and the footer: the row groups'
/// data pages are gone, the footer (schema, statistics) still reads.
fn destroy_data_pages(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let n = bytes.len();
    assert_eq!(&bytes[n - 4..], b"PAR1");
    let footer = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
    let footer_start = n - 8 - footer;
    bytes[4..footer_start].fill(0);
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_table_syncs_then_incremental_run_skips_untouched_row_groups() {
    let w = World::new();
    let old = w.write(
        "part-0.parquet",
        &[
            (Some("u1"), Some(180 * MINUTE), 1, "free"),
            (Some("u2"), Some(170 * MINUTE), 2, "free"),
            (None, Some(165 * MINUTE), 3, "free"),
            (Some("u3"), None, 4, "free"),
            (Some("u2"), Some(160 * MINUTE), 5, "pro"),
        ],
    );
    // Newer than the old file; u1's newer row comes before its older one in
    // the file, so the older one meets it in a later page and must lose.
    w.write(
        "part-1.parquet",
        &[
            (Some("u4"), Some(100 * MINUTE), 6, "free"),
            (Some("u1"), Some(61 * MINUTE), 7, "pro"),
            (Some("u5"), Some(60 * MINUTE), 8, "team"),
            (Some("u1"), Some(62 * MINUTE), 9, "stale"),
        ],
    );
    assert!(
        w.materializer(&["check"]).status.success(),
        "check passes on a Parquet table"
    );

    let (ok, line) = w.sync();
    assert!(ok, "{line}");
    assert_eq!(stat(&line, "read"), "9", "{line}");
    assert!(
        line.contains("null_entity=1") && line.contains("null_timestamp=1"),
        "NULL keys delivered in pages are counted: {line}"
    );
    w.assert_profile("u1", 7, "pro").await;
    w.assert_profile("u2", 5, "pro").await;
    w.assert_profile("u4", 6, "free").await;
    w.assert_profile("u5", 8, "team").await;
    assert_eq!(w.profile("u3").await, None);

    // The watermark is 60 minutes ago, the window starts 70 minutes ago. The
    // old file ends 160 minutes ago: destroy its data so reading it would fail.
    destroy_data_pages(&old);
    w.write(
        "part-2.parquet",
        &[
            (Some("u2"), Some(MINUTE), 10, "team"),
            (None, Some(MINUTE), 11, "free"),
            // Late, inside the lookback, but older than what u5 holds: stale.
            (Some("u5"), Some(65 * MINUTE), 12, "late"),
            (Some("u6"), Some(2 * MINUTE), 13, "free"),
        ],
    );
    let (ok, line) = w.sync();
    assert!(ok, "the untouched row groups were read: {line}");
    // part-1's row groups: [u4 @100m, u1 @61m] straddles the window (u4 is
    // filtered out), [u5 @60m, u1 @62m] is inside it; then part-2's 4 rows.
    assert_eq!(stat(&line, "read"), "7", "{line}");
    assert!(line.contains("null_entity=1"), "{line}");
    assert!(!line.contains("null_timestamp"), "{line}");
    w.assert_profile("u2", 10, "team").await;
    w.assert_profile("u5", 8, "team").await;
    w.assert_profile("u6", 13, "free").await;
    w.assert_profile("u1", 7, "pro").await;

    // A full read does touch the destroyed file, and says which one.
    assert!(w.materializer(&["reset", "--view", VIEW]).status.success());
    let (ok, line) = w.sync();
    assert!(!ok && line.contains("part-0.parquet"), "{line}");
}
