//! The holes found when the sync contract was tried adversarially, each proven
//! closed end to end: the built binary, the embedded Parquet warehouse (whose
//! clock is this machine's) and a real Redis, read back through `profile`.
//!
//! - several views share an entity's hash, and one view's ttl never removes
//!   another's values;
//! - a reshape during a run (even a first run, without a watermark) is never
//!   committed, and the new shape lands;
//! - a reshape to rows older than the old shape's replaces them exactly;
//! - a row stamped inside `max_future_skew` never hides an on-time row;
//! - state is per project, and layout-1 state migrates to the project.
//!
//! Assumes `redis-server` on PATH (tests/support).

mod support;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use materializer::model::ViewId;
use materializer::profiles::{feast, state::Keys};
use parquet::arrow::ArrowWriter;
use serde_json::{json, Value as Json};
use support::{materializer_bin, scratch_dir, RedisServer};

/// `(DOMAIN_USERID, seconds before now of UPDATED_AT, A, B)`
type Row<'a> = (&'a str, i64, i64, i64);

struct World {
    redis: RedisServer,
    dir: PathBuf,
    /// Seconds since the epoch when the world was made: rows are stamped relative to it.
    now: i64,
}

impl World {
    fn new() -> World {
        let dir = scratch_dir("contract-holes");
        std::fs::create_dir_all(dir.join("views")).unwrap();
        let w = World {
            redis: RedisServer::start(),
            dir,
            now: chrono::Utc::now().timestamp(),
        };
        w.config("materializer.toml", "signals", "");
        w
    }

    /// Writes a config file; `sync` is extra `[sync]` settings.
    fn config(&self, file: &str, project: &str, sync: &str) -> PathBuf {
        let path = self.dir.join(file);
        std::fs::write(
            &path,
            format!(
                r#"
[sync]
page_rows = 4
write_batch = 3
{sync}
[warehouse]
kind = "parquet"
path = "warehouse"
[profiles]
redis_url = "{}"
project = "{project}"
[registry]
files = ["views/*.json"]
[log]
format = "text"
"#,
                self.redis.url
            ),
        )
        .unwrap();
        path
    }

    /// Writes one Parquet file of table `table` (a directory of files).
    fn rows(&self, table: &str, file: &str, rows: &[Row<'_>]) {
        let dir = self.dir.join("warehouse").join(table);
        std::fs::create_dir_all(&dir).unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("DOMAIN_USERID", DataType::Utf8, true),
            Field::new("A", DataType::Int64, true),
            Field::new("B", DataType::Int64, true),
            Field::new(
                "UPDATED_AT",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| (self.now - r.1) * 1_000_000),
                )
                .with_timezone("UTC"),
            ),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let mut w =
            ArrowWriter::try_new(File::create(dir.join(file)).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    /// The JSON of view `name` (version 1) over `table`.
    fn view_json(name: &str, table: &str, fields: &[&str], ttl: Option<&str>) -> Json {
        let mut v = json!({
            "name": name, "version": 1, "entity": {"name": "domain_userid"},
            "batch_source": {"name": "src", "table": table, "timestamp_field": "updated_at"},
            "fields": fields.iter().map(|f| json!({"name": f, "type": "int64"})).collect::<Vec<_>>(),
            "online": true
        });
        if let Some(ttl) = ttl {
            v["ttl"] = json!(ttl);
        }
        v
    }

    /// Writes view `name` into `registry.files`, applied by every command.
    fn view(&self, name: &str, table: &str, fields: &[&str], ttl: Option<&str>) {
        let v = World::view_json(name, table, fields, ttl);
        std::fs::write(self.dir.join(format!("views/{name}.json")), v.to_string()).unwrap();
    }

    fn command(&self, config: &str, args: &[&str]) -> Command {
        let mut c = Command::new(materializer_bin());
        c.arg("--config")
            .arg(config)
            .args(args)
            .current_dir(&self.dir);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command("materializer.toml", args).output().unwrap()
    }

    /// `materializer sync` with `args`; panics unless it succeeded.
    fn sync(&self, args: &[&str]) -> String {
        let out = self.run(&[&["sync"], args].concat());
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "sync failed\n{stdout}\n{}",
            stderr(&out)
        );
        stdout
    }

    /// What `materializer profile` prints for one entity: the values, or null.
    fn profile(&self, view: &str, entity: &str) -> Json {
        let out = self.run(&["profile", "--view", view, entity]);
        assert!(out.status.success(), "{}", stderr(&out));
        let printed: Json = serde_json::from_slice(&out.stdout).unwrap();
        printed[0]["values"].clone()
    }

