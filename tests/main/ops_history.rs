//! What operators of a profiles store rely on, through the binary and its API:
//!
//! - run history: the last `sync.run_history` finished runs per view, trimmed
//!   in Redis, in `status --json` and `GET /api/v1/sync/status` (the same
//!   document), and one view's sync status in the Signals SDK 0.4.x
//!   `BatchSyncStatusResponse` shape, parsed by the real SDK model
//!   (`tests/support/signals_sync_status04.py`), through failures, recovery
//!   and a run in flight; deleting the view deletes its history;
//! - `/readyz` gates on Redis only: 200 with the warehouse down (reads still
//!   served), 503 with Redis down; `/healthz` fails while the scheduler loop
//!   is stalled (a failpoint) and recovers with it; `materializer health`
//!   exits 0/1 accordingly, and 1 when nothing answers.

use std::time::Duration;

use redis::AsyncCommands;
use serde_json::{json, Value as Json};

use crate::fixtures::{api_comes_up, shown, stdout, Daemon, SnowflakeWorld, SEED_TABLE, SEED_VIEW};
use crate::support::{self, unique_name};

/// Row of the seed table: (DOMAIN_USERID, TOTAL_TRANSACTIONS, TOTAL_REVENUE,
/// AVG_TRANSACTION_REVENUE, UPDATED_AT).
const U1: crate::fixtures::Row<'static> = (Some("u1"), 7, 70, 10, Some("2024-05-01 10:00:00"));

/// A daemon serving the API (token `token`) over `world`, whose seed view is
/// in `registry.files`.
struct Served {
    daemon: Daemon,
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Served {
    /// Writes `config` with an API on a free port and a token, and starts `run`.
    async fn start(
        w: &SnowflakeWorld,
        config: crate::fixtures::ConfigToml,
        env: &[(&str, &str)],
    ) -> Served {
        let port = support::free_port();
        let token = unique_name("token");
        w.write_config(
            &config
                .set("api.listen", format!("127.0.0.1:{port}"))
                .set("api.tokens", [token.clone()]),
        );
        let daemon = w.spawn("daemon", &["run"], env);
        let url = format!("http://127.0.0.1:{port}");
        assert!(
            api_comes_up(&url).await,
            "the API never answered /healthz; log:\n{}",
            daemon.log_text()
        );
        Served {
            daemon,
            url,
            token,
            http: reqwest::Client::new(),
        }
    }

    /// `GET path` (with the token on `/api/v1`): status and JSON body.
    async fn get(&self, path: &str) -> (u16, Json) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("HTTP GET");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Json::String(text)),
        )
    }

    /// The seed view's sync status through the Signals SDK 0.4.x.
    async fn sdk_sync_status(&self) -> Json {
        let python = tokio::task::spawn_blocking(|| support::venv_python("signals04"))
            .await
            .unwrap();
        let out = tokio::process::Command::new(python)
            .arg(support::project_root().join("tests/support/signals_sync_status04.py"))
            .args([&self.url, &self.token, SEED_VIEW, "1"])
            .output()
            .await
            .expect("run signals_sync_status04.py");
        assert!(
            out.status.success(),
            "signals_sync_status04.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Json = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            got["invalid"],
            Json::Null,
            "the SDK model refused our answer: {got}"
        );
        assert_eq!(got["error"], Json::Null, "{got}");
        // Exactly the model's fields: nothing the SDK would drop, nothing missing.
        assert_eq!(got["keys"], got["model_fields"], "{got}");
        got["parsed"].clone()
    }
}

fn seed_view_file(w: &SnowflakeWorld, view: &Json) {
    std::fs::write(w.views().join("seed.json"), view.to_string()).unwrap();
}

/// The only row of `status --json` (or of the HTTP list).
fn only(rows: &Json) -> &Json {
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    &rows[0]
}

