//! Tools for operators of a profiles store, through the built binary against a
//! real Redis and the embedded Parquet warehouse:
//!
//! - `sync --dry-run` sorts the window's entities into new, changed, stale and
//!   unchanged against what Redis holds, with samples, and writes nothing: every
//!   key, value and expiry in Redis is byte-identical afterwards and it sends no
//!   more writing commands than `status` does; the real sync that follows does
//!   what it predicted;
//! - `sync --view V --from T1 --to T2` writes only rows stamped in `[T1, T2)`,
//!   newest-wins, without the lease (it runs while another replica holds it)
//!   and without moving the watermark or the run record;
//! - `check --json` and `sync --json` print one JSON document on stdout;
//! - the build hygiene the Dockerfile and Cargo.toml promise: failpoints only
//!   behind a feature that is off by default and on in these tests, pinned
//!   base images, a dependency layer, the README's command in the image.

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};

use crate::fixtures::{shown, stdout, ParquetWorld, Rows};
use crate::support;

const VIEW: &str = "ops_features";
const FIELDS: [&str; 2] = ["VISITS", "PLAN"];
const MINUTE: i64 = 60;

/// (DOMAIN_USERID, seconds before now for UPDATED_AT, VISITS, PLAN)
type Row<'a> = (&'a str, i64, i32, &'a str);

fn world() -> ParquetWorld {
    let w = ParquetWorld::new();
    w.write_config(&w.config().set("sync.lookback", "10m"));
    w.write_view(
        "ops.json",
        &json!({
            "name": VIEW, "version": 1,
            "entity": {"name": "domain_userid"},
            "batch_source": {"name": "ops", "database": "ANY", "schema": "ANY",
                             "table": "ops_events", "timestamp_field": "updated_at"},
            "fields": [{"name": "VISITS", "type": "int32"}, {"name": "PLAN", "type": "string"}],
            "online": true
        }),
    );
    w
}

fn write(w: &ParquetWorld, file: &str, rows: &[Row<'_>]) -> std::path::PathBuf {
    let cols = Rows::default()
        .text("DOMAIN_USERID", rows.iter().map(|r| Some(r.0)))
        .int32("VISITS", rows.iter().map(|r| r.2))
        .text("PLAN", rows.iter().map(|r| Some(r.3)))
        .utc_micros(
            "UPDATED_AT",
            rows.iter().map(|r| Some((w.now - r.1) * 1_000_000)),
        );
    w.write_table("OPS_EVENTS", file, cols, None)
}

/// RFC 3339 text of `ago` seconds before the world's now.
fn at(w: &ParquetWorld, ago: i64) -> String {
    chrono::DateTime::from_timestamp(w.now - ago, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `(VISITS, PLAN)` Redis holds for `entity`, read from the hash.
async fn stored(w: &ParquetWorld, entity: &str) -> Option<(Json, Json)> {
    w.stored_values(&format!("{VIEW}_v1"), "domain_userid", entity, &FIELDS)
        .await
        .map(|v| (v["VISITS"].clone(), v["PLAN"].clone()))
}

/// Every key in Redis with its serialized value (`DUMP`) and absolute expiry.
async fn snapshot(w: &ParquetWorld) -> BTreeMap<Vec<u8>, (Vec<u8>, i64)> {
    let mut c = w.redis_conn().await;
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for k in keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&k)
            .query_async(&mut c)
            .await
            .unwrap();
        let expiry: i64 = redis::cmd("PEXPIRETIME")
            .arg(&k)
            .query_async(&mut c)
            .await
            .unwrap();
        out.insert(k, (dump, expiry));
    }
    out
}

/// Commands that change data, as `INFO commandstats` names them.
const WRITES: &[&str] = &[
    "set",
    "setex",
    "psetex",
    "getset",
    "getdel",
    "del",
    "unlink",
    "hset",
    "hsetnx",
    "hmset",
    "hdel",
    "hincrby",
    "incr",
    "incrby",
    "expire",
    "pexpire",
    "pexpireat",
    "persist",
    "lpush",
    "rpush",
    "ltrim",
    "lrem",
    "eval",
    "evalsha",
    "fcall",
    "script|load",
    "rename",
    "copy",
];

/// Calls so far of each command of [`WRITES`].
async fn write_calls(w: &ParquetWorld) -> BTreeMap<String, u64> {
    let mut c = w.redis_conn().await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some((name, stats)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        if !WRITES.contains(&name) {
            continue;
        }
        let calls = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        out.insert(name.to_string(), calls);
    }
    out
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, d)| *d > 0)
        .collect()
}

/// The view's watermark and last run record, from `status --json`.
fn progress(w: &ParquetWorld) -> (Json, Json) {
    let s = w.status();
    let v = s
        .as_array()
        .and_then(|a| a.iter().find(|v| v["view"] == json!(VIEW)))
        .unwrap_or_else(|| panic!("{VIEW} not in status: {s:#}"));
    (v["watermark"].clone(), v["last_run"].clone())
}

