//! Secrets stay secret at the most verbose log level: the daemon and every
//! command run at `trace` (config and `RUST_LOG`) with a warehouse password,
//! a Redis password, a private key and an API token configured, through
//! successful runs and failing ones (wrong Redis password, unreachable
//! warehouse, a config error on the very line holding the secret), and no
//! secret appears in any byte of stdout or stderr.

mod rig;
mod support;

use std::time::Duration;

use rig::{Rig, BASE_CONFIG, WH_PASSWORD};

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
    let mut rig = Rig::shared().await;
    let t = rig.add_table("secret", 20).await;
    rig.insert(t, 60).await;
    let mut c = rig.redis_conn().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(REDIS_PASSWORD)
        .query_async(&mut c)
        .await
        .unwrap();
    rig.redis_password = Some(REDIS_PASSWORD.into());
    let redis_url = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}/", rig.redis.port);
    let api_port = support::free_port();
    let sections = format!(
        "{BASE_CONFIG}[api]\nlisten = \"127.0.0.1:{api_port}\"\ntokens = [\"{API_TOKEN}\"]\n"
    );
    let secrets = [WH_PASSWORD, REDIS_PASSWORD, API_TOKEN];
    let trace_config =
        |text: String| text.replace("level = \"info,materializer=debug\"", "level = \"trace\"");

    // Password auth: every command, and the daemon for a few runs.
    rig.write_config_with(
        &sections,
        &format!("password = \"{WH_PASSWORD}\""),
        &redis_url,
    );
    std::fs::write(
        &rig.config,
        trace_config(std::fs::read_to_string(&rig.config).unwrap()),
    )
    .unwrap();
    for args in [
        &["sync"][..],
        &["status", "--json"],
        &["check"],
        &["profile", "--view", "secret", "u1"],
    ] {
        let out = rig.materializer(args, &TRACE);
        assert!(out.status.success(), "{args:?}: {}", rig::shown(&out));
        assert_no_secret(&format!("{args:?}"), &all_output(&out), &secrets);
    }
    rig.assert_converged(t).await;
    let daemon = rig.spawn("daemon", &["run"], &TRACE);
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
        rig.redis.port
    );
    rig.write_config_with(&sections, &format!("password = \"{WH_PASSWORD}\""), &wrong);
    let out = rig.materializer(&["sync"], &TRACE);
    assert_eq!(out.status.code(), Some(1), "{}", rig::shown(&out));
    assert_no_secret("wrong redis password", &all_output(&out), &secrets);
    rig.write_config_with(
        &sections,
        &format!("password = \"{WH_PASSWORD}\""),
        &redis_url,
    );
    let text = std::fs::read_to_string(&rig.config).unwrap().replace(
        &rig.sf.base_url,
        &format!("http://127.0.0.1:{}", support::free_port()),
    );
    std::fs::write(&rig.config, text).unwrap();
    let out = rig.materializer(&["sync"], &TRACE);
    assert_eq!(out.status.code(), Some(1), "{}", rig::shown(&out));
    assert_no_secret("unreachable warehouse", &all_output(&out), &secrets);

    // A config error on the line holding the secret (an unterminated string).
    rig.write_config_with(
        &sections,
        &format!("password = \"{WH_PASSWORD}"),
        &redis_url,
    );
    let out = rig.materializer(&["sync"], &TRACE);
    assert_eq!(out.status.code(), Some(2), "{}", rig::shown(&out));
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
    for auth in [
        format!("private_key = '''\n{pem}'''"),
        format!(
            "private_key_path = \"{}\"",
            support::test_private_key_path().display()
        ),
    ] {
        rig.write_config_with(&sections, &auth, &redis_url);
        std::fs::write(
            &rig.config,
            trace_config(std::fs::read_to_string(&rig.config).unwrap()),
        )
        .unwrap();
        rig.insert(t, 10).await;
        let out = rig.materializer(&["sync"], &TRACE);
        assert!(out.status.success(), "{}", rig::shown(&out));
        assert_no_secret("key-pair sync", &all_output(&out), &secrets);
        rig.assert_converged(t).await;
    }
}