fn statuses(row: &Json) -> Vec<&str> {
    row["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect()
}

/// Instants as the SDK parsed them are compared with ours to the microsecond
/// (Python's `datetime` keeps no more).
fn same_instant(ours: &Json, sdks: &Json) -> bool {
    let parse = |j: &Json| {
        chrono::DateTime::parse_from_rfc3339(
            j.as_str().unwrap_or_else(|| panic!("not a time: {j}")),
        )
        .unwrap()
        .timestamp_micros()
    };
    parse(ours) == parse(sdks)
}

#[tokio::test(flavor = "multi_thread")]
async fn run_history_is_kept_trimmed_and_served_in_the_sdk_shape() {
    let w = SnowflakeWorld::shared().await;
    let view = w.add_seed_table().await;
    seed_view_file(&w, &view);
    w.insert_seed(&[U1]).await;
    // A long interval: after its first run the daemon only serves; the runs
    // below are `sync` commands, so their order is known.
    let d = Served::start(
        &w,
        w.fast_config()
            .set("scheduler.interval", "1h")
            .set("sync.run_history", 3),
        &[],
    )
    .await;
    let first_ok = support::wait_for(Duration::from_secs(60), || async {
        statuses(only(&d.get("/api/v1/sync/status").await.1)) == ["ok"]
    })
    .await;
    assert!(first_ok, "no first run; log:\n{}", d.daemon.log_tail(40));

    // Two failures: the table is gone.
    w.sql("SIGNALS", &[&format!(r#"DROP TABLE "{SEED_TABLE}""#)])
        .await;
    for _ in 0..2 {
        let out = w.materializer(&["sync"], &[]);
        assert!(!out.status.success(), "{}", shown(&out));
    }
    let status = w.status();
    let row = only(&status);
    assert_eq!(statuses(row), ["failed", "failed", "ok"], "{row}");
    let runs = &row["runs"];
    assert_eq!(
        row["last_run"], runs[0],
        "the last run is the history's head"
    );
    let s = &row["sync_status"];
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(s["last_synced_at"], runs[2]["finished_at"]);
    assert_eq!(s["records_synced"], 1);
    assert_eq!(s["data_fresh_through"], row["watermark"]);
    assert_eq!(s["source_table"], format!("{}.SIGNALS.{SEED_TABLE}", w.db));
    assert_eq!(s["sync_started_at"], Json::Null);
    assert_eq!(
        s["errors"],
        json!([0, 1]
            .iter()
            .map(|&i| json!({
                // A run that failed before reading its watermark started
                // from the committed one all the same.
                "interval_start": if runs[i]["watermark_before"].is_null() {
                    &row["watermark"]
                } else {
                    &runs[i]["watermark_before"]
                },
                "interval_end": runs[i]["started_at"],
                "message": runs[i]["error"],
            }))
            .collect::<Vec<_>>()),
        "{row}"
    );
    assert!(
        s["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(SEED_TABLE),
        "{s}"
    );
    // Over HTTP: the same document as `status --json`.
    assert_eq!(d.get("/api/v1/sync/status").await, (200, status.clone()));
    let (code, one) = d
        .get(&format!("/api/v1/sync/{SEED_VIEW}/versions/1/status"))
        .await;
    assert_eq!((code, &one), (200, s));
    let parsed = d.sdk_sync_status().await;
    assert_eq!(parsed["status"], "failed", "{parsed}");
    assert_eq!(parsed["errors"].as_array().unwrap().len(), 2, "{parsed}");
    assert_eq!(parsed["errors"][1]["message"], s["errors"][1]["message"]);
    assert!(same_instant(
        &s["errors"][0]["interval_end"],
        &parsed["errors"][0]["interval_end"]
    ));
    assert!(same_instant(
        &s["last_synced_at"],
        &parsed["last_synced_at"]
    ));

    // Recovery: the history keeps the newest 3, in Redis too.
    w.sql(
        "SIGNALS",
        &[&format!(
            r#"CREATE TABLE "{SEED_TABLE}" ("DOMAIN_USERID" VARCHAR, "TOTAL_TRANSACTIONS" NUMBER(38,0),
               "TOTAL_REVENUE" NUMBER(38,0), "AVG_TRANSACTION_REVENUE" NUMBER(38,0), "UPDATED_AT" TIMESTAMP_NTZ)"#
        )],
    )
    .await;
    w.insert_seed(&[
        (Some("u1"), 8, 80, 10, Some("2024-05-02 10:00:00")),
        (Some("u2"), 1, 10, 10, Some("2024-05-02 11:00:00")),
    ])
    .await;
    w.sync();
    let status = w.status();
    let row = only(&status);
    assert_eq!(statuses(row), ["ok", "failed", "failed"], "{row}");
    let mut redis = w.redis_conn().await;
    let kept: usize = redis
        .llen(SnowflakeWorld::state_key(SEED_VIEW, "runs"))
        .await
        .unwrap();
    assert_eq!(kept, 3);
    let s = &row["sync_status"];
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["errors"], json!([]));
    assert_eq!(s["last_synced_at"], row["runs"][0]["finished_at"]);
    assert_eq!(s["data_fresh_through"], "2024-05-02T11:00:00Z");
    // The first run (1 entity) left the history: only this run's 2 count.
    assert_eq!(s["records_synced"], 2);
    let parsed = d.sdk_sync_status().await;
    assert_eq!(parsed["status"], "completed", "{parsed}");
    assert_eq!(parsed["errors"], json!([]));
    assert_eq!(parsed["records_synced"], 2);
    assert_eq!(parsed["source_table"], s["source_table"]);
    assert!(same_instant(
        &s["data_fresh_through"],
        &parsed["data_fresh_through"]
    ));

    // A run in flight (held before its commit) is `running`, with its start.
    let mut slow = w.spawn(
        "slow-sync",
        &["sync"],
        &[(
            "MATERIALIZER_FAILPOINTS",
            "before_watermark_commit=sleep(4000)",
        )],
    );
    let path = format!("/api/v1/sync/{SEED_VIEW}/versions/1/status");
    let seen = std::sync::Mutex::new(Json::Null);
    let running = support::wait_for(Duration::from_secs(30), || async {
        let (_, s) = d.get(&path).await;
        let hit = s["status"] == "running" && s["sync_started_at"].is_string();
        *seen.lock().unwrap() = s;
        hit
    })
    .await;
    let seen = seen.into_inner().unwrap();
    assert!(
        running,
        "never saw the run in flight: {seen}\n{}",
        slow.log_text()
    );
    assert!(slow
        .wait_exit(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
    let status = w.status();
    let row = only(&status);
    assert_eq!(
        seen["sync_started_at"], row["runs"][0]["started_at"],
        "{row}"
    );
    assert_eq!(row["sync_status"]["status"], "completed");
    assert_eq!(row["sync_status"]["sync_started_at"], Json::Null);

    // Deleting the view deletes its history and its in-flight note.
    let out = w.materializer(&["delete", "--view", &format!("{SEED_VIEW}:1")], &[]);
    assert!(out.status.success(), "{}", shown(&out));
    for kind in ["run", "runs", "inflight"] {
        let left: bool = redis
            .exists(SnowflakeWorld::state_key(SEED_VIEW, kind))
            .await
            .unwrap();
        assert!(!left, "`{kind}` survived the delete");
    }
    let (code, gone) = d.get(&path).await;
    assert_eq!(code, 404, "{gone}");
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_stays_200_with_the_warehouse_down_and_fails_with_redis_down() {
    let mut w = SnowflakeWorld::shared().await;
    let view = w.add_seed_table().await;
    seed_view_file(&w, &view);
    w.insert_seed(&[U1]).await;
    w.sync();
    // The warehouse goes away: nothing listens where the daemon looks for it.
    let dead = format!("http://127.0.0.1:{}", support::free_port());
    let d = Served::start(
        &w,
        w.fast_config()
            .set("scheduler.interval", "1h")
            .set("warehouse.base_url", dead.as_str()),
        &[],
    )
    .await;

    // Every answer is 200 while the probe finds the warehouse gone.
    let last = std::sync::Mutex::new(Json::Null);
    let found = support::wait_for(Duration::from_secs(30), || async {
        let (code, ready) = d.get("/readyz").await;
        assert_eq!(code, 200, "{ready}");
        assert_eq!(ready["checks"]["redis"], "ok", "{ready}");
        let found = ready["checks"]["warehouse"] == "unavailable";
        *last.lock().unwrap() = ready;
        found
    })
    .await;
    let ready = last.into_inner().unwrap();
    assert!(found, "{ready}");
    assert_eq!(
        ready,
        json!({"status": "ready", "checks": {"redis": "ok", "warehouse": "unavailable"}})
    );
    // What readiness promises: reads are served.
    let resp = d
        .http
        .post(format!("{}/api/v1/get-online-attributes", d.url))
        .bearer_auth(&d.token)
        .json(&json!({
            "entities": {"domain_userid": ["u1"]},
            "attributes": [format!("{SEED_VIEW}_v1:TOTAL_TRANSACTIONS")],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Json>().await.unwrap(),
        json!({"domain_userid": ["u1"], "TOTAL_TRANSACTIONS": [7]})
    );
    let out = w.materializer(&["health", "--ready"], &[]);
    assert!(out.status.success(), "{}", shown(&out));
    assert!(
        stdout(&out).starts_with("healthy: GET http://127.0.0.1:"),
        "{}",
        shown(&out)
    );
    assert_eq!(stdout(&out).lines().count(), 1, "{}", shown(&out));

    // Redis down: not ready, but still alive (a restart would not bring Redis back).
    w.redis.stop();
    let asked = std::time::Instant::now();
    let (code, ready) = d.get("/readyz").await;
    assert_eq!(code, 503, "{ready}");
    // Within a load balancer's probe timeout, not Redis's reconnect time.
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(ready["checks"]["redis"], "unavailable", "{ready}");
    assert!(
        !ready.to_string().contains(&dead),
        "details stay in the log: {ready}"
    );
    let out = w.materializer(&["health", "--ready"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        stdout(&out).starts_with("unhealthy: ") && stdout(&out).contains(" 503 "),
        "{}",
        shown(&out)
    );
    let out = w.materializer(&["health"], &[]);
    assert!(out.status.success(), "{}", shown(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_fails_while_the_scheduler_loop_is_stalled_and_health_follows() {
    let w = SnowflakeWorld::shared().await;
    // The loop's second round sleeps 20 s, twice `stall_after`.
    let mut d = Served::start(
        &w,
        w.fast_config()
            .set("scheduler.interval", "1h")
            .set("scheduler.stall_after", "10s"),
        &[("MATERIALIZER_FAILPOINTS", "scheduler_loop=sleep(20000)@2")],
    )
    .await;
    let out = w.materializer(&["health"], &[]);
    assert!(out.status.success(), "{}", shown(&out));

    let stalled = std::sync::Mutex::new(Json::Null);
    let failed = support::wait_for(Duration::from_secs(40), || async {
        let (code, body) = d.get("/healthz").await;
        *stalled.lock().unwrap() = body;
        code == 503
    })
    .await;
    let stalled = stalled.into_inner().unwrap();
    assert!(
        failed,
        "/healthz never failed: {stalled}\n{}",
        d.daemon.log_tail(30)
    );
    assert_eq!(stalled["status"], "stalled");
    assert_eq!(stalled["scheduler"]["stall_after_seconds"], 10);
    assert!(
        stalled["scheduler"]["last_progress_seconds_ago"]
            .as_u64()
            .unwrap()
            >= 10
    );
    let out = w.materializer(&["health"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        stdout(&out).starts_with("unhealthy: ") && stdout(&out).contains(" 503 "),
        "{}",
        shown(&out)
    );
    // Readiness does not depend on the loop: reads are still served.
    assert_eq!(d.get("/readyz").await.0, 200);

    let recovered = support::wait_for(Duration::from_secs(30), || async {
        d.get("/healthz").await.0 == 200
    })
    .await;
    assert!(
        recovered,
        "/healthz never recovered; log:\n{}",
        d.daemon.log_tail(30)
    );
    let out = w.materializer(&["health"], &[]);
    assert!(out.status.success(), "{}", shown(&out));
    assert!(
        d.daemon
            .log_text()
            .contains("the scheduler loop is not making progress"),
        "{}",
        d.daemon.log_tail(30)
    );

    // Nothing answering is unhealthy too.
    assert!(d.daemon.terminate(Duration::from_secs(20)).success());
    let out = w.materializer(&["health", "--timeout", "2s"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        stdout(&out).starts_with("unhealthy: ") && stdout(&out).contains("no answer"),
        "{}",
        shown(&out)
    );
}
