//! Statements that outlive Snowflake's ~45 s answer window: Snowflake answers
//! them with a handle (`"code": "333334"`, `data.getResultUrl`) instead of
//! rows, and the client polls the result URL (`333333` while running). The
//! test server plays that for every statement (`hand_off_statements`), after
//! the tables are seeded; it records every `abort-request`.

use std::time::{Duration, Instant};

use crate::fixtures::{shown, stderr, stdout, SnowflakeWorld};

#[tokio::test(flavor = "multi_thread")]
async fn statements_handed_off_to_a_result_url_are_polled_and_a_full_sync_writes_every_row() {
    let mut w = SnowflakeWorld::own_warehouse().await;
    let t = w.add_table("handoff", 40).await;
    // 250 rows in pages of 100, read by one statement (handed off like every
    // other) whose result comes in chunks.
    w.insert(t, 250).await;
    w.sf.hand_off_statements(Some(Duration::from_millis(300)))
        .await;

    let out = w.sync();
    assert!(out.contains(" ok ") && out.contains("read=250"), "{out}");
    w.assert_converged(t).await;

    let log = w.sf.handoff_log().await;
    let handed_off = log["handed_off"].as_u64().unwrap();
    // describe, now, null-key count and the window; each polled more than once.
    assert!(handed_off >= 4, "{log}");
    assert!(log["polls"].as_u64().unwrap() > handed_off, "{log}");
    assert_eq!(log["aborts"], serde_json::json!([]), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_outliving_query_timeout_fails_retryable_and_is_cancelled_at_the_warehouse() {
    let mut w = SnowflakeWorld::own_warehouse().await;
    let t = w.add_table("abandoned", 10).await;
    w.insert(t, 20).await;
    w.sf.hand_off_statements(Some(Duration::from_secs(10)))
        .await;

    let started = Instant::now();
    let out = w.materializer(
        &["sync"],
        &[("MATERIALIZER__WAREHOUSE__QUERY_TIMEOUT", "2s")],
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(took < Duration::from_secs(9), "sync took {took:?}");
    assert!(
        stdout(&out).contains("FAILED (retryable)")
            && stdout(&out).contains("did not answer within warehouse.query_timeout (2s)"),
        "{}",
        shown(&out)
    );

    // The one statement in flight was cancelled, naming the original request,
    // before the command exited; the daemon logged its query id.
    let log = w.sf.handoff_log().await;
    let aborts = log["aborts"].as_array().unwrap();
    assert_eq!(aborts.len(), 1, "{log}");
    let abort = &aborts[0];
    assert_eq!(abort["cancelled"], true, "{log}");
    assert!(
        abort["sqlText"].as_str().is_some_and(|s| !s.is_empty()),
        "{log}"
    );
    let query_id = abort["queryId"].as_str().unwrap();
    let err = stderr(&out);
    assert!(
        err.lines().any(
            |l| l.contains("cancelling an abandoned Snowflake statement") && l.contains(query_id)
        ),
        "{err}"
    );
    // Nothing of the session token in the logs.
    assert!(!err.contains("Snowflake Token"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_long_statement_cancels_it_at_the_warehouse_and_commits_nothing() {
    let mut w = SnowflakeWorld::own_warehouse().await;
    let t = w.add_table("interrupted", 10).await;
    w.insert(t, 20).await;
    // Every statement runs 30 s: the daemon's first run is mid-statement.
    w.sf.hand_off_statements(Some(Duration::from_secs(30)))
        .await;
    let mut daemon = w.spawn(
        "daemon",
        &["run"],
        &[("MATERIALIZER__SCHEDULER__SHUTDOWN_GRACE", "1s")],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.sf.handoff_log().await["handed_off"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "{}", daemon.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    daemon.signal("TERM");
    let status = daemon
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("still running after SIGTERM: {}", daemon.log_text()));
    assert!(status.success(), "{status:?}: {}", daemon.log_text());
    // The statement in flight was cancelled before the process exited.
    let log = w.sf.handoff_log().await;
    let aborts = log["aborts"].as_array().unwrap();
    assert!(
        !aborts.is_empty() && aborts.iter().all(|a| a["cancelled"] == true),
        "{log}\n{}",
        daemon.log_text()
    );
    assert_eq!(w.watermark("interrupted").await, None);
}
