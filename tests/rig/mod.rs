//! A fault-injection rig for the reliability, bad-input and secrets tests,
//! included with `mod support; mod rig;`.
//!
//! A [`Rig`] is one isolated world: a database on a Snowflake-protocol server
//! (the binary's shared one, or a server of its own that the test may stop,
//! restart or freeze), a Redis of its own, a scratch directory with a config
//! and view files. Tables are generated, not listed: row `s` (the sequence
//! number) belongs to entity `u{s % entities}`, carries `VAL = s` and is stamped
//! `2024-01-01T00:00:00Z + s seconds`, so the right final value of every entity,
//! and which rows a watermark covers, follow from the row count alone.
//!
//! [`Daemon`] is a spawned `materializer` process with its stderr in a file,
//! killed (SIGKILL) on drop.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use materializer::profiles::{feast, read};
use serde_json::{json, Value as Json};

use crate::support::{materializer_bin, scratch_dir, unique_name, RedisServer, SnowflakeServer};

/// 2024-01-01T00:00:00Z in nanoseconds: the timestamp of row 0.
pub const BASE_NANOS: i64 = 1_704_067_200_000_000_000;
pub const SECOND: i64 = 1_000_000_000;
pub const WH_PASSWORD: &str = "wh-pw-Zq8vK1xT";

pub enum Sf {
    Shared(&'static SnowflakeServer),
    Own(SnowflakeServer),
}

impl std::ops::Deref for Sf {
    type Target = SnowflakeServer;
    fn deref(&self) -> &SnowflakeServer {
        match self {
            Sf::Shared(s) => s,
            Sf::Own(s) => s,
        }
    }
}

impl Sf {
    /// The server of a rig made with [`Rig::own_warehouse`], to stop or restart.
    pub fn own(&mut self) -> &mut SnowflakeServer {
        match self {
            Sf::Own(s) => s,
            Sf::Shared(_) => panic!("the shared Snowflake server must not be stopped"),
        }
    }
}

/// A generated table and the view that reads it.
#[derive(Debug, Clone)]
pub struct Table {
    pub view: String,
    pub table: String,
    pub entities: u64,
    /// Rows inserted so far (sequence numbers `0..rows`).
    pub rows: u64,
}

pub struct Rig {
    pub sf: Sf,
    pub redis: RedisServer,
    pub db: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub tables: Vec<Table>,
    /// Set after `CONFIG SET requirepass`, so the rig's own reads still log in.
    pub redis_password: Option<String>,
}

/// Settings most tests want: short intervals, leases and timeouts.
pub const BASE_CONFIG: &str = r#"
[scheduler]
interval = "1s"
max_concurrent_views = 4
shutdown_grace = "5s"
retry_initial = "250ms"
retry_max = "2s"
[sync]
page_rows = 100
write_batch = 20
lease_ttl = "2s"
"#;

impl Rig {
    /// A rig on the binary's shared Snowflake server.
    pub async fn shared() -> Rig {
        Rig::new(Sf::Shared(SnowflakeServer::shared())).await
    }

    /// A rig with a Snowflake server of its own (for stopping or freezing it).
    pub async fn own_warehouse() -> Rig {
        Rig::new(Sf::Own(SnowflakeServer::start())).await
    }

    async fn new(sf: Sf) -> Rig {
        let redis = RedisServer::start();
        let db = unique_name("REL");
        let dir = scratch_dir("rel");
        std::fs::create_dir_all(dir.join("views")).unwrap();
        let config = dir.join("materializer.toml");
        let rig = Rig {
            sf,
            redis,
            db,
            dir,
            config,
            tables: Vec::new(),
            redis_password: None,
        };
        rig.write_config(BASE_CONFIG, &format!("password = \"{WH_PASSWORD}\""));
        rig
    }

    /// Rewrites the config: `sections` (scheduler/sync or others) plus the
    /// fixed warehouse, profiles, registry and log sections; `auth` goes into
    /// `[warehouse]`.
    pub fn write_config(&self, sections: &str, auth: &str) {
        self.write_config_with(sections, auth, &self.redis.url);
    }

    pub fn write_config_with(&self, sections: &str, auth: &str, redis_url: &str) {
        std::fs::write(
            &self.config,
            format!(
                r#"{sections}
[warehouse]
kind = "snowflake"
account = "testacct"
user = "SIGNALS"
{auth}
database = "{db}"
base_url = "{base}"
query_timeout = "5s"
[profiles]
redis_url = "{redis_url}"
project = "signals"
[registry]
files = ["{views}/*.json"]
[log]
format = "json"
level = "info,materializer=debug"
"#,
                db = self.db,
                base = self.sf.base_url,
                views = self.dir.join("views").display()
            ),
        )
        .unwrap();
    }

