//! Reliability, proven by causing the fault for real: processes are killed
//! (`kill -9`, or a failpoint that ends the process at an exact line), the
//! warehouse is stopped, restarted empty or hung (every SQL kind, one body
//! per behaviour: the Snowflake-protocol server is killed or frozen with
//! SIGSTOP, PostgreSQL is cut off behind a relay or locked by another
//! session), views name missing columns or an unreachable warehouse, Redis
//! is restarted empty or flushed under a running daemon, and several
//! daemons share one Redis.
//!
//! After every crash the tests check the sync contract's crash rule from the
//! outside: every row at or below the stored watermark is in Redis (with a
//! value at least as new), and a plain restart converges to the latest row of
//! every entity. Tables are generated (see `fixtures::SnowflakeWorld`), so the expected values
//! follow from the row count.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::Value as Json;

use crate::fixtures::warehouse_world::{Generated, Kind, Mode};
use crate::fixtures::{shown, stdout, Daemon, SnowflakeWorld, BASE_NANOS, SECOND};

/// Whether a log event is about `view` (its own field, or that of the run span).
fn is_view(e: &Json, view: &str) -> bool {
    [&e["view"], &e["span"]["view"]].iter().any(|v| {
        v.as_str()
            .is_some_and(|v| v.starts_with(&format!("{view}:")))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_crashed_at_each_failpoint_keeps_the_watermark_and_a_restart_converges() {
    let mut w = SnowflakeWorld::shared().await;
    let t = w.add_table("crash_points", 150).await;
    w.insert(t, 900).await;
    w.sync();
    w.assert_converged(t).await;
    let committed = w.watermark("crash_points").await;
    // New rows beyond the lookback (10 minutes = 600 rows) so the next run has pages to write.
    w.insert(t, 1500).await;

    for (failpoint, wrote_some) in [
        ("after_page_write=exit@4", true),
        ("mid_page=exit@3", true),
        ("before_watermark_commit=exit", true),
        // The lease renewal comes after a third of the lease (2s): the run is
        // over by then only on a fast machine, so this one may not fire.
        ("before_lease_renewal=exit", false),
    ] {
        let out = w.materializer(&["sync"], &[("MATERIALIZER_FAILPOINTS", failpoint)]);
        let fired = out.status.code() == Some(materializer::failpoints::EXIT_CODE);
        assert!(
            fired || !wrote_some,
            "{failpoint} did not fire: {}",
            shown(&out)
        );
        if fired {
            assert_eq!(
                w.watermark("crash_points").await,
                committed,
                "{failpoint}: the watermark moved although the run died"
            );
            // The dead run's lease is still in Redis until it expires.
            assert!(w.lease_holder("crash_points").await.is_some());
        } else {
            assert!(out.status.success(), "{}", shown(&out));
        }
        w.assert_watermark_covers_only_written_rows(t).await;
    }
    // Pages written before the crashes landed (the watermark did not cover them yet).
    let stored = w.stored(t).await;
    assert!(stored
        .values()
        .any(|v| v.is_some_and(|(val, _)| val >= 900)));

    // A plain restart waits out the dead holder's lease and converges.
    let started = Instant::now();
    let out = w.sync();
    assert!(out.contains(" ok "), "{out}");
    w.assert_converged(t).await;
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_sync_and_run_at_random_moments_never_loses_a_row() {
    let seed: u64 = rand::random();
    eprintln!("kill -9 schedule seed: {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut w = SnowflakeWorld::shared().await;
    let t = w.add_table("kill9", 200).await;
    // A committed watermark first, so every check below has one to hold against.
    w.insert(t, 800).await;
    w.sync();
    w.insert(t, 2000).await;

    let mut checked_with_watermark = 0;
    for round in 0..6 {
        // Even rounds kill a one-shot sync, odd rounds the daemon.
        let args: &[&str] = if round % 2 == 0 { &["sync"] } else { &["run"] };
        let mut p = w.spawn(&format!("round{round}"), args, &[]);
        let after = Duration::from_millis(rng.gen_range(300..3500));
        std::thread::sleep(after);
        p.kill9();
        eprintln!("round {round}: killed `{}` after {after:?}", args[0]);
        if w.assert_watermark_covers_only_written_rows(t)
            .await
            .is_some()
        {
            checked_with_watermark += 1;
        }
        // More rows arrive while nobody runs, some of them in the same second
        // range as older ones would be for a late writer.
        w.insert(t, rng.gen_range(100..400)).await;
    }

    let out = w.sync();
    assert!(out.contains(" ok "), "{out}");
    w.assert_converged(t).await;
    assert_eq!(checked_with_watermark, 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn warehouse_outage_fails_runs_with_capped_backoff_and_the_daemon_recovers_with_a_new_session(
) {
    for kind in Kind::ALL {
        outage(kind).await;
    }
}

async fn outage(kind: Kind) {
    let mut w = kind.world(Mode::Own).await;
    let t = w.add_table("outage", 50).await;
    w.insert(t, 200).await;
    // A view on a missing table fails for good while the other keeps syncing.
    std::fs::write(
        w.dir.join("views/missing.json"),
        w.view_json("missing_table", "NO_SUCH_TABLE").to_string(),
    )
    .unwrap();
    let daemon = w.spawn(
        "daemon",
        &["run"],
        &[("MATERIALIZER__SCHEDULER__INTERVAL", "3s")],
    );
    assert!(
        w.wait_converged(t, Duration::from_secs(30)).await,
        "{kind:?}: {}",
        daemon.log_tail(40)
    );
    let permanent = daemon
        .wait_events(
            "run failed; the watermark stays",
            1,
            Duration::from_secs(10),
            |e| is_view(e, "missing_table"),
        )
        .await;
    assert_eq!(permanent[0]["kind"], "permanent");
    assert!(
        permanent[0]["error"]
            .as_str()
            .unwrap()
            .contains("NO_SUCH_TABLE"),
        "{}",
        permanent[0]
    );

    // The server dies: runs fail as retryable, with a clear error, backing off.
    w.stop().await;
    let backoffs = daemon
        .wait_events(
            "run failed; retrying after backoff",
            4,
            Duration::from_secs(30),
            |e| is_view(e, "outage"),
        )
        .await;
    let failures: Vec<(u64, u64)> = backoffs
        .iter()
        .map(|e| {
            (
                e["failures"].as_u64().unwrap(),
                e["retry_in_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    // retry_initial 250ms doubling, capped by retry_max 2s, jittered to [50%, 100%].
    for &(n, ms) in &failures {
        let full = (250u64 << (n - 1).min(8)).min(2000);
        assert!(
            ms >= full / 2 && ms <= full,
            "failure {n}: retry in {ms}ms, expected {}..={full}: {failures:?}",
            full / 2
        );
    }
    let errors: Vec<Json> = daemon
        .events("run failed; the watermark stays")
        .into_iter()
        .filter(|e| is_view(e, "outage"))
        .collect();
    assert!(
        !errors.is_empty()
            && errors
                .iter()
                .all(|e| e["kind"] == "retryable"
                    && e["error"].as_str().unwrap().contains("warehouse")),
        "{kind:?}: {errors:?}"
    );
    let mut daemon = daemon;
    assert!(daemon.is_running(), "the daemon died with the warehouse");

    // It comes back empty (all sessions and data lost): the daemon logs in anew.
    w.restart_empty().await;
    let table = w.tables()[t].table.clone();
    w.create_generated(&table).await;
    w.tables_mut()[t].rows = 0;
    w.insert(t, 260).await;
    assert!(
        w.wait_converged(t, Duration::from_secs(30)).await,
        "{kind:?}: no recovery after the warehouse restart; log:\n{}",
        daemon.log_tail(40)
    );
    // A quick restart between two runs: the daemon's session is simply gone
    // (code 390104, a dead pooled connection, a cut socket), and it logs in again.
    w.stop().await;
    w.restart_empty().await;
    w.create_generated(&table).await;
    w.tables_mut()[t].rows = 0;
    w.insert(t, 320).await;
    assert!(
        w.wait_converged(t, Duration::from_secs(30)).await,
        "{kind:?}: no recovery after a quick warehouse restart; log:\n{}",
        daemon.log_tail(40)
    );
    assert!(daemon.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn hung_warehouse_times_out_sync_exits_nonzero_and_the_daemon_recovers_when_it_thaws() {
    for kind in Kind::ALL {
        hung(kind).await;
    }
}

async fn hung(kind: Kind) {
    let mut w = kind.world(Mode::Own).await;
    let t = w.add_table("hung", 40).await;
    w.insert(t, 120).await;
    let timeout = [("MATERIALIZER__WAREHOUSE__QUERY_TIMEOUT", "2s")];

    w.hang().await;
    let started = Instant::now();
    let out = w.materializer(&["sync"], &timeout);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{kind:?}: {}", shown(&out));
    assert!(
        took < Duration::from_secs(15),
        "{kind:?}: sync took {took:?}"
    );
    assert!(
        stdout.contains("FAILED (retryable)") && stdout.contains("query_timeout"),
        "{kind:?}: {}",
        shown(&out)
    );
    // The statement left behind was cancelled on the server, not abandoned
    // there (where the kind can tell: pg_stat_activity).
    if let Some(running) = w.running_statements().await {
        assert_eq!(
            running, 0,
            "{kind:?}: the timed-out statement still runs on the server"
        );
    }

    let mut daemon = w.spawn("daemon", &["run"], &timeout);
    daemon
        .wait_events(
            "run failed; retrying after backoff",
            2,
            Duration::from_secs(30),
            |e| is_view(e, "hung"),
        )
        .await;
    assert!(daemon.is_running());
    w.thaw().await;
    assert!(
        w.wait_converged(t, Duration::from_secs(30)).await,
        "{kind:?}: {}",
        daemon.log_tail(40)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_column_fails_check_and_runs_naming_it_while_other_views_sync() {
    for kind in Kind::ALL {
        let mut w = kind.world(Mode::Shared).await;
        let t = w.add_table("present", 20).await;
        w.insert(t, 50).await;
        let table = w.tables()[t].table.clone();
        let mut v = w.view_json("missing_column", &table);
        v["fields"] = serde_json::json!([{"name": "VAL", "type": "int64"}, {"name": "NOPE", "type": "int64"}]);
        std::fs::write(w.views().join("missing_column.json"), v.to_string()).unwrap();

        let out = w.materializer(&["check"], &[]);
        let printed = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{kind:?}: {}", shown(&out));
        assert!(
            printed.contains("missing_column") && printed.contains("NOPE"),
            "{kind:?}: check does not name the column: {printed}"
        );
        let out = w.materializer(&["sync"], &[]);
        let printed = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{kind:?}: {}", shown(&out));
        assert!(
            printed.contains("missing_column:1  FAILED (permanent)")
                && printed.contains("`NOPE` not found"),
            "{kind:?}: {printed}"
        );
        assert!(printed.contains("present:1  ok"), "{kind:?}: {printed}");
        assert!(
            w.converged(t).await,
            "{kind:?}: the other view did not sync"
        );
        assert_eq!(w.watermark("missing_column").await, None, "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_warehouse_fails_check_and_sync_as_retryable_naming_it() {
    for kind in Kind::ALL {
        let mut w = kind.world(Mode::Shared).await;
        let t = w.add_table("unreachable", 10).await;
        w.insert(t, 10).await;
        let closed = crate::support::free_port();
        w.write_config(&w.unreachable_config(closed));

        let started = Instant::now();
        let out = w.materializer(&["sync"], &[]);
        let printed = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{kind:?}: {}", shown(&out));
        assert!(
            printed.contains("unreachable:1  FAILED (retryable)"),
            "{kind:?}: {}",
            shown(&out)
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{kind:?}: {:?}",
            started.elapsed()
        );
        let out = w.materializer(&["check"], &[]);
        assert_ne!(
            out.status.code(),
            Some(0),
            "{kind:?}: check passed: {}",
            shown(&out)
        );
        assert!(
            stdout(&out).contains(&closed.to_string())
                || stdout(&out).to_lowercase().contains("warehouse"),
            "{kind:?}: check does not say what is unreachable: {}",
            shown(&out)
        );
        assert_eq!(w.watermark("unreachable").await, None, "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_restarted_stopped_or_flushed_under_a_running_daemon_is_restored_and_resynced() {
    let mut w = SnowflakeWorld::shared().await;
    let f = w.add_table("from_file", 60).await;
    w.insert(f, 300).await;
    // A view applied by hand (not in registry.files) lives only in Redis and the daemon's memory.
    let a = w.add_table("applied", 40).await;
    w.insert(a, 200).await;
    let applied_file = w.dir.join("applied.json");
    std::fs::rename(w.dir.join("views/applied.json"), &applied_file).unwrap();
    let daemon = w.spawn("daemon", &["run"], &[]);
    let out = w.materializer(&["apply", applied_file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", shown(&out));
    for t in [f, a] {
        assert!(
            w.wait_converged(t, Duration::from_secs(30)).await,
            "{}",
            daemon.log_tail(40)
        );
    }

    // 1. Restarted empty (no persistence), as after a crash or a failover to an empty replica.
    w.redis.restart();
    // 2. Down for a while: the daemon keeps retrying instead of exiting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.redis.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.redis.restart();
    for t in [f, a] {
        assert!(
            w.wait_converged(t, Duration::from_secs(40)).await,
            "view {} not resynced after the Redis restart; log:\n{}",
            w.tables[t].view,
            daemon.log_tail(40)
        );
    }
    // 3. Flushed under the daemon, and a CLI command connects first: it re-creates
    // the state layout (and its own files' views), which must not hide the loss.
    let mut c = w.redis_conn().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    let listed = |w: &SnowflakeWorld| {
        w.status()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["view"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // Usually only the file's view now; both if the daemon's refresh came first.
    let first = listed(&w);
    assert!(first.contains(&"from_file".to_string()), "{first:?}");
    w.insert(f, 50).await;
    for t in [f, a] {
        assert!(
            w.wait_converged(t, Duration::from_secs(40)).await,
            "view {} not resynced after FLUSHALL; log:\n{}",
            w.tables[t].view,
            daemon.log_tail(40)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while listed(&w) != ["applied", "from_file"] {
        assert!(
            Instant::now() < deadline,
            "the applied view was not restored to the registry; log:\n{}",
            daemon.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let restored = daemon.events(
        "Redis holds none of the daemon's state (flushed or replaced): restoring the registry; every view resyncs",
    );
    assert!(restored.len() >= 2, "{}", daemon.log_tail(40));

    // 4. A view deleted on purpose (what the API's delete does to the registry)
    // is not brought back by the next restore.
    let mut c = w.redis_conn().await;
    let _: () = redis::cmd("HDEL")
        .arg(SnowflakeWorld::registry_key())
        .arg("applied:1")
        .query_async(&mut c)
        .await
        .unwrap();
    // The registry is re-read every 5 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while daemon
        .events("Redis holds none of the daemon's state (flushed or replaced): restoring the registry; every view resyncs")
        .len()
        <= restored.len()
    {
        assert!(Instant::now() < deadline, "{}", daemon.log_tail(40));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(listed(&w), ["from_file"]);
    let mut daemon = daemon;
    assert!(daemon.is_running());
}

/// Each daemon's runs of each view, as (start, end) log times in microseconds.
fn run_intervals(daemon: &Daemon) -> BTreeMap<String, Vec<(i64, i64)>> {
    let at = |e: &Json| {
        chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap())
            .unwrap()
            .timestamp_micros()
    };
    let mut open: BTreeMap<String, i64> = BTreeMap::new();
    let mut out: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for line in daemon.log_text().lines() {
        let Ok(e) = serde_json::from_str::<Json>(line) else {
            continue;
        };
        let view = e["view"].as_str().unwrap_or_default().to_string();
        match e["message"].as_str() {
            Some("lease taken; run started") => {
                assert!(
                    open.insert(view, at(&e)).is_none(),
                    "two runs of one view in one daemon"
                );
            }
            Some("run ended; releasing lease") => {
                let start = open.remove(&view).expect("an end without a start");
                out.entry(view).or_default().push((start, at(&e)));
            }
            _ => {}
        }
    }
    // A run still going when the log was read ends "never".
    for (view, start) in open {
        out.entry(view).or_default().push((start, i64::MAX));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_never_sync_one_view_at_once_and_share_the_views() {
    let mut w = SnowflakeWorld::shared().await;
    let mut tables = Vec::new();
    for v in ["rep_a", "rep_b", "rep_c", "rep_d"] {
        let t = w.add_table(v, 30).await;
        w.insert(t, 400).await;
        tables.push(t);
    }
    // Slow pages make every run last long enough to collide if the lease let them.
    let slow = [("MATERIALIZER_FAILPOINTS", "after_page_write=sleep(120)")];
    let mut one = w.spawn("replica1", &["run"], &slow);
    let mut two = w.spawn("replica2", &["run"], &slow);
    for &t in &tables {
        assert!(w.wait_converged(t, Duration::from_secs(40)).await);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    one.signal("TERM");
    two.signal("TERM");
    assert!(one
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    assert!(two
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));

    let (r1, r2) = (run_intervals(&one), run_intervals(&two));
    let runs = |r: &BTreeMap<String, Vec<(i64, i64)>>| r.values().map(Vec::len).sum::<usize>();
    assert!(
        runs(&r1) > 0 && runs(&r2) > 0,
        "one replica did all the work: {r1:?} {r2:?}"
    );
    for view in r1.keys().chain(r2.keys()) {
        let mut all: Vec<(i64, i64, u8)> = Vec::new();
        all.extend(r1.get(view).into_iter().flatten().map(|&(a, b)| (a, b, 1)));
        all.extend(r2.get(view).into_iter().flatten().map(|&(a, b)| (a, b, 2)));
        all.sort();
        for w in all.windows(2) {
            assert!(
                w[1].0 >= w[0].1,
                "view {view}: replica {} started at {} while replica {} ran {}..{}",
                w[1].2,
                w[1].0,
                w[0].2,
                w[0].0,
                w[0].1
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_lease_holder_is_taken_over_once_its_lease_expires() {
    let mut w = SnowflakeWorld::shared().await;
    let t = w.add_table("takeover", 50).await;
    w.insert(t, 1200).await;
    let mut holder = w.spawn(
        "holder",
        &["run"],
        &[("MATERIALIZER_FAILPOINTS", "after_page_write=sleep(400)")],
    );
    let mine = format!(":{}/", holder.pid());
    holder
        .wait_events("failpoint: sleeping", 2, Duration::from_secs(20), |_| true)
        .await;
    assert!(w
        .lease_holder("takeover")
        .await
        .is_some_and(|h| h.contains(&mine)));
    holder.kill9();
    let killed = Instant::now();
    let mut successor = w.spawn("successor", &["run"], &[]);
    // The lease (2s, renewed every ~0.7s) outlives its dead holder for a while.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(w
        .lease_holder("takeover")
        .await
        .is_some_and(|h| h.contains(&mine)));
    let theirs = format!(":{}/", successor.pid());
    let mut taken = None;
    while killed.elapsed() < Duration::from_secs(15) {
        if w.lease_holder("takeover")
            .await
            .is_some_and(|h| h.contains(&theirs))
            || w.converged(t).await
        {
            taken = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let taken = taken.expect("the successor never took the lease");
    assert!(taken >= Duration::from_secs(1), "taken after {taken:?}");
    assert!(
        w.wait_converged(t, Duration::from_secs(30)).await,
        "{}",
        successor.log_tail(40)
    );
    assert!(successor.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_lost_its_lease_does_not_commit_its_watermark() {
    let mut w = SnowflakeWorld::shared().await;
    let t = w.add_table("lost_lease", 50).await;
    w.insert(t, 1200).await;
    // The first renewal stalls past the lease's expiry (a GC pause, a frozen VM).
    let mut stalled = w.spawn(
        "stalled",
        &["run"],
        &[(
            "MATERIALIZER_FAILPOINTS",
            "before_lease_renewal=sleep(4000);after_page_write=sleep(300)",
        )],
    );
    stalled
        .wait_events(
            "lease taken; run started",
            1,
            Duration::from_secs(20),
            |_| true,
        )
        .await;
    let other = w.spawn("other", &["run"], &[]);
    let lost = stalled
        .wait_events(
            "run failed; the watermark stays",
            1,
            Duration::from_secs(30),
            |e| {
                e["error"]
                    .as_str()
                    .is_some_and(|m| m.contains("lease lost"))
            },
        )
        .await;
    assert_eq!(lost[0]["kind"], "retryable");
    assert!(
        stalled.events("run complete").is_empty(),
        "the stalled run completed: {}",
        stalled.log_tail(40)
    );
    assert!(
        w.wait_converged(t, Duration::from_secs(30)).await,
        "{}",
        other.log_tail(40)
    );
    w.assert_watermark_covers_only_written_rows(t).await;
    stalled.kill9();
}

/// Spawns `materializer run` with failpoints in `env`, waits until it has
/// slept at `sleeps` of them, sends SIGTERM, and asserts it exits 0 within `within`.
async fn terminate_while_sleeping(
    w: &SnowflakeWorld,
    name: &str,
    env: &[(&str, &str)],
    sleeps: usize,
    within: Duration,
) -> Daemon {
    let mut d = w.spawn(name, &["run"], env);
    d.wait_events(
        "failpoint: sleeping",
        sleeps,
        Duration::from_secs(20),
        |_| true,
    )
    .await;
    d.signal("TERM");
    let asked = Instant::now();
    let status = d
        .wait_exit(Duration::from_secs(8))
        .expect("still running 8s after SIGTERM");
    assert!(status.success(), "exit {status:?}: {}", d.log_tail(40));
    assert!(asked.elapsed() < within, "took {:?}", asked.elapsed());
    d
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_running_page_finish_commits_nothing_and_exits_zero() {
    let mut w = SnowflakeWorld::shared().await;
    let t = w.add_table("shutdown", 100).await;
    w.insert(t, 700).await;
    w.sync();
    let committed = w.watermark("shutdown").await;
    w.insert(t, 1500).await;

    // Within the grace: the page being written finishes, the run stops, nothing is committed.
    terminate_while_sleeping(
        &w,
        "graceful",
        &[("MATERIALIZER_FAILPOINTS", "after_page_write=sleep(700)")],
        2,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(w.watermark("shutdown").await, committed);
    w.assert_watermark_covers_only_written_rows(t).await;
    let mut c = w.redis_conn().await;
    let run: String = redis::cmd("GET")
        .arg(SnowflakeWorld::state_key("shutdown", "run"))
        .query_async(&mut c)
        .await
        .unwrap();
    let run: Json = serde_json::from_str(&run).unwrap();
    assert_eq!(run["status"], "interrupted", "{run}");

    // A page slower than the grace: abandoned at the deadline, still nothing committed.
    let d = terminate_while_sleeping(
        &w,
        "impatient",
        &[
            ("MATERIALIZER_FAILPOINTS", "after_page_write=sleep(30000)"),
            ("MATERIALIZER__SCHEDULER__SHUTDOWN_GRACE", "1s"),
        ],
        1,
        Duration::from_secs(4),
    )
    .await;
    assert!(d.log_text().contains("shutdown grace elapsed"));
    assert_eq!(w.watermark("shutdown").await, committed);
    w.assert_watermark_covers_only_written_rows(t).await;

    // And a plain run afterwards picks everything up.
    w.sync();
    w.assert_converged(t).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_crash_check_catches_a_watermark_that_runs_ahead_of_the_data() {
    let mut w = SnowflakeWorld::shared().await;
    let t = w.add_table("ahead", 30).await;
    w.insert(t, 100).await;
    w.sync();
    w.assert_watermark_covers_only_written_rows(t).await;
    // Rows nobody wrote, and a watermark claiming them: what a premature commit leaves.
    w.insert(t, 100).await;
    let mut c = w.redis_conn().await;
    let _: () = redis::cmd("SET")
        .arg(SnowflakeWorld::state_key("ahead", "wm"))
        .arg((BASE_NANOS + 199 * SECOND).to_string())
        .query_async(&mut c)
        .await
        .unwrap();
    let w = std::sync::Arc::new(w);
    let check = {
        let w = w.clone();
        tokio::spawn(async move { w.assert_watermark_covers_only_written_rows(t).await })
    };
    assert!(check.await.is_err_and(|e| e.is_panic()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_panics_releases_its_lease_and_the_view_runs_again() {
    let mut w = SnowflakeWorld::shared().await;
    let t = w.add_table("panics", 20).await;
    w.insert(t, 200).await;
    // A bug in the run task (here: a panic just before the commit) must not
    // leave the lease renewer behind, holding the view for ever.
    let daemon = w.spawn(
        "daemon",
        &["run"],
        &[("MATERIALIZER_FAILPOINTS", "before_watermark_commit=panic@1")],
    );
    daemon
        .wait_events(
            "run task died; retrying after backoff",
            1,
            Duration::from_secs(20),
            |_| true,
        )
        .await;
    assert!(
        w.wait_converged(t, Duration::from_secs(20)).await,
        "the view never ran again after the panic: {}",
        daemon.log_tail(40)
    );
    w.assert_watermark_covers_only_written_rows(t).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_goes_back_in_time_is_restored_and_its_views_keep_syncing() {
    let mut w = SnowflakeWorld::shared().await;
    let first = w.add_table("before_snapshot", 10).await;
    w.insert(first, 20).await;
    let mut c = w.redis_conn().await;
    // Apply the first view, then take the "replica's" copy of the registry.
    assert!(w.materializer(&["status"], &[]).status.success());
    let keys = materializer::profiles::state::Keys::new("materializer:", "signals");
    let dump = |key: String| {
        let mut c = c.clone();
        async move {
            let v: Vec<u8> = redis::cmd("DUMP")
                .arg(key)
                .query_async(&mut c)
                .await
                .unwrap();
            v
        }
    };
    let old_views = dump(keys.views()).await;
    let old_rev = dump(keys.registry_rev()).await;

    let mut daemon = w.spawn("daemon", &["run"], &[]);
    let late = w.add_table("after_snapshot", 10).await;
    w.insert(late, 20).await;
    // Any command applies `registry.files`; the running daemon learns the
    // view from the registry.
    assert!(w.materializer(&["status"], &[]).status.success());
    assert!(w.wait_converged(late, Duration::from_secs(20)).await);
    // Failover to a replica that lags behind the last apply: same state
    // epoch, older registry.
    for (key, dumped) in [(keys.views(), &old_views), (keys.registry_rev(), &old_rev)] {
        let _: () = redis::cmd("RESTORE")
            .arg(key)
            .arg(0)
            .arg(dumped)
            .arg("REPLACE")
            .query_async(&mut c)
            .await
            .unwrap();
    }
    w.insert(late, 20).await;
    daemon.wait_events("the registry went back in time (failover to a lagging replica, or an older snapshot): restoring the views this daemon knows",
        1,
        Duration::from_secs(20),
        |_| true,
    )
    .await;
    assert!(
        w.wait_converged(late, Duration::from_secs(20)).await,
        "{}",
        daemon.log_tail(40)
    );
    assert!(w.wait_converged(first, Duration::from_secs(5)).await);
    assert!(daemon.is_running());
}