fn sample_names(report: &Json, kind: &str) -> Vec<String> {
    report["samples"][kind]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["entity"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_sorts_the_window_against_redis_and_writes_nothing() {
    let w = world();
    write(
        &w,
        "part-0.parquet",
        &[
            ("changed", 5 * MINUTE, 1, "free"),
            ("same", 4 * MINUTE, 2, "free"),
            ("stale", 3 * MINUTE, 3, "free"),
        ],
    );
    // A newer row of `stale` lands, then leaves the table (a back-dated
    // restatement): Redis holds a time the table no longer has.
    let newer = write(&w, "part-1.parquet", &[("stale", 2 * MINUTE, 9, "pro")]);
    w.sync();
    std::fs::remove_file(newer).unwrap();
    write(
        &w,
        "part-2.parquet",
        &[
            ("changed", MINUTE, 100, "free"),
            ("fresh", MINUTE, 7, "pro"),
        ],
    );

    // What any command writes at start (migrations, registry.files), as the baseline.
    let calls = write_calls(&w).await;
    let status_before = progress(&w);
    let baseline = delta(&calls, &write_calls(&w).await);
    let snap_before = snapshot(&w).await;

    let calls = write_calls(&w).await;
    let out = w.materializer(&["sync", "--dry-run", "--json"], &[]);
    let dry_writes = delta(&calls, &write_calls(&w).await);
    assert!(out.status.success(), "{}", shown(&out));
    let doc: Json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", shown(&out)));
    assert_eq!(doc["ok"], json!(true));
    assert_eq!(doc["dry_run"], json!(true));
    let v = &doc["views"][0];
    assert_eq!(v["view"], json!(format!("{VIEW}:1")), "{doc:#}");
    assert_eq!(v["outcome"], json!("ok"));
    let report = &v["dry_run"];
    for (kind, n) in [("new", 1), ("changed", 1), ("stale", 1), ("unchanged", 1)] {
        assert_eq!(report[kind], json!(n), "{kind}: {report:#}");
    }
    assert_eq!(report["entities"], json!(4));
    assert_eq!(sample_names(report, "new"), ["fresh"]);
    assert_eq!(sample_names(report, "changed"), ["changed"]);
    assert_eq!(sample_names(report, "stale"), ["stale"]);
    assert_eq!(sample_names(report, "unchanged"), ["same"]);
    let changed = &report["samples"]["changed"][0];
    assert_eq!(changed["fields"], json!(["VISITS"]), "{changed:#}");
    assert_eq!(changed["row_timestamp"], json!(at(&w, MINUTE)));
    assert_eq!(changed["stored_timestamp"], json!(at(&w, 5 * MINUTE)));
    let stale = &report["samples"]["stale"][0];
    assert_eq!(stale["stored_timestamp"], json!(at(&w, 2 * MINUTE)));
    assert_eq!(v["run"]["rows_written"], json!(0));
    assert_eq!(v["run"]["rows_read"], json!(5));

    // Nothing written: every key, value and expiry as before, no writing
    // command beyond what `status` sends, the same status (watermark, run).
    assert_eq!(
        dry_writes, baseline,
        "the dry run sent writing commands that status does not"
    );
    assert!(snapshot(&w).await == snap_before, "Redis changed");
    assert_eq!(progress(&w), status_before);

    // The lines say the same, samples included.
    let text = stdout(&w.materializer(&["sync", "--dry-run", "--view", VIEW], &[]));
    let head = text.lines().next().unwrap();
    assert!(
        head.contains("dry run ok")
            && head.contains("new=1 changed=1 stale=1 unchanged=1")
            && head.contains("watermark unchanged"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("changed: changed (row") && l.contains("VISITS")),
        "{text}"
    );
    assert!(snapshot(&w).await == snap_before, "Redis changed");

    // The real run does what the dry run predicted.
    w.sync();
    assert_eq!(stored(&w, "fresh").await, Some((json!(7), json!("pro"))));
    assert_eq!(
        stored(&w, "changed").await,
        Some((json!(100), json!("free")))
    );
    assert_eq!(stored(&w, "stale").await, Some((json!(9), json!("pro"))));
    assert_eq!(stored(&w, "same").await, Some((json!(2), json!("free"))));
    // And now there is nothing left to change.
    let doc: Json =
        serde_json::from_slice(&w.materializer(&["sync", "--dry-run", "--json"], &[]).stdout)
            .unwrap();
    let report = &doc["views"][0]["dry_run"];
    assert_eq!(
        (&report["new"], &report["changed"], &report["unchanged"]),
        (&json!(0), &json!(0), &json!(3)),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn range_backfill_writes_only_its_range_newest_wins_and_leaves_the_watermark() {
    let w = world();
    write(
        &w,
        "part-0.parquet",
        &[("a", 2 * MINUTE, 1, "free"), ("b", MINUTE, 2, "free")],
    );
    w.sync();
    // Late rows, far behind the lookback: the incremental run never sees them.
    write(
        &w,
        "late.parquet",
        &[
            ("before", 6 * 60 * MINUTE, 10, "old"),
            ("inside", 4 * 60 * MINUTE, 11, "late"),
            ("a", 3 * 60 * MINUTE, 12, "older-than-redis"),
            ("edge", 2 * 60 * MINUTE, 13, "at --to"),
        ],
    );
    let status = progress;
    w.sync();
    assert_eq!(stored(&w, "inside").await, None, "the lookback reached it");
    let before = status(&w);

    // Another replica holds the view's lease: a backfill does not wait for it.
    let keys = materializer::profiles::state::Keys::new("materializer:", "signals");
    let id = materializer::model::ViewId {
        name: VIEW.into(),
        version: 1,
    };
    let mut c = w.redis_conn().await;
    let _: () = redis::cmd("SET")
        .arg(keys.view(&id, "lease"))
        .arg("elsewhere:1/0")
        .arg("PX")
        .arg(120_000)
        .query_async(&mut c)
        .await
        .unwrap();

    let (from, to) = (at(&w, 5 * 60 * MINUTE), at(&w, 2 * 60 * MINUTE));
    let out = w.materializer(
        &[
            "sync", "--view", VIEW, "--from", &from, "--to", &to, "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", shown(&out));
    let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
    let v = &doc["views"][0];
    assert_eq!(v["range"], json!({"from": from, "to": to}), "{doc:#}");
    // Read: everything from --from on (Parquet has no upper bound to push
    // down); in range: `inside` and the old row of `a`; outside: the rest.
    assert_eq!(v["run"]["rows_read"], json!(5), "{doc:#}");
    assert_eq!(v["outside_range"], json!(3), "{doc:#}");
    assert_eq!(v["run"]["rows_written"], json!(1), "{doc:#}");
    assert_eq!(v["run"]["rows_stale"], json!(1), "{doc:#}");

    assert_eq!(stored(&w, "inside").await, Some((json!(11), json!("late"))));
    assert_eq!(stored(&w, "before").await, None, "before --from");
    assert_eq!(stored(&w, "edge").await, None, "--to is exclusive");
    assert_eq!(
        stored(&w, "a").await,
        Some((json!(1), json!("free"))),
        "newest-wins: the older row never replaces a newer value"
    );
    assert_eq!(status(&w), before, "watermark or run record moved");
    let lease: Option<String> = redis::cmd("GET")
        .arg(keys.view(&id, "lease"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(lease.as_deref(), Some("elsewhere:1/0"));

    // A dry run of a range judges only the range.
    let out = w.materializer(
        &[
            "sync",
            "--view",
            VIEW,
            "--dry-run",
            "--from",
            &at(&w, 7 * 60 * MINUTE),
            "--json",
        ],
        &[],
    );
    let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
    let report = &doc["views"][0]["dry_run"];
    assert_eq!(
        sample_names(report, "new"),
        ["before", "edge"],
        "{report:#}"
    );
    assert_eq!(
        sample_names(report, "unchanged"),
        ["a", "b", "inside"],
        "{report:#}"
    );
    assert_eq!(sample_names(report, "stale"), Vec::<String>::new());
    // `a`'s latest row in the range is the one Redis holds.
    assert_eq!(report["entities"], json!(5), "{report:#}");

    // Mistakes are one line, before anything runs.
    for (args, want) in [
        (
            vec!["sync", "--view", VIEW, "--from", "yesterday"],
            "--from: `yesterday` is not an RFC 3339 time",
        ),
        (
            vec!["sync", "--view", VIEW, "--from", &to, "--to", &from],
            "--to: must be later than --from",
        ),
    ] {
        let out = w.materializer(&args, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(want),
            "{}",
            shown(&out)
        );
    }
    let out = w.materializer(&["sync", "--from", &from], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--from needs --view: {}",
        shown(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_and_sync_print_one_json_document() {
    let w = world();
    write(&w, "part-0.parquet", &[("a", MINUTE, 1, "free")]);
    let out = w.materializer(&["sync", "--json"], &[("RUST_LOG", "debug")]);
    assert!(out.status.success(), "{}", shown(&out));
    let doc: Json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", shown(&out)));
    assert_eq!(doc["ok"], json!(true));
    let v = &doc["views"][0];
    assert_eq!(
        (&v["view"], &v["outcome"]),
        (&json!(format!("{VIEW}:1")), &json!("ok"))
    );
    assert_eq!(v["error"], Json::Null);
    assert_eq!(v["run"]["rows_written"], json!(1));
    assert_eq!(v["run"]["status"], json!("ok"));
    assert!(v["run"]["watermark_after"].is_string(), "{doc:#}");
    assert!(!out.stderr.is_empty(), "logs go to stderr");

    let out = w.materializer(&["check", "--json"], &[]);
    assert!(out.status.success(), "{}", shown(&out));
    let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], json!(true));
    let findings = doc["findings"].as_array().unwrap();
    assert!(findings
        .iter()
        .all(|f| f["ok"] == json!(true) && f["subject"].is_string() && f["detail"] == json!("")));
    assert!(findings.iter().any(|f| f["subject"]
        .as_str()
        .unwrap()
        .starts_with(&format!("view {VIEW}:1"))));

    // A view whose column is missing: check says so and fails; so does sync.
    w.write_view(
        "broken.json",
        &json!({
            "name": "broken", "version": 1,
            "entity": {"name": "domain_userid"},
            "batch_source": {"name": "ops", "database": "ANY", "schema": "ANY",
                             "table": "ops_events", "timestamp_field": "updated_at"},
            "fields": [{"name": "NO_SUCH_COLUMN", "type": "int32"}],
            "online": true
        }),
    );
    let out = w.materializer(&["check", "--json"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], json!(false));
    assert!(
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["ok"] == json!(false)
                && f["detail"].as_str().unwrap().contains("NO_SUCH_COLUMN")),
        "{doc:#}"
    );
    let out = w.materializer(&["sync", "--json"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], json!(false));
    let broken = doc["views"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["view"] == json!("broken:1"))
        .unwrap();
    assert_eq!(broken["outcome"], json!("permanent"), "{doc:#}");
    assert!(broken["error"].as_str().unwrap().contains("NO_SUCH_COLUMN"));
}

/// The tests run with the `failpoints` feature (scripts/test.sh passes it):
/// without it, the fault-injection tests would pass or fail for the wrong
/// reason, so this test exists only then, and fails saying why.
#[cfg(not(feature = "failpoints"))]
#[test]
fn the_tests_are_built_with_the_failpoints_feature() {
    panic!(
        "the integration tests need the failpoints feature: run scripts/test.sh, \
         or cargo test --features failpoints"
    );
}

#[test]
fn failpoints_are_a_test_feature_off_by_default_and_out_of_the_image() {
    let root = support::project_root();
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let features = manifest["features"].as_table().expect("[features]");
    assert!(features.contains_key("failpoints"));
    let default = features
        .get("default")
        .and_then(|d| d.as_array())
        .cloned()
        .unwrap_or_default();
    assert!(
        !default.iter().any(|f| f.as_str() == Some("failpoints")),
        "failpoints must not be a default feature"
    );
    let test_sh = std::fs::read_to_string(root.join("scripts/test.sh")).unwrap();
    assert!(
        test_sh.contains("cargo test --locked --features failpoints"),
        "scripts/test.sh runs the tests with the feature"
    );

    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let builds: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.contains("cargo build"))
        .collect();
    assert!(builds.len() >= 2, "a dependency layer, then the crate");
    for b in &builds {
        assert!(
            b.contains("--release --locked") && !b.contains("feature"),
            "{b}"
        );
    }
    // Dependencies are built before the sources are copied in.
    let first_build = dockerfile.find("cargo build").unwrap();
    assert!(dockerfile.find("COPY src src").unwrap() > first_build);
    // Pinned base images: an exact version or a dated snapshot, never a
    // moving tag.
    for from in dockerfile.lines().filter(|l| l.starts_with("FROM ")) {
        let image = from.split_whitespace().nth(1).unwrap();
        let tag = image.split_once(':').map(|(_, t)| t).unwrap_or("");
        let exact = tag.split('-').any(|part| {
            part.split('.').count() == 3
                || (part.len() == 8 && part.bytes().all(|b| b.is_ascii_digit()))
        });
        assert!(exact, "{from}: not pinned to an exact version or date");
    }
    // The image runs what the README says it runs.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let cmd = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .unwrap();
    let args: Vec<String> = serde_json::from_str(cmd).unwrap();
    assert!(dockerfile.contains("ENTRYPOINT [\"materializer\"]"));
    let run = format!("materializer {}", args.join(" "));
    assert!(
        readme.contains(&format!("`{run}`")),
        "README does not say the image runs `{run}`"
    );

    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for must in ["target/", ".git/", ".quickstart/", "tests/"] {
        assert!(ignored.contains(&must), ".dockerignore lacks {must}");
    }
    for needed in ["src", "migrations", "Cargo.toml", "Cargo.lock"] {
        assert!(
            !ignored.iter().any(|l| l.trim_end_matches('/') == needed),
            ".dockerignore drops {needed}, which the build copies"
        );
    }
}
