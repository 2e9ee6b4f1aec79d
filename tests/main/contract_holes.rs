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

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use materializer::model::ViewId;
use materializer::profiles::{feast, state::Keys};
use serde_json::{json, Value as Json};

use crate::fixtures::{command, shown, stderr, ConfigToml, ParquetWorld, Rows};

/// `(DOMAIN_USERID, seconds before now of UPDATED_AT, A, B)`
type Row<'a> = (&'a str, i64, i64, i64);

/// A Parquet world with small pages and write batches.
fn world() -> ParquetWorld {
    let w = ParquetWorld::new();
    w.write_config(&config(&w));
    w
}

fn config(w: &ParquetWorld) -> ConfigToml {
    w.config()
        .set("sync.page_rows", 4)
        .set("sync.write_batch", 3)
}

/// Writes one Parquet file of table `table` (a directory of files).
fn write_rows(w: &ParquetWorld, table: &str, file: &str, rows: &[Row<'_>]) {
    let columns = Rows::default()
        .text("DOMAIN_USERID", rows.iter().map(|r| Some(r.0)))
        .int64("A", rows.iter().map(|r| r.2))
        .int64("B", rows.iter().map(|r| r.3))
        .utc_micros(
            "UPDATED_AT",
            rows.iter().map(|r| Some((w.now - r.1) * 1_000_000)),
        );
    w.write_table(table, file, columns, None);
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
fn view(w: &ParquetWorld, name: &str, table: &str, fields: &[&str], ttl: Option<&str>) {
    w.write_view(
        &format!("{name}.json"),
        &view_json(name, table, fields, ttl),
    );
}

/// `materializer sync args...`; panics unless it succeeded.
fn sync(w: &ParquetWorld, args: &[&str]) -> String {
    w.sync_with(args, &[])
}

/// What `materializer profile` prints for one entity: the values, or null.
fn profile(w: &ParquetWorld, view: &str, entity: &str) -> Json {
    w.profile(view, &[entity])[0]["values"].clone()
}

/// `materializer status --json` with the config file `config`.
fn status_of(w: &ParquetWorld, config: &str) -> Json {
    let out = with_config(w, config, &["status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", shown(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `materializer args...` with the config file `config` (in the world's directory).
fn with_config(w: &ParquetWorld, config: &str, args: &[&str]) -> Command {
    let mut c = command(Path::new(config), &w.dir);
    c.args(args);
    c
}

/// Milliseconds left on an entity's key: -1 persistent, -2 gone.
async fn pttl(w: &ParquetWorld, entity: &str) -> i64 {
    let key = feast::entity_key("domain_userid", entity.as_bytes(), "signals");
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut w.redis_conn().await)
        .await
        .unwrap()
}

/// Every hash field of an entity's key.
async fn hash_fields(w: &ParquetWorld, entity: &str) -> Vec<Vec<u8>> {
    let key = feast::entity_key("domain_userid", entity.as_bytes(), "signals");
    redis::cmd("HKEYS")
        .arg(key)
        .query_async(&mut w.redis_conn().await)
        .await
        .unwrap()
}

fn nanos_of(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_views_ttl_never_removes_another_views_values() {
    let w = world();
    // Two views on one entity: `short` keeps values 6 s after their row's
    // time, `keep` has no ttl. u1 is in both tables, u2 only in `keep`'s,
    // u3 only in `short`'s.
    for (table, rows) in [
        ("SHORT_T", [("u1", 0, 1, 10), ("u3", 0, 3, 30)]),
        ("KEEP_T", [("u1", 0, 1, 11), ("u2", 0, 2, 22)]),
    ] {
        write_rows(&w, table, "f.parquet", &rows);
    }
    view(&w, "short", "short_t", &["A"], Some("PT6S"));
    view(&w, "keep", "keep_t", &["B"], None);
    // The view with a ttl writes first, then the one without.
    sync(&w, &["--view", "short"]);
    assert!(pttl(&w, "u1").await > 0, "a key only `short` wrote expires");
    sync(&w, &["--view", "keep"]);
    assert_eq!(
        pttl(&w, "u1").await,
        -1,
        "`keep` (no ttl) makes u1's key persistent"
    );
    assert_eq!(pttl(&w, "u2").await, -1);
    // And the other order: a view with a ttl never puts expiry on a key that a
    // view without ttl keeps.
    sync(&w, &["--view", "short"]);
    assert_eq!(pttl(&w, "u1").await, -1);
    assert_eq!(profile(&w, "short", "u1"), json!({"A": 1}));

    let expired_at = std::time::UNIX_EPOCH + Duration::from_secs((w.now + 7) as u64);
    if let Ok(left) = expired_at.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    assert_eq!(
        profile(&w, "keep", "u1"),
        json!({"B": 11}),
        "another view's ttl removed `keep`'s values"
    );
    assert_eq!(
        profile(&w, "short", "u1"),
        Json::Null,
        "reads never return a view's values past its own ttl, even when the key stays"
    );
    assert_eq!(
        pttl(&w, "u3").await,
        -2,
        "a key only `short` held is cleaned up"
    );
    // A later run never brings expired values back.
    sync(&w, &[]);
    assert_eq!(profile(&w, "short", "u1"), Json::Null);
    assert_eq!(profile(&w, "keep", "u2"), json!({"B": 22}));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reshape_during_a_first_run_is_not_committed_and_the_new_shape_lands() {
    let w = world();
    // Rows two hours old: an incremental run after a wrongly committed first
    // run would read none of them again.
    let rows: Vec<(String, i64, i64, i64)> = (0..40)
        .map(|i| (format!("u{i}"), 7200 - i, i, 100 + i))
        .collect();
    let rows: Vec<Row<'_>> = rows.iter().map(|r| (r.0.as_str(), r.1, r.2, r.3)).collect();
    write_rows(&w, "T", "f.parquet", &rows);
    view(&w, "v", "t", &["A"], None);
    let first = w
        .command(
            &["sync"],
            &[(
                "MATERIALIZER_FAILPOINTS",
                "before_watermark_commit=sleep(4000)@1",
            )],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Reshape (a second field) while the first run waits before its commit.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    view(&w, "v", "t", &["A", "B"], None);
    let applied = w.materializer(&["apply", "views/v.json"], &[]);
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
            profile(&w, "v", &format!("u{i}")),
            json!({"A": i, "B": 100 + i}),
            "u{i}\n{stdout}"
        );
    }
    // The rerun in the new shape committed.
    let st = w.status();
    assert_eq!(st[0]["last_run"]["status"], "ok", "{st}");
    assert!(st[0]["watermark"].is_string(), "{st}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reshape_to_older_rows_replaces_the_old_shape_exactly() {
    let w = world();
    for (table, rows) in [
        ("NEW_T", [("u1", 86_400, 7, 0), ("u3", 86_400, 9, 0)]),
        ("OLD_T", [("u1", 60, 1, 10), ("u2", 60, 2, 20)]),
    ] {
        write_rows(&w, table, "f.parquet", &rows);
    }
    view(&w, "v", "old_t", &["A", "B"], None);
    sync(&w, &[]);
    assert_eq!(profile(&w, "v", "u1"), json!({"A": 1, "B": 10}));

    // Same name and version, a new table whose rows are a day older, and one
    // field fewer: the result must be what a full refresh of the new shape writes.
    view(&w, "v", "new_t", &["A"], None);
    let out = sync(&w, &[]);
    assert_eq!(profile(&w, "v", "u1"), json!({"A": 7}), "{out}");
    assert_eq!(profile(&w, "v", "u3"), json!({"A": 9}));
    assert_eq!(
        profile(&w, "v", "u2"),
        Json::Null,
        "u2 is not in the new table"
    );
    let b = feast::feature_field("v_v1", "B").to_vec();
    assert!(
        !hash_fields(&w, "u1").await.contains(&b),
        "the field the view no longer has is removed"
    );
    let st = w.status();
    let wm = nanos_of(st[0]["watermark"].as_str().unwrap());
    assert_eq!(wm, (w.now - 86_400) * 1_000_000_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_stamped_inside_the_future_skew_never_hides_an_on_time_row() {
    let w = world();
    w.write_config(
        &config(&w)
            .set("sync.lookback", "1m")
            .set("sync.max_future_skew", "5m"),
    );
    view(&w, "v", "t", &["A"], None);
    // Stamped 4 minutes ahead: inside the skew.
    write_rows(&w, "T", "1.parquet", &[("early", -240, 1, 0)]);
    sync(&w, &[]);
    let st = w.status();
    let wm = nanos_of(st[0]["watermark"].as_str().unwrap());
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    assert!(wm <= now, "the watermark passed the warehouse's now: {st}");
    // An on-time row, stamped 30 s ago, delivered after that run.
    write_rows(&w, "T", "2.parquet", &[("ontime", 30, 2, 0)]);
    let out = sync(&w, &[]);
    assert_eq!(profile(&w, "v", "ontime"), json!({"A": 2}), "{out}");
    assert_eq!(profile(&w, "v", "early"), json!({"A": 1}));
}

#[tokio::test(flavor = "multi_thread")]
async fn state_is_per_project_so_another_project_on_the_same_redis_syncs_everything() {
    let w = world();
    config(&w)
        .set("profiles.project", "other")
        .write(&w.dir.join("other.toml"));
    // Rows older than the lookback: only a full read sees them.
    write_rows(
        &w,
        "T",
        "f.parquet",
        &[("u1", 7200, 1, 0), ("u2", 7200, 2, 0)],
    );
    view(&w, "v", "t", &["A"], None);
    sync(&w, &[]);
    let out = with_config(&w, "other.toml", &["sync"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("read=2"),
        "project `other` shared a watermark: {stdout}"
    );
    let key = feast::entity_key("domain_userid", b"u2", "other");
    let exists: bool = redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut w.redis_conn().await)
        .await
        .unwrap();
    assert!(exists);
    assert!(status_of(&w, "other.toml")[0]["watermark"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn layout_1_state_moves_to_the_project_that_migrates_first() {
    let w = world();
    let view = view_json("old", "t", &["A"], None);
    let wm: i64 = 1_700_000_000_000_000_000;
    let mut c = w.redis_conn().await;
    // What the first version left: no project in any state key.
    let _: () = redis::pipe()
        .hset("materializer:meta", "schema_version", 1)
        .hset("materializer:views", "old:1", view.to_string())
        .set("materializer:wm:old:1", wm.to_string())
        .set("materializer:lease:old:1", "gone/1")
        .query_async(&mut c)
        .await
        .unwrap();
    let st = w.status();
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
    let w = world();
    write_rows(
        &w,
        "T",
        "f.parquet",
        &[("u1", 7200, 1, 0), ("u2", 7200, 2, 0)],
    );
    // Applied by hand, not from `registry.files`, so a delete stands.
    let file = w.dir.join("v.json");
    std::fs::write(&file, view_json("v", "t", &["A"], None).to_string()).unwrap();
    assert!(w.materializer(&["apply", "v.json"], &[]).status.success());
    sync(&w, &[]);
    let out = w.materializer(&["delete", "--view", "v:1"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The table changes while the view is gone: u2 disappears, u1 changes
    // (in the past, so only a full read sees it).
    std::fs::remove_file(w.dir.join("warehouse/T/f.parquet")).unwrap();
    write_rows(&w, "T", "g.parquet", &[("u1", 7000, 5, 0)]);
    assert!(w.materializer(&["apply", "v.json"], &[]).status.success());
    let out = sync(&w, &[]);
    assert_eq!(profile(&w, "v", "u1"), json!({"A": 5}), "{out}");
    assert_eq!(profile(&w, "v", "u2"), Json::Null);
}
