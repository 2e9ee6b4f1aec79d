//! End to end: the built binary syncs the seed view from a Snowflake-protocol
//! server into a real Redis, and incremental runs bring exactly the right
//! values (newer rows, late rows inside the lookback, a bulk update larger
//! than a page with one timestamp), resuming from the stored watermark.
//! The real Feast SDK then reads the values back with their types.
//!
//! Assumes the harness in `tests/support` (fakesnow + compatibility proxy,
//! throwaway redis-server) and the Feast venv from `scripts/python-env.sh feast`.

use std::collections::BTreeMap;
use std::time::Duration;

use materializer::profiles::feast;
use serde_json::{json, Value as Json};

use crate::fixtures::{
    feast_read, shown, stat, stderr, stdout, ConfigToml, Row, SnowflakeWorld, SEED_TABLE,
    SEED_VIEW as VIEW,
};
use crate::support;

const FIELDS: [&str; 3] = [
    "TOTAL_TRANSACTIONS",
    "TOTAL_REVENUE",
    "AVG_TRANSACTION_REVENUE",
];

/// A world with the seed table and the seed view in `registry.files`, pages
/// of `page_rows`.
async fn world(page_rows: usize) -> SnowflakeWorld {
    let w = SnowflakeWorld::shared().await;
    let view = w.add_seed_table().await;
    std::fs::write(w.views().join("seed.json"), view.to_string()).unwrap();
    w.write_config(&config(&w, page_rows));
    w
}

fn config(w: &SnowflakeWorld, page_rows: usize) -> ConfigToml {
    w.config()
        .set("sync.lookback", "10m")
        .set("sync.page_rows", page_rows)
}

/// The stored values of one entity, decoded from Redis directly.
async fn profile(w: &SnowflakeWorld, entity: &str) -> Option<BTreeMap<String, Json>> {
    w.stored_values(&format!("{VIEW}_v1"), "domain_userid", entity, &FIELDS)
        .await
}