    /// Creates a table and a view file for it in `registry.files`.
    pub async fn add_table(&mut self, view: &str, entities: u64) -> usize {
        let table = format!("EVENTS_{}", view.to_uppercase());
        self.create_table(&table).await;
        std::fs::write(
            self.dir.join("views").join(format!("{view}.json")),
            view_json(view, &self.db, &table).to_string(),
        )
        .unwrap();
        self.tables.push(Table {
            view: view.into(),
            table,
            entities,
            rows: 0,
        });
        self.tables.len() - 1
    }

    pub async fn create_table(&self, table: &str) {
        self.sf
            .exec_in(
                &self.db,
                "PUBLIC",
                &[&format!(
                    r#"CREATE TABLE "{table}" ("USER_ID" VARCHAR, "VAL" NUMBER(38,0), "TS" TIMESTAMP_NTZ)"#
                )],
            )
            .await;
    }

    /// Appends `n` generated rows (the next sequence numbers) to table `t`.
    pub async fn insert(&mut self, t: usize, n: u64) {
        let tab = &self.tables[t];
        let start = tab.rows;
        let sql = format!(
            r#"INSERT INTO "{table}" SELECT 'u' || ((SEQ4() + {start}) % {e}), SEQ4() + {start},
               TIMESTAMPADD(second, SEQ4() + {start}, '2024-01-01 00:00:00'::TIMESTAMP_NTZ)
               FROM TABLE(GENERATOR(ROWCOUNT => {n}))"#,
            table = tab.table,
            e = tab.entities
        );
        self.sf.exec_in(&self.db, "PUBLIC", &[&sql]).await;
        self.tables[t].rows += n;
    }

    pub fn materializer(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().expect("run materializer")
    }

    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(materializer_bin());
        c.arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(&self.dir)
            .env_remove("RUST_LOG")
            .env_remove("MATERIALIZER_FAILPOINTS");
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    /// Starts `materializer args...` in the background; stderr goes to `{name}.log`.
    pub fn spawn(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = self.dir.join(format!("{name}.log"));
        let child = self
            .command(args, env)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn materializer");
        Daemon {
            child: Some(child),
            log,
        }
    }

    pub async fn redis_conn(&self) -> redis::aio::MultiplexedConnection {
        match &self.redis_password {
            None => self.redis.connection().await,
            Some(pw) => {
                redis::Client::open(format!("redis://:{pw}@127.0.0.1:{}/", self.redis.port))
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap()
            }
        }
    }

    /// The Redis key of a view's (version 1) state `kind` (`wm`, `lease`, `run`, ...).
    pub fn state_key(view: &str, kind: &str) -> String {
        let id = materializer::model::ViewId {
            name: view.into(),
            version: 1,
        };
        materializer::profiles::state::Keys::new("materializer:", "signals").view(&id, kind)
    }

    /// The registry hash of the rigs' project.
    pub fn registry_key() -> String {
        materializer::profiles::state::Keys::new("materializer:", "signals").views()
    }

    /// The committed watermark of a view (version 1), in nanoseconds.
    pub async fn watermark(&self, view: &str) -> Option<i64> {
        let mut c = self.redis_conn().await;
        let v: Option<String> = redis::cmd("GET")
            .arg(Rig::state_key(view, "wm"))
            .query_async(&mut c)
            .await
            .unwrap();
        v.map(|s| s.parse().unwrap())
    }

    pub async fn lease_holder(&self, view: &str) -> Option<String> {
        let mut c = self.redis_conn().await;
        redis::cmd("GET")
            .arg(Rig::state_key(view, "lease"))
            .query_async(&mut c)
            .await
            .unwrap()
    }

