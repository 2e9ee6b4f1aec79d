//! End to end: the built binary syncs the seed view from a Snowflake-protocol
//! server into a real Redis, and incremental runs bring exactly the right
//! values (newer rows, late rows inside the lookback, a bulk update larger
//! than a page with one timestamp), resuming from the stored watermark.
//! The real Feast SDK then reads the values back with their types.
//!
//! Assumes the harness in `tests/support` (fakesnow + compatibility proxy,
//! throwaway redis-server) and the Feast venv from `scripts/python-env.sh feast`.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;

use materializer::profiles::{feast, read};
use serde_json::{json, Value as Json};
use support::{materializer_bin, scratch_dir, unique_name, RedisServer, SnowflakeServer};

const TABLE: &str = "SNOWPLOW_ECOMMERCE_TRANSACTION_INTERACTIONS_FEATURES";
const VIEW: &str = "ecommerce_transaction_interactions_features";
/// (DOMAIN_USERID, TOTAL_TRANSACTIONS, TOTAL_REVENUE, AVG_TRANSACTION_REVENUE, UPDATED_AT)
type Row<'a> = (Option<&'a str>, i64, i64, i64, Option<&'a str>);

const FIELDS: [&str; 3] = [
    "TOTAL_TRANSACTIONS",
    "TOTAL_REVENUE",
    "AVG_TRANSACTION_REVENUE",
];

/// One isolated world: a database on the shared Snowflake server, a Redis,
/// a config and the seed view file in a scratch directory.
struct World {
    sf: &'static SnowflakeServer,
    redis: RedisServer,
    db: String,
    dir: PathBuf,
    config: PathBuf,
}

