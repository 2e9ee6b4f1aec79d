//! Secrets stay secret at the most verbose log level: the daemon and every
//! command run at `trace` (config and `RUST_LOG`) with a warehouse password,
//! a Redis password, a private key and an API token configured, through
//! successful runs and failing ones (wrong Redis password, unreachable
//! warehouse, a config error on the very line holding the secret), and no
//! secret appears in any byte of stdout or stderr. The same holds for secrets
//! read from files (`profiles.redis_url_file`, `api.tokens_file`, as a
//! Kubernetes secret mount provides them), which work in place of the inline
//! keys.

use std::time::Duration;

use crate::fixtures::{shown, ConfigToml, ParquetWorld, Rows, SnowflakeWorld, WH_PASSWORD};
use crate::support;

const REDIS_PASSWORD: &str = "redis-pw-Hn3bQ7";
const API_TOKEN: &str = "api-token-Ly5mC2dV8";

/// Everything a command printed, stdout and stderr.
fn all_output(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !text.contains(s),
            "{what}: a secret ({}...) appears in the output:\n{text}",
            &s[..6.min(s.len())]
        );
    }
}

const TRACE: [(&str, &str); 1] = [("RUST_LOG", "trace")];

#[tokio::test(flavor = "multi_thread")]
async fn no_password_key_or_token_in_trace_logs_or_errors() {
    let mut w = SnowflakeWorld::shared().await;
    let t = w.add_table("secret", 20).await;
    w.insert(t, 60).await;
    let mut c = w.redis_conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(REDIS_PASSWORD)
        .query_async(&mut c)
        .await
        .unwrap();
    w.redis_password = Some(REDIS_PASSWORD.into());
    let redis_url = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}/", w.redis.port);
    let api_port = support::free_port();
    let config = w
        .fast_config()
        .set("profiles.redis_url", &redis_url)
        .set("api.listen", format!("127.0.0.1:{api_port}"))
        .set("api.tokens", [API_TOKEN]);
    let secrets = [WH_PASSWORD, REDIS_PASSWORD, API_TOKEN];
    let trace = |c: ConfigToml| c.set("log.level", "trace");

    // Password auth: every command, and the daemon for a few runs.
    w.write_config(&trace(config.clone()));
    for args in [
        &["sync"][..],
        &["status", "--json"],
        &["check"],
        &["profile", "--view", "secret", "u1"],
    ] {
        let out = w.materializer(args, &TRACE);
        assert!(out.status.success(), "{args:?}: {}", shown(&out));
        assert_no_secret(&format!("{args:?}"), &all_output(&out), &secrets);
    }
    w.assert_converged(t).await;
    let daemon = w.spawn("daemon", &["run"], &TRACE);
    // The token travels through the API's auth path: accepted once, refused once.
    let http = reqwest::Client::new();
    let status_url = format!("http://127.0.0.1:{api_port}/api/v1/sync/status");
    let call = |token: &'static str| {
        http.get(&status_url)
            .header("Authorization", format!("Bearer {token}"))
            .send()
    };
    assert!(
        support::wait_for(Duration::from_secs(15), || async {
            call(API_TOKEN).await.is_ok_and(|r| r.status() == 200)
        })
        .await,
        "the API never accepted the token"
    );
    assert_eq!(call("not-the-token").await.unwrap().status(), 401);
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.signal("TERM");
    let mut daemon = daemon;
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some());
    let log = daemon.log_text();
    // Nothing in the daemon logs at TRACE itself; DEBUG lines prove the filter is open.
    assert!(log.contains("\"level\":\"DEBUG\""), "not verbose:\n{log}");
    assert_no_secret("run", &log, &secrets);

    // Failures print errors: a wrong Redis password, an unreachable warehouse.
    let wrong = format!(
        "redis://:wrong-{REDIS_PASSWORD}@127.0.0.1:{}/",
        w.redis.port
    );
    w.write_config(&config.clone().set("profiles.redis_url", wrong));
    let out = w.materializer(&["sync"], &TRACE);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert_no_secret("wrong redis password", &all_output(&out), &secrets);
    let nowhere = format!("http://127.0.0.1:{}", support::free_port());
    w.write_config(&config.clone().set("warehouse.base_url", nowhere));
    let out = w.materializer(&["sync"], &TRACE);
    assert_eq!(out.status.code(), Some(1), "{}", shown(&out));
    assert_no_secret("unreachable warehouse", &all_output(&out), &secrets);

    // A config error on the line holding the secret (an unterminated string).
    w.write_config(
        &config
            .clone()
            .raw("warehouse.password", format!("\"{WH_PASSWORD}")),
    );
    let out = w.materializer(&["sync"], &TRACE);
    assert_eq!(out.status.code(), Some(2), "{}", shown(&out));
    assert_no_secret("config error", &all_output(&out), &secrets);

    // Key-pair auth: the inline key, and the same key from a file.
    let pem = support::test_private_key_pem();
    let key_lines: Vec<&str> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .collect();
    assert!(!key_lines.is_empty());
    let mut secrets: Vec<&str> = secrets.to_vec();
    secrets.extend(&key_lines);
    let key_path = support::test_private_key_path();
    for auth in [
        config
            .clone()
            .raw("warehouse.private_key", format!("'''\n{pem}'''")),
        config
            .clone()
            .set("warehouse.private_key_path", key_path.to_str().unwrap()),
    ] {
        w.write_config(&trace(auth.unset("warehouse.password")));
        w.insert(t, 10).await;
        let out = w.materializer(&["sync"], &TRACE);
        assert!(out.status.success(), "{}", shown(&out));
        assert_no_secret("key-pair sync", &all_output(&out), &secrets);
        w.assert_converged(t).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_from_files_work_and_never_show() {
    const FILE_REDIS_PASSWORD: &str = "file-redis-pw-Qe4tW9";
    const FILE_TOKEN: &str = "file-token-Vb7nR3kP";
    let w = ParquetWorld::new();
    w.write_table(
        "EVENTS",
        "part-0.parquet",
        Rows::default()
            .text("DOMAIN_USERID", [Some("u1")])
            .int32("VISITS", [3])
            .utc_micros("UPDATED_AT", [Some((w.now - 60) * 1_000_000)]),
        None,
    );
    std::fs::write(
        w.views().join("events.json"),
        serde_json::json!({
            "name": "events", "version": 1, "entity": {"name": "domain_userid"},
            "batch_source": {"name": "e", "table": "events", "timestamp_field": "updated_at"},
            "fields": [{"name": "VISITS", "type": "int32"}], "online": true
        })
        .to_string(),
    )
    .unwrap();
    let mut c = w.redis_conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(FILE_REDIS_PASSWORD)
        .query_async(&mut c)
        .await
        .unwrap();
    // As a secret mount writes them: a trailing newline, comments allowed in
    // the token file.
    let url_file = w.dir.join("redis-url");
    let url = format!("redis://:{FILE_REDIS_PASSWORD}@127.0.0.1:{}/", w.redis.port);
    std::fs::write(&url_file, format!("{url}\n")).unwrap();
    let tokens_file = w.dir.join("tokens");
    std::fs::write(&tokens_file, format!("# api tokens\n{FILE_TOKEN}\n")).unwrap();
    let api_port = support::free_port();
    let config = w
        .config()
        .unset("profiles.redis_url")
        .set("profiles.redis_url_file", url_file.to_str().unwrap())
        .set("api.listen", format!("0.0.0.0:{api_port}"))
        .set("api.tokens_file", tokens_file.to_str().unwrap())
        .set("log.level", "trace");
    w.write_config(&config);
    let secrets = [FILE_REDIS_PASSWORD, FILE_TOKEN];
    for args in [
        &["sync", "--json"][..],
        &["sync", "--dry-run"],
        &["status", "--json"],
        &["check"],
        &["check", "--json"],
    ] {
        let out = w.materializer(args, &TRACE);
        assert!(out.status.success(), "{args:?}: {}", shown(&out));
        assert_no_secret(&format!("{args:?}"), &all_output(&out), &secrets);
    }
    let daemon = w.spawn("daemon", &["run"], &TRACE);
    let http = reqwest::Client::new();
    let status_url = format!("http://127.0.0.1:{api_port}/api/v1/sync/status");
    let call = |token: &'static str| {
        http.get(&status_url)
            .header("Authorization", format!("Bearer {token}"))
            .send()
    };
    assert!(
        support::wait_for(Duration::from_secs(15), || async {
            call(FILE_TOKEN).await.is_ok_and(|r| r.status() == 200)
        })
        .await,
        "the API never accepted the token from the file: {}",
        daemon.log_text()
    );
    assert_eq!(
        call("# api tokens").await.unwrap().status(),
        401,
        "a comment is no token"
    );
    let mut daemon = daemon;
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some());
    assert_no_secret("run", &daemon.log_text(), &secrets);

    // Errors name the key and the file, never what it holds.
    let wrong = w.dir.join("wrong-url");
    std::fs::write(
        &wrong,
        format!(
            "redis://:wrong-{FILE_REDIS_PASSWORD}@127.0.0.1:{}/",
            w.redis.port
        ),
    )
    .unwrap();
    let absent = w.dir.join("no-such-tokens");
    for (cfg, code, want) in [
        (
            config
                .clone()
                .set("profiles.redis_url_file", wrong.to_str().unwrap()),
            1,
            "cannot connect".to_string(),
        ),
        (
            config
                .clone()
                .set("api.tokens_file", absent.to_str().unwrap()),
            2,
            format!("api.tokens_file: cannot read {}", absent.display()),
        ),
        (
            config.clone().set("profiles.redis_url", &url),
            2,
            "profiles: set only one of redis_url, redis_url_file".to_string(),
        ),
    ] {
        w.write_config(&cfg);
        let out = w.materializer(&["sync"], &TRACE);
        assert_eq!(out.status.code(), Some(code), "{}", shown(&out));
        let text = all_output(&out);
        assert!(text.contains(&want), "{want}: {}", shown(&out));
        assert_no_secret("file secret error", &text, &secrets);
    }
}
