//! Bad input, each case run for real through the built binary: broken config
//! files and environment values, missing or unreadable credentials,
//! unreachable hosts, invalid views, identifiers that look like SQL, and
//! Redis answering with errors (wrong password, read-only replica, OOM).
//! Every case must end in one clear line naming the file, key or column;
//! `run` must wait for what is unreachable instead of exiting. Durations in
//! views that overflow, wrap or are out of range are refused by name wherever
//! they come from (HTTP, view files, a registry written by an older version)
//! and never crash anything.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::fixtures::{
    api_comes_up, command, healthz, shown, stderr, stdout, view_json, ConfigToml, SnowflakeWorld,
};
use crate::support::{scratch_dir, RedisServer};

/// A Snowflake warehouse without credentials, database or server: enough for
/// the config to load, never enough to reach anything.
fn warehouse() -> ConfigToml {
    ConfigToml::default()
        .set("warehouse.kind", "snowflake")
        .set("warehouse.account", "testacct")
        .set("warehouse.user", "SIGNALS")
}

/// Writes `text` as a config in a fresh directory and runs `args` with it.
fn with_config(text: &str, args: &[&str], env: &[(&str, &str)]) -> (Output, PathBuf) {
    let dir = scratch_dir("badcfg");
    let path = dir.join("materializer.toml");
    std::fs::write(&path, text).unwrap();
    let out = command(&path, &dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out, path)
}

/// The config error: exit code 2 and exactly one line on stderr.
fn config_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "{}", shown(out));
    let err = stderr(out);
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    err
}