impl World {
    async fn new(page_rows: usize) -> World {
        World::with(page_rows, r#"password = "test-password""#, "").await
    }

    /// `auth` goes into `[warehouse]`; `extra` is appended (other sections).
    async fn with(page_rows: usize, auth: &str, extra: &str) -> World {
        let sf = SnowflakeServer::shared();
        let redis = RedisServer::start();
        let db = unique_name("E2E");
        let dir = scratch_dir("e2e");
        sf.exec_in(
            &db,
            "SIGNALS",
            &[&format!(
                r#"CREATE TABLE "{TABLE}" ("DOMAIN_USERID" VARCHAR, "TOTAL_TRANSACTIONS" NUMBER(38,0),
                   "TOTAL_REVENUE" NUMBER(38,0), "AVG_TRANSACTION_REVENUE" NUMBER(38,0), "UPDATED_AT" TIMESTAMP_NTZ)"#
            )],
        )
        .await;
        let views = dir.join("views");
        std::fs::create_dir_all(&views).unwrap();
        let mut view: Json = serde_json::from_str(
            &std::fs::read_to_string(
                support::project_root()
                    .join("config/views/ecommerce_transaction_interactions_features.json"),
            )
            .unwrap(),
        )
        .unwrap();
        view["batch_source"]["database"] = json!(db);
        std::fs::write(views.join("seed.json"), view.to_string()).unwrap();
        let config = dir.join("materializer.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[sync]
lookback = "10m"
page_rows = {page_rows}
[warehouse]
kind = "snowflake"
account = "testacct"
user = "SIGNALS"
{auth}
database = "{db}"
base_url = "{base}"
query_timeout = "30s"
[profiles]
redis_url = "{redis}"
project = "signals"
[registry]
files = ["{views}/*.json"]
[log]
format = "text"
{extra}
"#,
                base = sf.base_url,
                redis = redis.url,
                views = views.display()
            ),
        )
        .unwrap();
        World {
            sf,
            redis,
            db,
            dir,
            config,
        }
    }

    async fn insert(&self, rows: &[Row<'_>]) {
        let values: Vec<String> = rows
            .iter()
            .map(|(e, t, r, a, ts)| {
                format!(
                    "({}, {t}, {r}, {a}, {})",
                    e.map(|e| format!("'{e}'")).unwrap_or("NULL".into()),
                    ts.map(|ts| format!("'{ts}'")).unwrap_or("NULL".into())
                )
            })
            .collect();
        self.sf
            .exec_in(
                &self.db,
                "SIGNALS",
                &[&format!(
                    r#"INSERT INTO "{TABLE}" VALUES {}"#,
                    values.join(", ")
                )],
            )
            .await;
    }

    fn materializer(&self, args: &[&str]) -> Output {
        std::process::Command::new(materializer_bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("run materializer")
    }

    /// Runs `sync`, asserts success, returns stdout.
    fn sync(&self) -> String {
        let out = self.materializer(&["sync"]);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "sync failed\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// The stored values of one entity, decoded from Redis directly.
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
                    (
                        f.to_string(),
                        v.map(|b| read::decode_value(&b).unwrap())
                            .unwrap_or(Json::Null),
                    )
                })
                .collect(),
        )
    }

    async fn assert_profile(&self, entity: &str, tx: i64, rev: i64, avg: i64) {
        let p = self
            .profile(entity)
            .await
            .unwrap_or_else(|| panic!("no profile for {entity}"));
        assert_eq!(
            (
                p["TOTAL_TRANSACTIONS"].clone(),
                p["TOTAL_REVENUE"].clone(),
                p["AVG_TRANSACTION_REVENUE"].clone()
            ),
            (json!(tx), json!(rev), json!(avg)),
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

#[tokio::test(flavor = "multi_thread")]
async fn seed_view_syncs_latest_values_and_incremental_runs_land_exactly() {
    let w = World::new(3).await;
    w.insert(&[
        (Some("u1"), 1, 10, 10, Some("2024-05-01 10:00:00")),
        (Some("u1"), 2, 30, 15, Some("2024-05-01 11:00:00")),
        (Some("u2"), 1, 7, 7, Some("2024-05-01 10:30:00")),
        (Some("u3"), 5, 50, 10, Some("2024-05-01 09:00:00")),
        (Some("u3"), 4, 40, 10, Some("2024-05-01 08:00:00")),
        (None, 9, 9, 9, Some("2024-05-01 10:00:00")),
        (Some("u4"), 9, 9, 9, None),
    ])
    .await;

    let out = w.sync();
    let line = out
        .lines()
        .find(|l| l.contains(VIEW))
        .expect("a line for the view");
    assert!(line.contains(" ok "), "{line}");
    assert_eq!(stat(line, "read"), "5");
    // Pages of 3 rows: [u3, u3, u1] and [u2, u1]; u1 is written once per page.
    assert_eq!(stat(line, "written"), "4");
    assert!(
        line.contains("null_entity=1") && line.contains("null_timestamp=1"),
        "{line}"
    );
    w.assert_profile("u1", 2, 30, 15).await;
    w.assert_profile("u2", 1, 7, 7).await;
    w.assert_profile("u3", 5, 50, 10).await;
    assert_eq!(w.profile("u4").await, None);

    // Watermark is 11:00. Newer rows, a late row inside the 10-minute lookback,
    // a late row older than the lookback (not read: that is what full resyncs are
    // for), and a bulk update stamping more rows than a page with one timestamp.
    let bulk: Vec<String> = (0..10).map(|i| format!("b{i:02}")).collect();
    let mut rows: Vec<Row> = vec![
        (Some("u2"), 2, 20, 10, Some("2024-05-01 12:00:00")),
        (Some("u5"), 1, 1, 1, Some("2024-05-01 10:55:00")),
        (Some("u3"), 6, 66, 11, Some("2024-05-01 10:40:00")),
    ];
    for b in &bulk {
        rows.push((Some(b.as_str()), 3, 33, 11, Some("2024-05-01 11:30:00")));
    }
    w.insert(&rows).await;

    let out = w.sync();
    let line = out.lines().find(|l| l.contains(VIEW)).unwrap();
    assert!(line.contains(" ok "), "{line}");
    // A new process resumed from the stored watermark: it read only the window
    // (> 10:50): u1@11:00, u5@10:55, u2@12:00 and the 10 bulk rows.
    assert_eq!(stat(line, "read"), "13", "{line}");
    assert!(line.contains("-> 2024-05-01T12:00:00Z"), "{line}");
    w.assert_profile("u2", 2, 20, 10).await;
    w.assert_profile("u5", 1, 1, 1).await;
    w.assert_profile("u3", 5, 50, 10).await;
    for b in &bulk {
        w.assert_profile(b, 3, 33, 11).await;
    }

    // A third run with nothing new rewrites the lookback idempotently and keeps the watermark.
    let out = w.sync();
    let line = out.lines().find(|l| l.contains(VIEW)).unwrap();
    assert!(
        line.contains("2024-05-01T12:00:00Z -> 2024-05-01T12:00:00Z"),
        "{line}"
    );
    w.assert_profile("u1", 2, 30, 15).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn feast_sdk_reads_the_synced_values_with_their_types() {
    let w = World::new(1000).await;
    w.insert(&[
        (
            Some("abc-123"),
            12,
            3400,
            283,
            Some("2024-05-01 10:00:00.123456"),
        ),
        (Some("ü-non-ascii"), 1, -5, -5, Some("2024-05-02 10:00:00")),
    ])
    .await;
    w.sync();

    let request = json!({
        "redis": w.redis.url,
        "project": "signals",
        "views": [{
            "name": VIEW, "version": 1, "entity": {"name": "domain_userid"},
            "fields": FIELDS.iter().map(|f| json!({"name": f, "type": "int32"})).collect::<Vec<_>>()
        }],
        "entities": ["abc-123", "ü-non-ascii", "nobody"],
    });
    let python = std::process::Command::new(support::project_root().join("scripts/python-env.sh"))
        .arg("feast")
        .output()
        .unwrap();
    let python = String::from_utf8(python.stdout).unwrap();
    let out = std::process::Command::new(python.trim())
        .arg(support::project_root().join("tests/support/feast_read.py"))
        .arg(request.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "feast_read.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["TOTAL_TRANSACTIONS"], json!([12, 1, null]));
    assert_eq!(got["TOTAL_REVENUE"], json!([3400, -5, null]));
    assert_eq!(got["AVG_TRANSACTION_REVENUE"], json!([283, -5, null]));
    assert_eq!(
        got["kinds"]["TOTAL_REVENUE"],
        json!(["int32_val", "int32_val", null])
    );
    assert_eq!(
        got["event_timestamps"]["TOTAL_REVENUE"][0],
        json!("2024-05-01T10:00:00.123456000Z")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn profile_command_shows_the_synced_profile_as_json() {
    let w = World::new(1000).await;
    w.insert(&[(Some("abc-123"), 12, 3400, 283, Some("2024-05-01 10:00:00"))])
        .await;
    w.sync();
    let out = w.materializer(&["profile", "--view", VIEW, "abc-123"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        got[0]["values"],
        json!({"TOTAL_TRANSACTIONS": 12, "TOTAL_REVENUE": 3400, "AVG_TRANSACTION_REVENUE": 283})
    );
    assert_eq!(got[0]["event_timestamp"], json!("2024-05-01T10:00:00Z"));
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_syncs_on_its_interval_and_exits_cleanly_on_sigterm() {
    let w = World::with(
        1000,
        r#"password = "test-password""#,
        "[scheduler]\ninterval = \"1s\"\n",
    )
    .await;
    w.insert(&[(Some("d1"), 1, 1, 1, Some("2024-05-01 10:00:00"))])
        .await;
    let mut daemon = std::process::Command::new(materializer_bin())
        .arg("--config")
        .arg(&w.config)
        .arg("run")
        .current_dir(&w.dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(w.dir.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let synced = |entity: &'static str, tx: i64| {
        let w = &w;
        async move {
            support::wait_for(std::time::Duration::from_secs(30), || async {
                w.profile(entity)
                    .await
                    .is_some_and(|p| p["TOTAL_TRANSACTIONS"] == json!(tx))
            })
            .await
        }
    };
    let log = || std::fs::read_to_string(w.dir.join("daemon.log")).unwrap_or_default();
    assert!(
        synced("d1", 1).await,
        "first row never synced; log:\n{}",
        log()
    );
    // A later row lands on a later tick without a restart.
    w.insert(&[(Some("d1"), 2, 2, 2, Some("2024-05-01 11:00:00"))])
        .await;
    assert!(
        synced("d1", 2).await,
        "second row never synced; log:\n{}",
        log()
    );

    let pid = daemon.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(s) = daemon.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "daemon did not stop on SIGTERM; log:\n{}",
            log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success(), "exit {status:?}; log:\n{}", log());
}

#[tokio::test(flavor = "multi_thread")]
async fn key_pair_auth_syncs() {
    let key = support::test_private_key_path();
    let w = World::with(
        1000,
        &format!("private_key_path = \"{}\"", key.display()),
        "",
    )
    .await;
    w.insert(&[(Some("k1"), 3, 4, 5, Some("2024-05-01 10:00:00"))])
        .await;
    w.sync();
    w.assert_profile("k1", 3, 4, 5).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_missing_and_mistyped_columns() {
    let w = World::new(1000).await;
    let ok = w.materializer(&["check"]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    w.sf.exec_in(
        &w.db,
        "SIGNALS",
        &[
            &format!(r#"ALTER TABLE "{TABLE}" DROP COLUMN "TOTAL_REVENUE""#),
            &format!(r#"ALTER TABLE "{TABLE}" DROP COLUMN "AVG_TRANSACTION_REVENUE""#),
            &format!(r#"ALTER TABLE "{TABLE}" ADD COLUMN "AVG_TRANSACTION_REVENUE" BOOLEAN"#),
        ],
    )
    .await;
    let bad = w.materializer(&["check"]);
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success(), "{stdout}");
    assert!(stdout.contains("`TOTAL_REVENUE` not found"), "{stdout}");
    assert!(
        stdout.contains("AVG_TRANSACTION_REVENUE") && stdout.contains("int32"),
        "{stdout}"
    );

    // The run fails with the same message and the watermark stays unset.
    let out = w.materializer(&["sync"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success()
            && stdout.contains("FAILED (permanent)")
            && stdout.contains("TOTAL_REVENUE"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_refuses_an_invalid_view_naming_the_problem_and_applies_nothing() {
    let w = World::new(1000).await;
    let file = w.dir.join("bad.json");
    std::fs::write(
        &file,
        r#"[{"name":"good","entity":{"name":"user_id"},"batch_source":{"table":"T","timestamp_field":"TS"},
             "fields":[{"name":"A","type":"int32"}]},
            {"name":"bad","entity":{"name":"user_id"},"batch_source":{"table":"T","timestamp_field":"TS"},
             "fields":[{"name":"SCORE","type":"decimal"}]}]"#,
    )
    .unwrap();
    let out = w.materializer(&["apply", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("SCORE") && stderr.contains("decimal"),
        "{stderr}"
    );
    let status = w.materializer(&["status", "--json"]);
    let listed: Json = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["view"] != "good"),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_forgets_the_watermark_so_the_next_run_rereads_everything() {
    let w = World::new(1000).await;
    w.insert(&[
        (Some("r1"), 1, 1, 1, Some("2024-05-01 10:00:00")),
        (Some("r2"), 1, 1, 1, Some("2024-05-02 10:00:00")),
    ])
    .await;
    w.sync();
    // Wipe a profile behind the daemon's back; an incremental run would not restore it.
    let mut conn = w.redis.connection().await;
    let key = feast::entity_key("domain_userid", b"r1", "signals");
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let line = w.sync();
    assert!(line.contains("read=1 "), "{line}");
    assert_eq!(w.profile("r1").await, None);

    let out = w.materializer(&["reset", "--view", VIEW]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = w.sync();
    assert!(
        line.contains("read=2 ") && line.contains("none -> 2024-05-02T10:00:00Z"),
        "{line}"
    );
    w.assert_profile("r1", 1, 1, 1).await;
    let status = w.materializer(&["status", "--json"]);
    let listed: Json = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(listed[0]["watermark"], json!("2024-05-02T10:00:00Z"));
    assert_eq!(listed[0]["last_run"]["status"], json!("ok"));
}
