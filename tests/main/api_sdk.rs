//! The HTTP API against its real client: the daemon binary serves
//! `[api]`, the real Snowplow Signals SDK 0.1.5 (in a venv from
//! `scripts/python-env.sh signals`, driven by `tests/support/signals_sdk.py`)
//! applies the seed view and reads the synced attributes back, and plain HTTP
//! covers what the SDK cannot send (malformed bodies, missing tokens) plus the
//! operational endpoints. Real Redis and the fakesnow server come from
//! `tests/support`.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use materializer::profiles::feast;
use redis::AsyncCommands;
use serde_json::{json, Value as Json};

use crate::fixtures::{api_comes_up, Daemon, Row, SnowflakeWorld, SEED_VIEW as VIEW};
use crate::support::{self, unique_name};

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

/// A daemon serving the API over a world with the seed table; the seed view
/// is not registered (the tests apply it).
struct Api {
    daemon: Daemon,
    world: SnowflakeWorld,
    /// The seed view document, pointed at this test's database.
    view_file: PathBuf,
    url: String,
    token: String,
}

impl Api {
    async fn start() -> Api {
        Api::start_with(&[]).await
    }

    /// A daemon with extra environment (config overrides).
    async fn start_with(env: &[(&str, &str)]) -> Api {
        let world = SnowflakeWorld::shared().await;
        let view = world.add_seed_table().await;
        let view_file = world.dir.join("view.json");
        std::fs::write(&view_file, view.to_string()).unwrap();
        let port = support::free_port();
        let token = jwt(&unique_name("token"));
        // A long interval: any sync seen here was started by the API, not a tick.
        world.write_config(
            &world
                .config()
                .unset("registry")
                .set("scheduler.interval", "1h")
                .set("scheduler.shutdown_grace", "10s")
                .set("api.listen", format!("127.0.0.1:{port}")),
        );
        // The tokens come through the environment, as a container would pass them.
        let tokens = format!(r#"["other-token", "{token}"]"#);
        let env = [&[("MATERIALIZER__API__TOKENS", tokens.as_str())], env].concat();
        let daemon = world.spawn("daemon", &["run"], &env);
        let url = format!("http://127.0.0.1:{port}");
        assert!(
            api_comes_up(&url).await,
            "the API never answered /healthz; log:\n{}",
            daemon.log_text()
        );
        Api {
            daemon,
            world,
            view_file,
            url,
            token,
        }
    }

    fn log(&self) -> String {
        self.daemon.log_text()
    }

    async fn insert(&self, rows: &[Row<'_>]) {
        self.world.insert_seed(rows).await;
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
        let python = tokio::task::spawn_blocking(move || support::venv_python(venv))
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
        self.daemon.terminate(Duration::from_secs(20))
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
    let mut d = Api::start().await;
    d.insert(&[
        (Some("u1"), 5, 100, 20, Some("2024-05-01 09:00:00")),
        (Some("u1"), 12, 340, 28, Some("2024-05-01 10:00:00")),
        (Some("u2"), 3, 30, 10, Some("2024-05-01 10:00:00")),
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
    let d = Api::start().await;
    let token = d.token.clone();
    let view_file = d.view_file.display().to_string();

    for (invalid, want) in [
        (
            "bad_type",
            &["TOTAL_TRANSACTIONS", "unknown type `int128`"][..],
        ),
        (
            "no_timestamp_field",
            &["batch_source.timestamp_field: required"],
        ),
    ] {
        let got = d.sdk(&token, &["apply_invalid", invalid, &view_file]).await;
        assert_eq!(got["error"]["status"], 422, "{got}");
        let msg = got["error"]["message"]["detail"]
            .as_str()
            .unwrap_or_default();
        assert!(want.iter().all(|w| msg.contains(w)), "{got}");
    }

    // What the SDK cannot send: malformed and oversized bodies, invalid documents.
    let with = |key: &str, value: Json| {
        let mut doc = d.view_doc();
        doc[key] = value;
        doc.to_string().into_bytes()
    };
    for (body, status, want) in [
        (b"{\"name\": ".to_vec(), 400, "not valid JSON"),
        (vec![b' '; 2 << 20], 400, "larger than"),
        (
            with("owner", json!("data team")),
            422,
            "owner: `data team` is not an email",
        ),
        (
            with("fields", json!([])),
            422,
            "fields: a view needs at least one field",
        ),
    ] {
        let (got, answer) = d
            .call("POST", "/api/v1/registry/views/", Some(body), Some(&token))
            .await;
        assert_eq!(got, status, "{want}: {answer}");
        assert!(
            answer["detail"].as_str().unwrap().contains(want),
            "{answer}"
        );
    }

    let (status, listed) = d.authed("GET", "/api/v1/registry/views/", None).await;
    assert_eq!((status, listed), (200, json!([])));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_token_is_401_and_the_operational_endpoints_work() {
    let d = Api::start().await;
    let token = d.token.clone();
    d.insert(&[(Some("u1"), 7, 70, 10, Some("2024-05-01 10:00:00"))])
        .await;

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
        format!(r#"materializer_entities_written_total{{view="{VIEW}:1"}} 1"#),
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
    let mut conn = d.world.redis.connection().await;
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
    let d = Api::start().await;
    d.insert(&[(Some("u1"), 7, 70, 10, Some("2024-05-01 10:00:00"))])
        .await;
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
    let d = Api::start().await;
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
    let d = Api::start_with(&[
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
    let d = Api::start().await;
    d.insert(&[(Some("u1"), 12, 340, 28, Some("2024-05-01 10:00:00"))])
        .await;
    let (status, _) = d
        .authed("POST", "/api/v1/registry/views/", Some(d.view_doc()))
        .await;
    assert_eq!(status, 201);
    d.authed("POST", "/api/v1/feature_store/apply", None).await;
    d.synced().await;
    // Redis holds every write (a sync's lease, its pages) for 4 s; reads go on.
    let mut c = d.world.redis.connection().await;
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