#[test]
fn malformed_toml_exits_2_naming_the_file_and_the_line() {
    // Written out: the error must name line 7, `[sync` without its bracket.
    let text = "
[warehouse]
kind = \"snowflake\"
account = \"testacct\"
user = \"SIGNALS\"
password = \"x\"
[sync
page_rows = 3
";
    let (out, path) = with_config(text, &["status"], &[]);
    let err = config_error(&out);
    assert!(
        err.contains(path.to_str().unwrap()) && err.contains("line 7"),
        "{err}"
    );
}

#[test]
fn invalid_durations_exit_2_naming_the_key_and_value() {
    let with_password = warehouse().set("warehouse.password", "x");
    for (config, env, key, value) in [
        (
            with_password.clone().set("scheduler.interval", "5 parsecs"),
            &[][..],
            "interval",
            "5 parsecs",
        ),
        (
            with_password,
            &[("MATERIALIZER__SYNC__LEASE_TTL", "soon")][..],
            "lease_ttl",
            "soon",
        ),
    ] {
        let (out, _) = with_config(&config.render(), &["status"], env);
        let err = config_error(&out);
        assert!(err.contains(key) && err.contains(value), "{err}");
    }
}

#[test]
fn missing_credentials_exit_2_naming_the_settings() {
    let (out, _) = with_config(&warehouse().render(), &["sync"], &[]);
    let err = config_error(&out);
    assert!(
        err.contains("no credentials") && err.contains("MATERIALIZER__WAREHOUSE__PASSWORD"),
        "{err}"
    );
}

#[test]
fn unreadable_or_non_pem_key_files_exit_2_naming_the_key_and_path() {
    let missing = "/nonexistent/materializer/key.p8";
    let not_pem = scratch_dir("notpem").join("key.txt");
    std::fs::write(&not_pem, "hello, not a key\n").unwrap();
    let not_pem = not_pem.to_str().unwrap();
    for (key, path, command, want) in [
        (
            "warehouse.private_key_path",
            missing,
            "sync",
            &["warehouse.private_key_path", missing][..],
        ),
        (
            "warehouse.private_key_path",
            not_pem,
            "run",
            &["is not a PEM private key"],
        ),
        (
            "warehouse.password_file",
            missing,
            "run",
            &["warehouse.password_file", missing],
        ),
    ] {
        let (out, _) = with_config(&warehouse().set(key, path).render(), &[command], &[]);
        let err = config_error(&out);
        assert!(
            want.iter().all(|w| err.contains(w)),
            "{key} = {path}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_keys_are_warned_with_their_name_and_reported_by_check() {
    let w = SnowflakeWorld::shared().await;
    w.write_config(&w.fast_config().raw("sync.lookbak", "\"1m\""));
    let out = w.materializer(&["status"], &[("MATERIALIZER__SCHEDULER__INTERVALL", "1m")]);
    assert!(out.status.success(), "{}", shown(&out));
    let err = stderr(&out);
    for key in ["sync.lookbak", "scheduler.intervall"] {
        assert!(
            err.lines()
                .any(|l| l.contains("unknown config key ignored") && l.contains(key)),
            "{key}: {err}"
        );
    }
    let out = w.materializer(&["check"], &[]);
    let stdout = stdout(&out);
    assert!(!out.status.success(), "{}", shown(&out));
    assert!(
        stdout.contains("PROBLEM  config: unknown key `sync.lookbak`"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_redis_fails_sync_quickly_and_run_waits_for_it() {
    let mut w = SnowflakeWorld::shared().await;
    let t = w.add_table("late_redis", 20).await;
    w.insert(t, 50).await;
    w.redis.stop();

    let started = Instant::now();
    let out = w.materializer(&["sync"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(started.elapsed() < Duration::from_secs(20));
    let err = stderr(&out);
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("cannot connect to Redis at redis://127.0.0.1:")
            && last.contains(&w.redis.port.to_string()),
        "{err}"
    );

    let mut daemon = w.spawn("daemon", &["run"], &[]);
    assert!(
        daemon
            .wait_event("cannot start; retrying", Duration::from_secs(15))
            .await,
        "{}",
        daemon.log_text()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(daemon.is_running(), "{}", daemon.log_text());
    w.redis.restart();
    assert!(
        w.wait_converged(t, Duration::from_secs(40)).await,
        "{}",
        daemon.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_warehouse_keeps_the_daemon_up_and_fails_sync_with_a_clear_error() {
    let mut w = SnowflakeWorld::shared().await;
    let t = w.add_table("no_wh", 20).await;
    w.insert(t, 50).await;
    let port = crate::support::free_port();
    w.write_config(
        &w.fast_config()
            .set("warehouse.base_url", format!("http://127.0.0.1:{port}")),
    );

    let out = w.materializer(&["sync"], &[]);
    let stdout = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        stdout.contains("no_wh:1  FAILED (retryable)") && stdout.contains("warehouse:"),
        "{stdout}"
    );

    let mut daemon = w.spawn("daemon", &["run"], &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(daemon.is_running(), "{}", daemon.log_text());
    assert!(daemon
        .events("run failed; retrying after backoff")
        .iter()
        .any(|e| e["failures"].as_u64() >= Some(2)));
    daemon.signal("TERM");
    assert!(daemon
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_view_files_are_skipped_naming_file_and_field_while_the_others_sync() {
    let mut w = SnowflakeWorld::shared().await;
    let t = w.add_table("good_view", 20).await;
    w.insert(t, 50).await;
    let bad = w.dir.join("views/bad.json");
    let mut v = view_json("bad_view", &w.db, "WHATEVER");
    v["fields"] = json!([{"name": "SCORE", "type": "decimal"}]);
    std::fs::write(&bad, v.to_string()).unwrap();
    std::fs::write(w.dir.join("views/broken.json"), "{\"name\": ").unwrap();
    // A view whose field column does not exist fails its runs, naming the column.
    let mut v = view_json("missing_column", &w.db, &w.tables[t].table);
    v["fields"] = json!([{"name": "NOPE", "type": "int64"}]);
    std::fs::write(w.dir.join("views/missing_column.json"), v.to_string()).unwrap();

    let out = w.materializer(&["sync"], &[]);
    let (printed, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(printed.contains("good_view:1  ok"), "{printed}");
    assert!(
        printed.contains("missing_column:1  FAILED (permanent)")
            && printed.contains("`NOPE` not found"),
        "{printed}"
    );
    assert!(
        err.contains("bad.json") && err.contains("SCORE") && err.contains("unknown type `decimal`"),
        "{err}"
    );
    assert!(err.contains("broken.json"), "{err}");
    w.assert_converged(t).await;
    assert_eq!(w.watermark("missing_column").await, None);

    let out = w.materializer(&["check"], &[]);
    let stdout = stdout(&out);
    assert!(
        stdout.contains("PROBLEM  view file:") && stdout.contains("bad.json"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn identifiers_with_quotes_spaces_and_sql_are_quoted_never_executed() {
    let w = SnowflakeWorld::shared().await;
    let table = r#"weird"; DROP TABLE CANARY; --"#;
    let (entity, value, ts) = ("user id", r#"va"l; DELETE FROM CANARY"#, "ts' OR '1'='1");
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    w.sql(
        "PUBLIC",
        &[
                "CREATE TABLE CANARY (X INT)",
                "INSERT INTO CANARY VALUES (1)",
                &format!(
                    "CREATE TABLE {} ({} VARCHAR, {} NUMBER(38,0), {} TIMESTAMP_NTZ)",
                    q(table),
                    q(entity),
                    q(value),
                    q(ts)
                ),
                // Entity values with quotes and backslashes, one per page
                // (page_rows = 1); no value is ever pasted into SQL.
                &format!(
                    r#"INSERT INTO {} VALUES ('o''brien\\', 1, '2024-01-01 00:00:01'),
                       ('x'' OR ''1''=''1', 2, '2024-01-01 00:00:02'), ('plain', 3, '2024-01-01 00:00:03')"#,
                    q(table)
                ),
            ],
        )
        .await;
    let view = json!({
        "name": "weird", "version": 1,
        "entity": {"name": entity},
        "batch_source": {"database": w.db, "schema": "PUBLIC", "table": table, "timestamp_field": ts},
        "fields": [{"name": value, "type": "int64"}],
    });
    std::fs::write(w.dir.join("views/weird.json"), view.to_string()).unwrap();
    let out = w.materializer(&["sync"], &[("MATERIALIZER__SYNC__PAGE_ROWS", "1")]);
    let stdout = stdout(&out);
    assert!(out.status.success(), "{}", shown(&out));
    assert!(stdout.contains("read=3 written=3"), "{stdout}");

    let canary = w.sql("PUBLIC", &["SELECT COUNT(*) FROM CANARY"]).await;
    assert_eq!(
        crate::support::result_rows(&canary[0]),
        vec![vec![Some("1".to_string())]]
    );
    let out = w.materializer(
        &[
            "profile",
            "--view",
            "weird",
            r"o'brien\",
            "x' OR '1'='1",
            "plain",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", shown(&out));
    let got: Json = serde_json::from_slice(&out.stdout).unwrap();
    let values: Vec<&Json> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["values"][value])
        .collect();
    assert_eq!(values, [&json!(1), &json!(2), &json!(3)], "{got}");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_auth_errors_are_one_clear_line_without_the_password() {
    let w = SnowflakeWorld::shared().await;
    let mut c = w.redis_conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("right-pass-4471")
        .query_async(&mut c)
        .await
        .unwrap();
    for (url, expect) in [
        (
            format!("redis://:wrong-pass-9120@127.0.0.1:{}/", w.redis.port),
            "authentication failed",
        ),
        (
            format!("redis://127.0.0.1:{}/", w.redis.port),
            "authentication required",
        ),
    ] {
        let dir = scratch_dir("auth");
        let cfg = dir.join("m.toml");
        w.fast_config().set("profiles.redis_url", url).write(&cfg);
        let out = command(&cfg, &dir).arg("sync").output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
        let last = err.trim().lines().last().unwrap().to_lowercase();
        assert!(
            last.contains("redis at redis://") && last.contains(expect),
            "{err}"
        );
        assert!(
            !err.contains("wrong-pass-9120") && !err.contains("right-pass"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_replica_is_refused_clearly_and_run_starts_once_it_is_promoted() {
    let mut w = SnowflakeWorld::shared().await;
    let t = w.add_table("replica", 20).await;
    w.insert(t, 60).await;
    let primary = RedisServer::start();
    let mut c = w.redis_conn().await;
    let replicaof = |host: &str, port: &str| {
        let mut cmd = redis::cmd("REPLICAOF");
        cmd.arg(host).arg(port);
        cmd
    };
    let _: () = replicaof("127.0.0.1", &primary.port.to_string())
        .query_async(&mut c)
        .await
        .unwrap();

    let out = w.materializer(&["sync"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    let last = err.trim().lines().last().unwrap();
    assert!(
        last.contains("Redis at redis://") && last.contains("read only replica"),
        "{err}"
    );

    let daemon = w.spawn("daemon", &["run"], &[]);
    assert!(
        daemon
            .wait_event("cannot start; retrying", Duration::from_secs(15))
            .await,
        "{}",
        daemon.log_text()
    );
    let waiting = daemon.events("cannot start; retrying");
    assert!(
        waiting[0]["error"]
            .as_str()
            .unwrap()
            .contains("read only replica"),
        "{}",
        daemon.log_text()
    );
    // Failover: the replica is promoted; the waiting daemon starts and syncs.
    let _: () = replicaof("NO", "ONE").query_async(&mut c).await.unwrap();
    assert!(
        w.wait_converged(t, Duration::from_secs(40)).await,
        "{}",
        daemon.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_out_of_memory_fails_the_run_clearly_and_keeps_the_watermark() {
    let mut w = SnowflakeWorld::shared().await;
    let t = w.add_table("oom", 20).await;
    w.insert(t, 60).await;
    let out = w.materializer(&["sync"], &[]);
    assert!(out.status.success(), "{}", shown(&out));
    let committed = w.watermark("oom").await;
    w.insert(t, 60).await;

    let mut c = w.redis_conn().await;
    let set = |v: &str| {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET").arg("maxmemory").arg(v);
        cmd
    };
    let _: () = set("1").query_async(&mut c).await.unwrap();
    let out = w.materializer(&["sync"], &[]);
    let stdout = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert!(
        stdout.contains("oom:1  FAILED (retryable)") && stdout.contains("OOM"),
        "{}",
        shown(&out)
    );
    assert_eq!(w.watermark("oom").await, committed);
    let _: () = set("0").query_async(&mut c).await.unwrap();
    let out = w.materializer(&["sync"], &[]);
    assert!(out.status.success(), "{}", shown(&out));
    w.assert_converged(t).await;
}

/// Durations that panicked, wrapped, failed every run or ran a view back to
/// back, and spellings the old parser let through, with the key they go in.
const BAD_DURATIONS: [(&str, &str); 13] = [
    ("ttl", "PT18446744073709552S"),
    ("ttl", "P10000000000D"),
    ("ttl", "P99999999999999999999D"),
    ("ttl", "PT0.5S"),
    ("refresh_rate", "PT10000000000000000000S"),
    ("refresh_rate", "P99999999999999999999D"),
    ("refresh_rate", "PT0.000000001S"),
    ("ttl", "P1DT"),
    ("refresh_rate", "P1D1D"),
    ("ttl", "PT1H1H"),
    ("refresh_rate", "PT1S1H"),
    ("ttl", "PT1.5H"),
    ("ttl", "P1.5DT1S"),
];

#[tokio::test(flavor = "multi_thread")]
async fn bad_durations_over_http_are_422_naming_the_field_and_the_daemon_keeps_serving() {
    let w = SnowflakeWorld::shared().await;
    let port = crate::support::free_port();
    w.write_config(
        &w.fast_config()
            .set("api.listen", format!("127.0.0.1:{port}")),
    );
    let mut daemon = w.spawn("daemon", &["run"], &[]);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    assert!(api_comes_up(&base).await, "{}", daemon.log_text());
    let put = "/api/v1/registry/views/bad_duration/versions/1";
    for (key, value) in BAD_DURATIONS {
        let mut view = view_json("bad_duration", &w.db, "EVENTS");
        view[key] = json!(value);
        for (method, path) in [
            (reqwest::Method::POST, "/api/v1/registry/views/"),
            (reqwest::Method::PUT, put),
        ] {
            let what = format!("{method} {key} = {value}");
            let resp = client
                .request(method, format!("{base}{path}"))
                .json(&view)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{what}: no answer ({e}); log:\n{}", daemon.log_text()));
            let status = resp.status();
            let body: Json = resp.json().await.unwrap();
            assert_eq!(status, 422, "{what}: {body}");
            let detail = body["detail"].as_str().unwrap_or_default();
            assert!(
                detail.contains(&format!("{key}: `{value}`")),
                "{what}: {body}"
            );
        }
    }
    let listed: Json = client
        .get(format!("{base}/api/v1/registry/views/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!([]), "nothing is stored");
    assert!(healthz(&client, &base).await, "{}", daemon.log_text());
    assert!(daemon.is_running(), "{}", daemon.log_text());
}

#[test]
fn a_view_file_with_an_overflowing_duration_is_one_error_line_naming_the_key_never_a_panic() {
    let dir = scratch_dir("baddur");
    let redis = RedisServer::start();
    for (key, value) in [
        ("ttl", "P99999999999999999999D"),
        ("refresh_rate", "P99999999999999999999D"),
        ("refresh_rate", "PT10000000000000000000S"),
        ("ttl", "P10000000000D"),
    ] {
        let file = dir.join(format!("{key}.json"));
        let mut view = view_json("overflowing", "DB", "EVENTS");
        view[key] = json!(value);
        std::fs::write(&file, view.to_string()).unwrap();
        let config = warehouse()
            .set("warehouse.password", "x")
            .set("profiles.redis_url", &redis.url);

        let (out, _) = with_config(&config.render(), &["apply", file.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
        assert!(
            err.contains(file.to_str().unwrap()) && err.contains(&format!("{key}: `{value}`")),
            "{err}"
        );

        // In registry.files, the file is skipped by name and the command works.
        let config = config
            .set("registry.files", [file.to_str().unwrap()])
            .set("log.format", "json");
        let (out, _) = with_config(&config.render(), &["status"], &[]);
        assert!(out.status.success(), "{}", shown(&out));
        let err = stderr(&out);
        assert!(
            err.lines().any(|l| l.contains("view file skipped")
                && l.contains(file.to_str().unwrap())
                && l.contains(&format!("{key}: `{value}`"))),
            "{err}"
        );
    }
}

/// The Redis hash the registry keeps views in, found by a view it holds, so
/// the test does not depend on the key layout.
async fn registry_hash(w: &SnowflakeWorld, id: &str) -> Vec<u8> {
    let mut c = w.redis_conn().await;
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut found = Vec::new();
    for k in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&k)
            .query_async(&mut c)
            .await
            .unwrap();
        let holds: bool = kind == "hash"
            && redis::cmd("HEXISTS")
                .arg(&k)
                .arg(id)
                .query_async(&mut c)
                .await
                .unwrap();
        if holds {
            found.push(k);
        }
    }
    assert_eq!(found.len(), 1, "hashes holding `{id}`: {found:?}");
    found.remove(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_view_with_an_overflowing_refresh_rate_is_refused_at_load_and_the_daemon_keeps_syncing(
) {
    let mut w = SnowflakeWorld::shared().await;
    let good = w.add_table("steady", 10).await;
    w.insert(good, 30).await;
    let bad = w.add_table("overflowing", 10).await;
    w.insert(bad, 30).await;
    // The bad view lives only in Redis, as an older version stored it.
    std::fs::remove_file(w.dir.join("views/overflowing.json")).unwrap();
    let out = w.materializer(&["status"], &[]);
    assert!(out.status.success(), "{}", shown(&out));
    let key = registry_hash(&w, "steady:1").await;
    let mut stored = view_json("overflowing", &w.db, &w.tables[bad].table);
    stored["refresh_rate"] = json!("PT10000000000000000000S");
    let mut c = w.redis_conn().await;
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("overflowing:1")
        .arg(stored.to_string())
        .query_async(&mut c)
        .await
        .unwrap();

    // Every reader of the registry goes through `registry::list`, which skips it.
    let loaded = materializer::config::Config::load(&w.config_file, Vec::new()).unwrap();
    let store = materializer::profiles::ProfileStore::connect(&loaded.config.profiles)
        .await
        .unwrap();
    let listed: Vec<String> = materializer::registry::list(&store)
        .await
        .unwrap()
        .iter()
        .map(|v| v.id().to_string())
        .collect();
    assert_eq!(listed, ["steady:1"]);

    let mut daemon = w.spawn("daemon", &["run"], &[]);
    assert!(
        w.wait_converged(good, Duration::from_secs(30)).await,
        "{}",
        daemon.log_text()
    );
    // Several intervals later (1s each), the daemon still runs and syncs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    w.insert(good, 30).await;
    assert!(
        w.wait_converged(good, Duration::from_secs(30)).await,
        "{}",
        daemon.log_text()
    );
    assert!(daemon.is_running(), "{}", daemon.log_text());
    // Refused with an error naming the view, the key and the limit.
    let refused = daemon.log_text().lines().any(|l| {
        serde_json::from_str::<Json>(l).is_ok_and(|e| {
            e["level"] == "ERROR"
                && e["view"].to_string().contains("overflowing:1")
                && e["error"].as_str().is_some_and(|s| {
                    s.contains("refresh_rate: `PT10000000000000000000S`") && s.contains("P366D")
                })
        })
    });
    assert!(refused, "{}", daemon.log_text());
    assert_eq!(w.watermark("overflowing").await, None, "it never ran");
    daemon.signal("TERM");
    assert!(daemon
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}
