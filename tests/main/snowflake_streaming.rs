//! A window is one statement whose result streams: the test server answers a
//! large result as Snowflake does (rows inline, the rest in gzip'd Arrow IPC
//! chunks fetched with the `chunkHeaders` it handed out), and the daemon reads
//! the chunks a few at a time, in pages of at most `page_rows`, whatever the
//! window's size. Statements per run are counted in the run record.

use std::time::Duration;

use serde_json::Value as Json;

use crate::fixtures::{shown, stat, stderr, stdout, SnowflakeWorld};

/// The run record of `view` in `status --json`.
fn last_run(w: &SnowflakeWorld, view: &str) -> Json {
    let status = w.status();
    status
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["view"] == view)
        .unwrap_or_else(|| panic!("no {view} in {status}"))["last_run"]
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn statements_per_run_stay_constant_whatever_the_page_size() {
    let mut w = SnowflakeWorld::shared().await;
    let t = w.add_table("statements", 120).await;
    w.insert(t, 700).await;
    // describe, now, the NULL-key count and the window: 4, for 700 rows in
    // pages of 7 (100 pages) as for one page of all of them.
    for (page_rows, runs) in [(7, "first"), (1_000_000, "second")] {
        w.write_config(&w.fast_config().set("sync.page_rows", page_rows));
        w.materializer(&["reset", "--view", "statements"], &[]);
        let out = w.sync();
        assert!(
            out.contains(" ok ") && stat(&out, "read") == "700",
            "{runs}: {out}"
        );
        assert_eq!(stat(&out, "statements"), "4", "{runs}: {out}");
        assert_eq!(last_run(&w, "statements")["statements"], 4, "{runs}");
        w.assert_converged(t).await;
    }
    // An incremental run costs the same.
    w.insert(t, 30).await;
    let out = w.sync();
    assert_eq!(stat(&out, "statements"), "4", "{out}");
    w.assert_converged(t).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_result_streams_a_bounded_number_of_chunks_at_a_time() {
    let mut w = SnowflakeWorld::own_warehouse().await;
    let t = w.add_table("chunked", 90).await;
    w.insert(t, 400).await;
    // 20 rows inline, 19 chunks of 20; every chunk GET takes 150 ms, so a
    // client fetching them all at once would have 19 in flight.
    w.sf.chunk_results(Some(20), Duration::from_millis(150), false)
        .await;
    w.write_config(&w.fast_config().set("sync.page_rows", 7));

    let out = w.sync();
    assert!(out.contains(" ok ") && stat(&out, "read") == "400", "{out}");
    w.assert_converged(t).await;

    let log = w.sf.chunk_log().await;
    assert_eq!(log["results_chunked"], 1, "{log}");
    assert_eq!(log["chunks_listed"], 19, "{log}");
    assert_eq!(log["chunks_served"], 19, "{log}");
    assert_eq!(log["refused"], 0, "{log}");
    let in_flight = log["max_in_flight"].as_u64().unwrap();
    assert!((1..=2).contains(&in_flight), "{log}");

    // Pages never hold more than page_rows rows: 20-row parts in pages of 7
    // are at least 3 pages each.
    let rec = last_run(&w, "chunked");
    assert_eq!(rec["rows_read"], 400, "{rec}");
    assert_eq!(rec["statements"], 4, "{rec}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_that_cannot_be_fetched_fails_the_run_retryable_and_nothing_commits() {
    let mut w = SnowflakeWorld::own_warehouse().await;
    let t = w.add_table("lost_chunk", 10).await;
    w.insert(t, 100).await;
    w.sf.chunk_results(Some(20), Duration::ZERO, true).await;
    let out = w.materializer(&["sync"], &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        text.contains("FAILED (retryable)") && text.contains("result chunk"),
        "{text}"
    );
    // The chunk URL's query string (pre-signed credentials on Snowflake) is not shown.
    assert!(!stderr(&out).contains("Snowflake Token"), "{}", shown(&out));
    assert_eq!(w.watermark("lost_chunk").await, None, "{text}");
    // Tried a few times, never with the session token.
    let log = w.sf.chunk_log().await;
    assert!(log["failed"].as_u64().unwrap() >= 3, "{log}");
    assert_eq!(log["refused"], 0, "{log}");

    // Storage back: the next run reads everything.
    w.sf.chunk_results(Some(20), Duration::ZERO, false).await;
    let out = w.sync();
    assert!(out.contains(" ok ") && stat(&out, "read") == "100", "{out}");
    w.assert_converged(t).await;
}