    fn status(&self, config: &str) -> Json {
        let out = self
            .command(config, &["status", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.redis.connection().await
    }

    /// Milliseconds left on an entity's key: -1 persistent, -2 gone.
    async fn pttl(&self, entity: &str) -> i64 {
        let key = feast::entity_key("domain_userid", entity.as_bytes(), "signals");
        redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut self.conn().await)
            .await
            .unwrap()
    }

    /// Every hash field of an entity's key.
    async fn hash_fields(&self, entity: &str) -> Vec<Vec<u8>> {
        let key = feast::entity_key("domain_userid", entity.as_bytes(), "signals");
        redis::cmd("HKEYS")
            .arg(key)
            .query_async(&mut self.conn().await)
            .await
            .unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn nanos_of(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_views_ttl_never_removes_another_views_values() {
    let w = World::new();
    // Two views on one entity: `short` keeps values 6 s after their row's
    // time, `keep` has no ttl. u1 is in both tables, u2 only in `keep`'s,
    // u3 only in `short`'s.
    w.rows(
        "SHORT_T",
        "f.parquet",
        &[("u1", 0, 1, 10), ("u3", 0, 3, 30)],
    );
    w.rows("KEEP_T", "f.parquet", &[("u1", 0, 1, 11), ("u2", 0, 2, 22)]);
    w.view("short", "short_t", &["A"], Some("PT6S"));
    w.view("keep", "keep_t", &["B"], None);
    // The view with a ttl writes first, then the one without.
    w.sync(&["--view", "short"]);
    assert!(w.pttl("u1").await > 0, "a key only `short` wrote expires");
    w.sync(&["--view", "keep"]);
    assert_eq!(
        w.pttl("u1").await,
        -1,
        "`keep` (no ttl) makes u1's key persistent"
    );
    assert_eq!(w.pttl("u2").await, -1);
    // And the other order: a view with a ttl never puts expiry on a key that a
    // view without ttl keeps.
    w.sync(&["--view", "short"]);
    assert_eq!(w.pttl("u1").await, -1);
    assert_eq!(w.profile("short", "u1"), json!({"A": 1}));

    let expired_at = std::time::UNIX_EPOCH + Duration::from_secs((w.now + 7) as u64);
    if let Ok(left) = expired_at.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    assert_eq!(
        w.profile("keep", "u1"),
        json!({"B": 11}),
        "another view's ttl removed `keep`'s values"
    );
    assert_eq!(
        w.profile("short", "u1"),
        Json::Null,
        "reads never return a view's values past its own ttl, even when the key stays"
    );
    assert_eq!(
        w.pttl("u3").await,
        -2,
        "a key only `short` held is cleaned up"
    );
    // A later run never brings expired values back.
    w.sync(&[]);
    assert_eq!(w.profile("short", "u1"), Json::Null);
    assert_eq!(w.profile("keep", "u2"), json!({"B": 22}));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reshape_during_a_first_run_is_not_committed_and_the_new_shape_lands() {
    let w = World::new();
    // Rows two hours old: an incremental run after a wrongly committed first
    // run would read none of them again.
    let rows: Vec<(String, i64, i64, i64)> = (0..40)
        .map(|i| (format!("u{i}"), 7200 - i, i, 100 + i))
        .collect();
    let rows: Vec<Row<'_>> = rows.iter().map(|r| (r.0.as_str(), r.1, r.2, r.3)).collect();
    w.rows("T", "f.parquet", &rows);
    w.view("v", "t", &["A"], None);
    let first = w
        .command("materializer.toml", &["sync"])
        .env(
            "MATERIALIZER_FAILPOINTS",
            "before_watermark_commit=sleep(4000)@1",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Reshape (a second field) while the first run waits before its commit.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    w.view("v", "t", &["A", "B"], None);
    let applied = w.run(&["apply", "views/v.json"]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let out = first.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", stderr(&out));
    assert!(
        stderr(&out).contains("running again"),
        "the old shape's run must not commit: {}",
        stderr(&out)
    );
    for i in [0, 17, 39] {
        assert_eq!(
            w.profile("v", &format!("u{i}")),
            json!({"A": i, "B": 100 + i}),
            "u{i}\n{stdout}"
        );
    }
    // The rerun in the new shape committed.
    let st = w.status("materializer.toml");
    assert_eq!(st[0]["last_run"]["status"], "ok", "{st}");
    assert!(st[0]["watermark"].is_string(), "{st}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reshape_to_older_rows_replaces_the_old_shape_exactly() {
    let w = World::new();
    w.rows(
        "NEW_T",
        "f.parquet",
        &[("u1", 86_400, 7, 0), ("u3", 86_400, 9, 0)],
    );
    w.rows(
        "OLD_T",
        "f.parquet",
        &[("u1", 60, 1, 10), ("u2", 60, 2, 20)],
    );
    w.view("v", "old_t", &["A", "B"], None);
    w.sync(&[]);
    assert_eq!(w.profile("v", "u1"), json!({"A": 1, "B": 10}));

    // Same name and version, a new table whose rows are a day older, and one
    // field fewer: the result must be what a full refresh of the new shape writes.
    w.view("v", "new_t", &["A"], None);
    let out = w.sync(&[]);
    assert_eq!(w.profile("v", "u1"), json!({"A": 7}), "{out}");
    assert_eq!(w.profile("v", "u3"), json!({"A": 9}));
    assert_eq!(
        w.profile("v", "u2"),
        Json::Null,
        "u2 is not in the new table"
    );
    let b = feast::feature_field("v_v1", "B").to_vec();
    assert!(
        !w.hash_fields("u1").await.contains(&b),
        "the field the view no longer has is removed"
    );
    let st = w.status("materializer.toml");
    let wm = nanos_of(st[0]["watermark"].as_str().unwrap());
    assert_eq!(wm, (w.now - 86_400) * 1_000_000_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_stamped_inside_the_future_skew_never_hides_an_on_time_row() {
    let w = World::new();
    w.config(
        "materializer.toml",
        "signals",
        "lookback = \"1m\"\nmax_future_skew = \"5m\"",
    );
    w.view("v", "t", &["A"], None);
    // Stamped 4 minutes ahead: inside the skew.
    w.rows("T", "1.parquet", &[("early", -240, 1, 0)]);
    w.sync(&[]);
    let st = w.status("materializer.toml");
    let wm = nanos_of(st[0]["watermark"].as_str().unwrap());
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    assert!(wm <= now, "the watermark passed the warehouse's now: {st}");
    // An on-time row, stamped 30 s ago, delivered after that run.
    w.rows("T", "2.parquet", &[("ontime", 30, 2, 0)]);
    let out = w.sync(&[]);
    assert_eq!(w.profile("v", "ontime"), json!({"A": 2}), "{out}");
    assert_eq!(w.profile("v", "early"), json!({"A": 1}));
}

#[tokio::test(flavor = "multi_thread")]
async fn state_is_per_project_so_another_project_on_the_same_redis_syncs_everything() {
    let w = World::new();
    w.config("other.toml", "other", "");
    // Rows older than the lookback: only a full read sees them.
    w.rows("T", "f.parquet", &[("u1", 7200, 1, 0), ("u2", 7200, 2, 0)]);
    w.view("v", "t", &["A"], None);
    w.sync(&[]);
    let out = w.command("other.toml", &["sync"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("read=2"),
        "project `other` shared a watermark: {stdout}"
    );
    let key = feast::entity_key("domain_userid", b"u2", "other");
    let exists: bool = redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut w.conn().await)
        .await
        .unwrap();
    assert!(exists);
    assert!(w.status("other.toml")[0]["watermark"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn layout_1_state_moves_to_the_project_that_migrates_first() {
    let w = World::new();
    let view = World::view_json("old", "t", &["A"], None);
    let wm: i64 = 1_700_000_000_000_000_000;
    let mut c = w.conn().await;
    // What the first version left: no project in any state key.
    let _: () = redis::pipe()
        .hset("materializer:meta", "schema_version", 1)
        .hset("materializer:views", "old:1", view.to_string())
        .set("materializer:wm:old:1", wm.to_string())
        .set("materializer:lease:old:1", "gone/1")
        .query_async(&mut c)
        .await
        .unwrap();
    let st = w.status("materializer.toml");
    let old = st
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["view"] == "old")
        .unwrap_or_else(|| panic!("the layout-1 view was lost: {st}"));
    assert_eq!(nanos_of(old["watermark"].as_str().unwrap()), wm);
    let keys = Keys::new("materializer:", "signals");
    let id = ViewId {
        name: "old".into(),
        version: 1,
    };
    let moved: Option<String> = redis::cmd("GET")
        .arg(keys.view(&id, "wm"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(moved, Some(wm.to_string()));
    let left: i64 = redis::cmd("EXISTS")
        .arg("materializer:views")
        .arg("materializer:wm:old:1")
        .arg("materializer:lease:old:1")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_view_registered_again_resyncs_from_scratch() {
    let w = World::new();
    w.rows("T", "f.parquet", &[("u1", 7200, 1, 0), ("u2", 7200, 2, 0)]);
    // Applied by hand, not from `registry.files`, so a delete stands.
    let file = w.dir.join("v.json");
    std::fs::write(&file, World::view_json("v", "t", &["A"], None).to_string()).unwrap();
    assert!(w.run(&["apply", "v.json"]).status.success());
    w.sync(&[]);
    let out = w.run(&["delete", "--view", "v:1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The table changes while the view is gone: u2 disappears, u1 changes
    // (in the past, so only a full read sees it).
    std::fs::remove_file(w.dir.join("warehouse/T/f.parquet")).unwrap();
    w.rows("T", "g.parquet", &[("u1", 7000, 5, 0)]);
    assert!(w.run(&["apply", "v.json"]).status.success());
    let out = w.sync(&[]);
    assert_eq!(w.profile("v", "u1"), json!({"A": 5}), "{out}");
    assert_eq!(w.profile("v", "u2"), Json::Null);
}