async fn assert_profile(w: &SnowflakeWorld, entity: &str, tx: i64, rev: i64, avg: i64) {
    let p = profile(w, entity)
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

#[tokio::test(flavor = "multi_thread")]
async fn seed_view_syncs_latest_values_and_incremental_runs_land_exactly() {
    let w = world(3).await;
    w.insert_seed(&[
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
    // Pages of 3 rows, in the warehouse's order: each entity is written (or
    // found stale) once per page it is in, so 3 to 5 times in all.
    let written: u64 = stat(line, "written").parse().unwrap();
    let stale: u64 = stat(line, "stale").parse().unwrap();
    assert!(written >= 3 && written + stale <= 5, "{line}");
    assert!(
        line.contains("null_entity=1") && line.contains("null_timestamp=1"),
        "{line}"
    );
    assert_profile(&w, "u1", 2, 30, 15).await;
    assert_profile(&w, "u2", 1, 7, 7).await;
    assert_profile(&w, "u3", 5, 50, 10).await;
    assert_eq!(profile(&w, "u4").await, None);

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
    w.insert_seed(&rows).await;

    let out = w.sync();
    let line = out.lines().find(|l| l.contains(VIEW)).unwrap();
    assert!(line.contains(" ok "), "{line}");
    // A new process resumed from the stored watermark: it read only the window
    // (> 10:50): u1@11:00, u5@10:55, u2@12:00 and the 10 bulk rows.
    assert_eq!(stat(line, "read"), "13", "{line}");
    assert!(line.contains("-> 2024-05-01T12:00:00Z"), "{line}");
    assert_profile(&w, "u2", 2, 20, 10).await;
    assert_profile(&w, "u5", 1, 1, 1).await;
    assert_profile(&w, "u3", 5, 50, 10).await;
    for b in &bulk {
        assert_profile(&w, b, 3, 33, 11).await;
    }

    // A third run with nothing new rewrites the lookback idempotently and keeps the watermark.
    let out = w.sync();
    let line = out.lines().find(|l| l.contains(VIEW)).unwrap();
    assert!(
        line.contains("2024-05-01T12:00:00Z -> 2024-05-01T12:00:00Z"),
        "{line}"
    );
    assert_profile(&w, "u1", 2, 30, 15).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn feast_sdk_reads_the_synced_values_with_their_types() {
    let w = world(1000).await;
    w.insert_seed(&[
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
    let got = feast_read(&request, &w.dir.join("feast_request.json"));
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
    let w = world(1000).await;
    w.insert_seed(&[(Some("abc-123"), 12, 3400, 283, Some("2024-05-01 10:00:00"))])
        .await;
    w.sync();
    let got = w.profile(VIEW, &["abc-123"]);
    assert_eq!(
        got[0]["values"],
        json!({"TOTAL_TRANSACTIONS": 12, "TOTAL_REVENUE": 3400, "AVG_TRANSACTION_REVENUE": 283})
    );
    assert_eq!(got[0]["event_timestamp"], json!("2024-05-01T10:00:00Z"));
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_syncs_on_its_interval_and_exits_cleanly_on_sigterm() {
    let w = world(1000).await;
    w.write_config(&config(&w, 1000).set("scheduler.interval", "1s"));
    w.insert_seed(&[(Some("d1"), 1, 1, 1, Some("2024-05-01 10:00:00"))])
        .await;
    let mut daemon = w.spawn("daemon", &["run"], &[]);
    let synced = |entity: &'static str, tx: i64| {
        let w = &w;
        async move {
            support::wait_for(Duration::from_secs(30), || async {
                profile(w, entity)
                    .await
                    .is_some_and(|p| p["TOTAL_TRANSACTIONS"] == json!(tx))
            })
            .await
        }
    };
    assert!(
        synced("d1", 1).await,
        "first row never synced; log:\n{}",
        daemon.log_text()
    );
    // A later row lands on a later tick without a restart.
    w.insert_seed(&[(Some("d1"), 2, 2, 2, Some("2024-05-01 11:00:00"))])
        .await;
    assert!(
        synced("d1", 2).await,
        "second row never synced; log:\n{}",
        daemon.log_text()
    );

    let status = daemon.terminate(Duration::from_secs(20));
    assert!(
        status.success(),
        "exit {status:?}; log:\n{}",
        daemon.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn key_pair_auth_syncs() {
    let key = support::test_private_key_path();
    let w = world(1000).await;
    w.write_config(
        &config(&w, 1000)
            .unset("warehouse.password")
            .set("warehouse.private_key_path", key.to_str().unwrap()),
    );
    w.insert_seed(&[(Some("k1"), 3, 4, 5, Some("2024-05-01 10:00:00"))])
        .await;
    w.sync();
    assert_profile(&w, "k1", 3, 4, 5).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_missing_and_mistyped_columns() {
    let w = world(1000).await;
    let ok = w.materializer(&["check"], &[]);
    assert!(ok.status.success(), "{}", shown(&ok));

    w.sql(
        "SIGNALS",
        &[
            &format!(r#"ALTER TABLE "{SEED_TABLE}" DROP COLUMN "TOTAL_REVENUE""#),
            &format!(r#"ALTER TABLE "{SEED_TABLE}" DROP COLUMN "AVG_TRANSACTION_REVENUE""#),
            &format!(r#"ALTER TABLE "{SEED_TABLE}" ADD COLUMN "AVG_TRANSACTION_REVENUE" BOOLEAN"#),
        ],
    )
    .await;
    let bad = w.materializer(&["check"], &[]);
    let printed = stdout(&bad);
    assert!(!bad.status.success(), "{printed}");
    assert!(printed.contains("`TOTAL_REVENUE` not found"), "{printed}");
    assert!(
        printed.contains("AVG_TRANSACTION_REVENUE") && printed.contains("int32"),
        "{printed}"
    );

    // The run fails with the same message and the watermark stays unset.
    let out = w.materializer(&["sync"], &[]);
    let printed = stdout(&out);
    assert!(
        !out.status.success()
            && printed.contains("FAILED (permanent)")
            && printed.contains("TOTAL_REVENUE"),
        "{printed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_refuses_an_invalid_view_naming_the_problem_and_applies_nothing() {
    let w = world(1000).await;
    let file = w.dir.join("bad.json");
    std::fs::write(
        &file,
        r#"[{"name":"good","entity":{"name":"user_id"},"batch_source":{"table":"T","timestamp_field":"TS"},
             "fields":[{"name":"A","type":"int32"}]},
            {"name":"bad","entity":{"name":"user_id"},"batch_source":{"table":"T","timestamp_field":"TS"},
             "fields":[{"name":"SCORE","type":"decimal"}]}]"#,
    )
    .unwrap();
    let out = w.materializer(&["apply", file.to_str().unwrap()], &[]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("SCORE") && err.contains("decimal"), "{err}");
    let listed = w.status();
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
    let w = world(1000).await;
    w.insert_seed(&[
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
    assert_eq!(profile(&w, "r1").await, None);

    let out = w.materializer(&["reset", "--view", VIEW], &[]);
    assert!(out.status.success(), "{}", shown(&out));
    let line = w.sync();
    assert!(
        line.contains("read=2 ") && line.contains("none -> 2024-05-02T10:00:00Z"),
        "{line}"
    );
    assert_profile(&w, "r1", 1, 1, 1).await;
    let listed = w.status();
    assert_eq!(listed[0]["watermark"], json!("2024-05-02T10:00:00Z"));
    assert_eq!(listed[0]["last_run"]["status"], json!("ok"));
}
