//! The HTTP API against its real client: the daemon binary serves
//! `[api]`, the real Snowplow Signals SDK 0.1.5 (in a venv from
//! `scripts/python-env.sh signals`, driven by `tests/support/signals_sdk.py`)
//! applies the seed view and reads the synced attributes back, and plain HTTP
//! covers what the SDK cannot send (malformed bodies, missing tokens) plus the
//! operational endpoints. Real Redis and the fakesnow server come from
//! `tests/support`.

mod support;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use materializer::profiles::feast;
use redis::AsyncCommands;
use serde_json::{json, Value as Json};
use support::{materializer_bin, scratch_dir, unique_name, RedisServer, SnowflakeServer};

const TABLE: &str = "SNOWPLOW_ECOMMERCE_TRANSACTION_INTERACTIONS_FEATURES";
const VIEW: &str = "ecommerce_transaction_interactions_features";

/// A JWT-shaped token: the SDK decodes (never verifies) whatever bearer it
/// holds, so the token the daemon accepts must parse as a JWT.
fn jwt(subject: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.{}",
        b64(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64(&format!(r#"{{"sub":"{subject}"}}"#)),
        b64("not-checked")
    )
}

/// The python of `scripts/python-env.sh NAME` (created once per venv).
fn venv_python(name: &'static str) -> PathBuf {
    static PYTHONS: OnceLock<std::sync::Mutex<std::collections::HashMap<&str, PathBuf>>> =
        OnceLock::new();
    let mut all = PYTHONS.get_or_init(Default::default).lock().unwrap();
    all.entry(name)
        .or_insert_with(|| {
            let out = std::process::Command::new("bash")
                .arg(support::project_root().join("scripts/python-env.sh"))
                .arg(name)
                .stderr(Stdio::inherit())
                .output()
                .expect("run scripts/python-env.sh");
            assert!(out.status.success(), "python-env.sh {name} failed");
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        })
        .clone()
}

/// A daemon serving the API over a fresh Redis and its own warehouse database.
struct Daemon {
    sf: &'static SnowflakeServer,
    redis: RedisServer,
    db: String,
    dir: PathBuf,
    /// The seed view document, pointed at this test's database.
    view_file: PathBuf,
    url: String,
    token: String,
    child: Option<Child>,
}

impl Daemon {
    async fn start() -> Daemon {
        Daemon::start_with(&[]).await
    }

    /// A daemon with extra environment (config overrides).
    async fn start_with(env: &[(&str, &str)]) -> Daemon {
        let sf = SnowflakeServer::shared();
        let redis = RedisServer::start();
        let db = unique_name("API");
        let dir = scratch_dir("api");
        sf.exec_in(
            &db,
            "SIGNALS",
            &[&format!(
                r#"CREATE TABLE "{TABLE}" ("DOMAIN_USERID" VARCHAR, "TOTAL_TRANSACTIONS" NUMBER(38,0),
                   "TOTAL_REVENUE" NUMBER(38,0), "AVG_TRANSACTION_REVENUE" NUMBER(38,0), "UPDATED_AT" TIMESTAMP_NTZ)"#
            )],
        )
        .await;
        let mut view: Json = serde_json::from_str(
            &std::fs::read_to_string(
                support::project_root().join(format!("config/views/{VIEW}.json")),
            )
            .unwrap(),
        )
        .unwrap();
        view["batch_source"]["database"] = json!(db);
        let view_file = dir.join("view.json");
        std::fs::write(&view_file, view.to_string()).unwrap();
        let port = support::free_port();
        let token = jwt(&unique_name("token"));
        let config = dir.join("materializer.toml");
        // A long interval: any sync seen here was started by the API, not a tick.
        std::fs::write(
            &config,
            format!(
                r#"
[scheduler]
interval = "1h"
shutdown_grace = "10s"
[warehouse]
kind = "snowflake"
account = "testacct"
user = "SIGNALS"
password = "test-password"
database = "{db}"
base_url = "{base}"
query_timeout = "30s"
[profiles]
redis_url = "{redis}"
[api]
listen = "127.0.0.1:{port}"
[log]
format = "text"
"#,
                base = sf.base_url,
                redis = redis.url,
            ),
        )
        .unwrap();
        let child = std::process::Command::new(materializer_bin())
            .arg("--config")
            .arg(&config)
            .arg("run")
            .current_dir(&dir)
            // Through the environment, as a container would pass it.
            .env(
                "MATERIALIZER__API__TOKENS",
                format!(r#"["other-token", "{token}"]"#),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon {
            sf,
            redis,
            db,
            dir,
            view_file,
            url: format!("http://127.0.0.1:{port}"),
            token,
            child: Some(child),
        };
        let up = support::wait_for(Duration::from_secs(30), || async {
            reqwest::get(format!("{}/healthz", d.url))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(up, "the API never answered /healthz; log:\n{}", d.log());
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// (DOMAIN_USERID, TOTAL_TRANSACTIONS, TOTAL_REVENUE, AVG_TRANSACTION_REVENUE, UPDATED_AT)
    async fn insert(&self, rows: &[(&str, i64, i64, i64, &str)]) {
        let values: Vec<String> = rows
            .iter()
            .map(|(e, t, r, a, ts)| format!("('{e}', {t}, {r}, {a}, '{ts}')"))
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

    /// Runs one `signals_sdk.py` (SDK 0.1.5) command with `token`; returns its JSON.
    async fn sdk(&self, token: &str, args: &[&str]) -> Json {
        self.script("signals", "signals_sdk.py", token, args).await
    }

    /// Runs one `signals_sdk04.py` (SDK 0.4.x, sandbox mode) command on the seed view.
    async fn sdk04(&self, args: &[&str]) -> Json {
        let mut all = vec![args[0], self.view_file.to_str().unwrap()];
        all.extend(&args[1..]);
        let token = self.token.clone();
        self.script("signals04", "signals_sdk04.py", &token, &all)
            .await
    }

    async fn script(&self, venv: &'static str, script: &str, token: &str, args: &[&str]) -> Json {
        let python = tokio::task::spawn_blocking(move || venv_python(venv))
            .await
            .unwrap();
        let out = tokio::process::Command::new(python)
            .arg(support::project_root().join("tests/support").join(script))
            .arg(&self.url)
            .arg(token)
            .args(args)
            .output()
            .await
            .expect("run signals_sdk.py");
        assert!(
            out.status.success(),
            "{script} {args:?} failed:\n{}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "signals_sdk.py printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// One plain HTTP call; returns the status and the body (JSON, or text as a string).
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        token: Option<&str>,
    ) -> (u16, Json) {
        let client = reqwest::Client::new();
        let mut req = client.request(method.parse().unwrap(), format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("HTTP call");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Json::String(text)),
        )
    }

    async fn authed(&self, method: &str, path: &str, body: Option<Json>) -> (u16, Json) {
        let token = self.token.clone();
        self.call(
            method,
            path,
            body.map(|b| b.to_string().into_bytes()),
            Some(&token),
        )
        .await
    }

    /// Waits until the view's last run finished ok; returns the status row.
    async fn synced(&self) -> Json {
        let row = std::sync::Mutex::new(Json::Null);
        let ok = support::wait_for(Duration::from_secs(60), || async {
            let (_, s) = self.authed("GET", "/api/v1/sync/status", None).await;
            let r = s.get(0).cloned().unwrap_or(Json::Null);
            let done = r["last_run"]["status"] == "ok";
            *row.lock().unwrap() = r;
            done
        })
        .await;
        let row = row.into_inner().unwrap();
        assert!(ok, "the view never synced: {row}\nlog:\n{}", self.log());
        row
    }

    fn view_doc(&self) -> Json {
        serde_json::from_str(&std::fs::read_to_string(&self.view_file).unwrap()).unwrap()
    }

    /// SIGTERM, then the exit status (within 20 s).
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        assert!(std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("daemon did not stop on SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn paths(calls: &Json) -> Vec<(String, String, u64)> {
    calls
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c[0].as_str().unwrap().to_string(),
                c[1].as_str().unwrap().to_string(),
                c[2].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_applies_the_seed_view_twice_reads_the_synced_values_and_sigterm_exits_0() {
    let mut d = Daemon::start().await;
    d.insert(&[
        ("u1", 5, 100, 20, "2024-05-01 09:00:00"),
        ("u1", 12, 340, 28, "2024-05-01 10:00:00"),
        ("u2", 3, 30, 10, "2024-05-01 10:00:00"),
    ])
    .await;
    let token = d.token.clone();
    let view_file = d.view_file.display().to_string();

    let first = d.sdk(&token, &["apply", &view_file]).await;
    assert_eq!(first["error"], Json::Null, "{first}");
    assert_eq!(first["applied"][0]["name"], VIEW);
    let views = format!("/api/v1/registry/views/{VIEW}/versions/1");
    assert_eq!(
        paths(&first["calls"]),
        [
            ("POST".into(), "/api/v1/registry/views/".into(), 201),
            ("POST".into(), "/api/v1/feature_store/apply".into(), 200)
        ]
    );
    // The second apply finds the view: POST is a 400, so the SDK updates with PUT.
    let second = d.sdk(&token, &["apply", &view_file]).await;
    assert_eq!(second["error"], Json::Null, "{second}");
    assert_eq!(
        paths(&second["calls"]),
        [
            ("POST".into(), "/api/v1/registry/views/".into(), 400),
            ("PUT".into(), views.clone(), 200),
            ("POST".into(), "/api/v1/feature_store/apply".into(), 200)
        ]
    );

    let row = d.synced().await;
    assert_eq!(row["last_run"]["rows_written"], 2, "{row}");
    let got = d
        .sdk(
            &token,
            &[
                "attributes",
                VIEW,
                "1",
                "domain_userid",
                "u1",
                "TOTAL_TRANSACTIONS",
                "TOTAL_REVENUE",
            ],
        )
        .await;
    assert_eq!(
        got["attributes"],
        json!({"domain_userid": "u1", "TOTAL_TRANSACTIONS": 12, "TOTAL_REVENUE": 340}),
        "{got}"
    );
    let nobody = d
        .sdk(
            &token,
            &[
                "attributes",
                VIEW,
                "1",
                "domain_userid",
                "nobody",
                "TOTAL_TRANSACTIONS",
            ],
        )
        .await;
    assert_eq!(
        nobody["attributes"],
        json!({"domain_userid": "nobody", "TOTAL_TRANSACTIONS": null}),
        "{nobody}"
    );
    let view = d.sdk(&token, &["get_view", VIEW]).await;
    assert_eq!(view["view"]["feast_name"], format!("{VIEW}_v1"), "{view}");
    assert_eq!(view["view"]["entity_key"], "domain_userid");

    let status = d.terminate();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        d.log()
    );
    assert!(!d.log().contains(&token), "the token leaked into the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_views_are_refused_naming_the_problem_and_nothing_is_stored() {
    let d = Daemon::start().await;
    let token = d.token.clone();
    let view_file = d.view_file.display().to_string();

    let bad_type = d
        .sdk(&token, &["apply_invalid", "bad_type", &view_file])
        .await;
    assert_eq!(bad_type["error"]["status"], 422, "{bad_type}");
    let msg = bad_type["error"]["message"]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        msg.contains("TOTAL_TRANSACTIONS") && msg.contains("unknown type `int128`"),
        "{bad_type}"
    );

    let no_ts = d
        .sdk(&token, &["apply_invalid", "no_timestamp_field", &view_file])
        .await;
    assert_eq!(no_ts["error"]["status"], 422, "{no_ts}");
    let msg = no_ts["error"]["message"]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        msg.contains("batch_source.timestamp_field: required"),
        "{no_ts}"
    );

    let post = |body: Vec<u8>| d.call("POST", "/api/v1/registry/views/", Some(body), Some(&token));
    let (status, body) = post(b"{\"name\": ".to_vec()).await;
    assert_eq!(status, 400);
    assert!(
        body["detail"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );
    let (status, body) = post(vec![b' '; 2 << 20]).await;
    assert_eq!(status, 400);
    assert!(
        body["detail"].as_str().unwrap().contains("larger than"),
        "{body}"
    );

    let mut doc = d.view_doc();
    doc["owner"] = json!("data team");
    let (status, body) = post(doc.to_string().into_bytes()).await;
    assert_eq!(status, 422);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("owner: `data team` is not an email"),
        "{body}"
    );
    let mut doc = d.view_doc();
    doc["fields"] = json!([]);
    let (status, body) = post(doc.to_string().into_bytes()).await;
    assert_eq!(status, 422);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("fields: a view needs at least one field"),
        "{body}"
    );

    let (status, listed) = d.authed("GET", "/api/v1/registry/views/", None).await;
    assert_eq!((status, listed), (200, json!([])));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_token_is_401_and_the_operational_endpoints_work() {
    let d = Daemon::start().await;
    let token = d.token.clone();
    d.insert(&[("u1", 7, 70, 10, "2024-05-01 10:00:00")]).await;

    let wrong = d.sdk(&jwt("someone-else"), &["get_view", VIEW]).await;
    assert_eq!(wrong["error"]["status"], 401, "{wrong}");
    let (status, body) = d.call("GET", "/api/v1/registry/views/", None, None).await;
    assert_eq!(status, 401);
    assert!(
        body["detail"].as_str().unwrap().contains("Authorization"),
        "{body}"
    );

    assert_eq!(d.call("GET", "/healthz", None, None).await.0, 200);
    assert_eq!(
        d.call("GET", "/health-all", None, None).await,
        (200, json!({"status": "ok", "dependencies": {}}))
    );
    let (status, ready) = d.call("GET", "/readyz", None, None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["checks"], json!({"redis": "ok", "warehouse": "ok"}));

    let (status, _) = d
        .authed("POST", "/api/v1/registry/views/", Some(d.view_doc()))
        .await;
    assert_eq!(status, 201);
    let (status, listed) = d
        .authed("GET", "/api/v1/registry/views/?offline=true", None)
        .await;
    assert_eq!((status, listed.as_array().map(Vec::len)), (200, Some(1)));
    let (status, _) = d
        .authed("POST", &format!("/api/v1/sync/{VIEW}/versions/1/run"), None)
        .await;
    assert_eq!(status, 202);
    d.synced().await;

    let metrics = d.call("GET", "/metrics", None, None).await.1;
    let metrics = metrics.as_str().unwrap();
    for family in [
        format!(r#"materializer_runs_total{{view="{VIEW}:1",outcome="ok"}} "#),
        format!(r#"materializer_rows_written_total{{view="{VIEW}:1"}} 1"#),
        format!(r#"materializer_run_duration_seconds_count{{view="{VIEW}:1"}}"#),
        format!(r#"materializer_freshness_lag_seconds{{view="{VIEW}:1"}}"#),
    ] {
        assert!(
            metrics.contains(&family),
            "{family} missing from:\n{metrics}"
        );
    }

    // The 0.4.x request form and full names; unknown names are named back.
    let fv = format!("{VIEW}_v1");
    let (status, got) = d
        .authed(
            "POST",
            "/api/v1/get-online-attributes",
            Some(json!({"attribute_keys": {"domain_userid": ["u1", "nobody"]},
                        "attributes": [format!("{fv}:TOTAL_REVENUE")], "full_attribute_names": true})),
        )
        .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(
        got,
        json!({"domain_userid": ["u1", "nobody"], format!("{fv}__TOTAL_REVENUE"): [70, null]})
    );
    let ask = |attr: String| {
        d.authed(
            "POST",
            "/api/v1/get-online-attributes",
            Some(json!({"entities": {"domain_userid": ["u1"]}, "attributes": [attr]})),
        )
    };
    let (status, body) = ask(format!("{fv}:NOPE")).await;
    assert_eq!(status, 404);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("no attribute `NOPE`"),
        "{body}"
    );
    let (status, body) = ask("missing_v9:X".into()).await;
    assert_eq!(status, 404);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("no view `missing_v9`"),
        "{body}"
    );

    // Delete with purge: no more syncing, and the view's values leave Redis.
    let (status, body) = d
        .authed(
            "DELETE",
            &format!("/api/v1/registry/views/{VIEW}/versions/1?purge=true"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["purged_entities"], 1);
    let mut conn = d.redis.connection().await;
    let key = feast::entity_key("domain_userid", b"u1", "signals");
    let left: Option<Vec<u8>> = conn.hget(&key, feast::ts_field(&fv)).await.unwrap();
    assert_eq!(left, None);
    assert_eq!(
        d.authed("GET", "/api/v1/sync/status", None).await,
        (200, json!([]))
    );
    assert!(!d.log().contains(&token), "the token leaked into the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn sdk_0_4_sandbox_publishes_reads_unpublishes_and_deletes_an_attribute_group() {
    let d = Daemon::start().await;
    d.insert(&[("u1", 7, 70, 10, "2024-05-01 10:00:00")]).await;
    let groups = "/api/v1/registry/attribute_groups/";
    let one = format!("{groups}{VIEW}/versions/1");

    let first = d.sdk04(&["publish"]).await;
    assert_eq!(first["error"], Json::Null, "{first}");
    assert_eq!(first["result"][0]["attribute_key"]["name"], "domain_userid");
    let again = d.sdk04(&["publish"]).await;
    assert_eq!(
        paths(&again["calls"]),
        [
            ("POST".into(), groups.into(), 400),
            ("PUT".into(), one.clone(), 200)
        ],
        "{again}"
    );
    let got = d.sdk04(&["get"]).await;
    assert_eq!(got["result"]["feast_name"], format!("{VIEW}_v1"), "{got}");

    // Publishing is enough: the scheduler picks the new view up on its own.
    d.synced().await;
    let attrs = d.sdk04(&["attributes", "u1", "TOTAL_TRANSACTIONS"]).await;
    assert_eq!(
        attrs["result"],
        json!({"domain_userid": "u1", "TOTAL_TRANSACTIONS": 7}),
        "{attrs}"
    );

    let unpublished = d.sdk04(&["unpublish"]).await;
    assert_eq!(unpublished["error"], Json::Null, "{unpublished}");
    let (_, status) = d.authed("GET", "/api/v1/sync/status", None).await;
    assert_eq!(status[0]["online"], false, "{status}");
    let deleted = d.sdk04(&["delete"]).await;
    assert_eq!(
        paths(&deleted["calls"]),
        [("DELETE".into(), one, 200)],
        "{deleted}"
    );
    assert_eq!(
        d.authed("GET", "/api/v1/sync/status", None).await,
        (200, json!([]))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn of_many_concurrent_creates_of_one_view_exactly_one_wins() {
    let d = Daemon::start().await;
    let view = d.view_doc();
    let calls = (0..16).map(|_| d.authed("POST", "/api/v1/registry/views/", Some(view.clone())));
    let answers: Vec<u16> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    assert_eq!(
        answers.iter().filter(|s| **s == 201).count(),
        1,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|s| **s == 400).count(),
        15,
        "{answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn read_requests_past_the_entity_and_value_limits_are_413_naming_the_key() {
    let d = Daemon::start_with(&[
        ("MATERIALIZER__API__MAX_ENTITIES", "500"),
        ("MATERIALIZER__API__MAX_CELLS", "1000"),
    ])
    .await;
    let (status, _) = d
        .authed("POST", "/api/v1/registry/views/", Some(d.view_doc()))
        .await;
    assert_eq!(status, 201);
    let attrs = |n: usize| -> Vec<String> {
        [
            "TOTAL_TRANSACTIONS",
            "TOTAL_REVENUE",
            "AVG_TRANSACTION_REVENUE",
        ][..n]
            .iter()
            .map(|a| format!("{VIEW}_v1:{a}"))
            .collect()
    };
    let ask = |entities: usize, n: usize| {
        let ids: Vec<String> = (0..entities).map(|i| format!("u{i}")).collect();
        json!({"entities": {"domain_userid": ids}, "attributes": attrs(n)})
    };
    let (status, body) = d
        .authed("POST", "/api/v1/get-online-attributes", Some(ask(501, 1)))
        .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("api.max_entities"),
        "{body}"
    );
    let (status, body) = d
        .authed("POST", "/api/v1/get-online-attributes", Some(ask(400, 3)))
        .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("api.max_cells"),
        "{body}"
    );
    // Inside both limits: answered, one value per entity and attribute.
    let (status, body) = d
        .authed("POST", "/api/v1/get-online-attributes", Some(ask(500, 2)))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["TOTAL_REVENUE"].as_array().unwrap().len(), 500);
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_answer_while_the_syncs_redis_writes_are_blocked() {
    let d = Daemon::start().await;
    d.insert(&[("u1", 12, 340, 28, "2024-05-01 10:00:00")])
        .await;
    let (status, _) = d
        .authed("POST", "/api/v1/registry/views/", Some(d.view_doc()))
        .await;
    assert_eq!(status, 201);
    d.authed("POST", "/api/v1/feature_store/apply", None).await;
    d.synced().await;
    // Redis holds every write (a sync's lease, its pages) for 4 s; reads go on.
    let mut c = d.redis.connection().await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(4000)
        .arg("WRITE")
        .query_async(&mut c)
        .await
        .unwrap();
    let run = format!("/api/v1/sync/{VIEW}/versions/1/run");
    let (status, _) = d.authed("POST", &run, None).await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = std::time::Instant::now();
    let (status, body) = d
        .authed(
            "POST",
            "/api/v1/get-online-attributes",
            Some(json!({"entities": {"domain_userid": ["u1"]},
                        "attributes": [format!("{VIEW}_v1:TOTAL_REVENUE")]})),
        )
        .await;
    let took = asked.elapsed();
    assert_eq!(
        (status, &body["TOTAL_REVENUE"]),
        (200, &json!([340])),
        "{body}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "a read waited {took:?} behind the sync's blocked writes"
    );
}