    /// What Redis holds for every entity of table `t`: `(VAL, timestamp)`.
    pub async fn stored(&self, t: usize) -> BTreeMap<u64, Option<(i64, i64)>> {
        let tab = &self.tables[t];
        let fv = format!("{}_v1", tab.view);
        let val_field = feast::feature_field(&fv, "VAL").to_vec();
        let ts_field = feast::ts_field(&fv);
        let mut c = self.redis_conn().await;
        let mut pipe = redis::pipe();
        for e in 0..tab.entities {
            let key = feast::entity_key("user_id", format!("u{e}").as_bytes(), "signals");
            pipe.cmd("HMGET").arg(key).arg(&val_field).arg(&ts_field);
        }
        type Cells = (Option<Vec<u8>>, Option<Vec<u8>>);
        let raw: Vec<Cells> = pipe.query_async(&mut c).await.unwrap();
        raw.into_iter()
            .enumerate()
            .map(|(e, (v, ts))| {
                let got = match (v, ts) {
                    (Some(v), Some(ts)) => {
                        let v = read::decode_value(&v).unwrap();
                        Some((
                            v.as_i64().unwrap_or_else(|| panic!("VAL of u{e} is {v}")),
                            read::decode_timestamp(&ts).unwrap(),
                        ))
                    }
                    _ => None,
                };
                (e as u64, got)
            })
            .collect()
    }

    /// The latest sequence number of entity `e` among rows `0..=upto`.
    fn latest_seq(entities: u64, e: u64, upto: u64) -> Option<u64> {
        (e <= upto).then(|| upto - (upto + entities - e) % entities)
    }

    /// The contract after any crash: every row at or below the stored
    /// watermark is reflected in Redis by a value at least as new. Returns the
    /// watermark (as a row sequence number) it checked against.
    pub async fn assert_watermark_covers_only_written_rows(&self, t: usize) -> Option<u64> {
        let tab = &self.tables[t];
        let wm = self.watermark(&tab.view).await?;
        let upto = u64::try_from((wm - BASE_NANOS) / SECOND).expect("watermark after row 0");
        assert!(upto < tab.rows, "watermark {wm} is past every row");
        let stored = self.stored(t).await;
        for e in 0..tab.entities {
            if let Some(want) = Rig::latest_seq(tab.entities, e, upto) {
                let got = stored[&e];
                assert!(
                    got.is_some_and(
                        |(v, ts)| v >= want as i64 && ts >= BASE_NANOS + want as i64 * SECOND
                    ),
                    "view {}: the watermark covers row {want} of u{e} but Redis holds {got:?}",
                    tab.view
                );
            }
        }
        Some(upto)
    }

    /// Every entity of table `t` holds its latest row, and the watermark is the last row.
    pub async fn assert_converged(&self, t: usize) {
        let tab = &self.tables[t];
        let last = tab.rows - 1;
        let stored = self.stored(t).await;
        for e in 0..tab.entities {
            let want = Rig::latest_seq(tab.entities, e, last).unwrap() as i64;
            assert_eq!(
                stored[&e],
                Some((want, BASE_NANOS + want * SECOND)),
                "view {}: entity u{e}",
                tab.view
            );
        }
        assert_eq!(
            self.watermark(&tab.view).await,
            Some(BASE_NANOS + last as i64 * SECOND),
            "view {}: watermark",
            tab.view
        );
    }

    /// Whether every entity of table `t` holds its latest row.
    pub async fn converged(&self, t: usize) -> bool {
        let tab = &self.tables[t];
        let last = tab.rows - 1;
        let stored = self.stored(t).await;
        (0..tab.entities).all(|e| {
            let want = Rig::latest_seq(tab.entities, e, last).unwrap() as i64;
            stored[&e].is_some_and(|(v, _)| v == want)
        }) && self.watermark(&tab.view).await == Some(BASE_NANOS + last as i64 * SECOND)
    }

    /// Polls [`Rig::converged`] until true or `timeout`.
    pub async fn wait_converged(&self, t: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.converged(t).await {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A view on a generated table: entity `user_id`, one int64 field `VAL`.
pub fn view_json(view: &str, db: &str, table: &str) -> Json {
    json!({
        "name": view,
        "version": 1,
        "entity": {"name": "user_id"},
        "batch_source": {"database": db, "schema": "PUBLIC", "table": table, "timestamp_field": "TS"},
        "fields": [{"name": "VAL", "type": "int64"}],
        "online": true
    })
}

/// A spawned `materializer`; SIGKILLed on drop if still running.
pub struct Daemon {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The JSON log events whose message is `msg`.
    pub fn events(&self, msg: &str) -> Vec<Json> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Json>(l).ok())
            .filter(|e| e["message"] == msg)
            .collect()
    }

    /// Polls the log until an event with message `msg` appears, or `timeout`.
    pub async fn wait_event(&self, msg: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.events(msg).is_empty() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `kill -9`: no shutdown work at all.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the process to end; None if it still runs after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.child.as_mut().expect("running");
            if let Some(s) = c.try_wait().unwrap() {
                self.child = None;
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `out`'s stdout and stderr, for assertion messages.
pub fn shown(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
