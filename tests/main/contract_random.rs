//! The sync contract, proven against a full-refresh oracle.
//!
//! Randomized, seeded histories interleave `sync` runs with every kind of
//! change an attribute table sees in practice: appends, in-place updates,
//! restatements that keep their timestamp, bulk updates stamping more rows
//! than a page with one timestamp, late rows inside the lookback, duplicate
//! rows, NULL entities and timestamps, rows stamped days in the future, and a
//! lagging writer replaying an old snapshot. After every run (and after every
//! replay) the Profiles Store must equal what a full refresh would write: for
//! every entity, the values and timestamp of its latest row in the table as
//! it is *now* (read back with SQL, not from the generator's bookkeeping), and
//! nothing for entities that have no keyed row.
//!
//! Runs go through the real `Runner` in-process and, at random, through the
//! built binary (`materializer sync`), against every SQL warehouse kind
//! ([`Kind::ALL`]: Snowflake, PostgreSQL, Databricks, BigQuery; one body per
//! test, a loop over kinds) and a real Redis. A failure prints the seed, the run, the first
//! diverging entity and the recent history; `MATERIALIZER_CONTRACT_SEED=<seed>`
//! replays exactly that history. `MATERIALIZER_CONTRACT_SEEDS` (default 3) and
//! `MATERIALIZER_CONTRACT_RUNS` (runs per seed, default 14) make longer local
//! runs.
//!
//! Also here: `sync.full_resync_every` end to end, converging a row that
//! arrived later than the lookback (which incremental runs are allowed to miss).
//!
//! The generator keeps the oracle unambiguous (see the README's assumption that
//! an entity's timestamps only move forward): no deletes, no UPDATE moves a
//! timestamp backwards, and two rows of one entity share a timestamp only when
//! they are identical (duplicates) — a restatement UPDATEs its row in place.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use materializer::config::Config;
use materializer::metrics::Metrics;
use materializer::model::View;
use materializer::profiles::{feast, read, read::Profile, ProfileStore, Upsert, WriteSpec};
use materializer::sync::Runner;
use materializer::warehouse::{self, Nanos};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value as Json};
use tokio_util::sync::CancellationToken;

use crate::fixtures::warehouse_world::{Generated, Kind, Lit, Mode, SqlType, WarehouseWorld};
use crate::fixtures::{stdout, Base, ConfigToml};

const SECOND: Nanos = 1_000_000_000;
const MINUTE: Nanos = 60 * SECOND;
const HOUR: Nanos = 60 * MINUTE;
const DAY: Nanos = 24 * HOUR;
/// `sync.lookback` of every world here.
const LOOKBACK: Nanos = 10 * MINUTE;
const TABLE: &str = "CONTRACT";
const VIEW: &str = "contract";
const VIEW_B: &str = "contract_b";
/// `VIEW_B`'s ttl: histories start three days back, so its values are
/// expired until a history catches up with real time (never near the edge).
const VIEW_B_TTL: &str = "P2DT12H";
const PROJECT: &str = "contract";
const STATE_PREFIX: &str = "materializer:";

/// One table, two views of one entity (`VIEW` without ttl, `VIEW_B` with
/// one), one Redis, a config usable both in-process and by the binary.
struct World {
    /// The warehouse, Redis, directory and config file.
    base: Box<dyn WarehouseWorld>,
    /// The config as written, but for the project.
    settings: ConfigToml,
    /// `VIEW` as registered now (its shape changes in some histories).
    view: View,
    /// `VIEW_B`: the same rows, fewer fields, and a ttl.
    view_b: View,
    project: String,
    runner: Runner,
}

impl std::ops::Deref for World {
    type Target = Base;
    fn deref(&self) -> &Base {
        self.base.base()
    }
}

/// The batch source of both views: `source` (the world's table `TABLE`), named.
fn contract_source(mut source: Json) -> Json {
    source["name"] = json!("contract_source");
    source
}

/// `VIEW`'s JSON: fields V, S and, in the wide shape, W.
fn view_a_json(source: &Json, wide: bool) -> Json {
    let mut fields = vec![
        json!({"name": "V", "type": "int64"}),
        json!({"name": "S", "type": "string"}),
    ];
    if wide {
        fields.push(json!({"name": "W", "type": "int32"}));
    }
    json!({
        "name": VIEW, "version": 1, "entity": {"name": "domain_userid"},
        "batch_source": source,
        "fields": fields,
        "online": true
    })
}

impl World {
    /// A world whose runs read pages of `page_rows`; `full_resync_every` as in `[sync]`.
    async fn new(kind: Kind, page_rows: usize, full_resync_every: Option<&str>) -> World {
        let base = kind.world(Mode::Shared).await;
        base.create_table_of(
            TABLE,
            &[
                ("DOMAIN_USERID", SqlType::Text),
                ("V", SqlType::Int),
                ("S", SqlType::Text),
                ("W", SqlType::Int),
                ("UPDATED_AT", SqlType::TimestampNtz),
            ],
        )
        .await;
        let view_b = json!({
            "name": VIEW_B, "version": 1, "entity": {"name": "domain_userid"},
            "batch_source": contract_source(base.source(TABLE, "UPDATED_AT")),
            "fields": [{"name": "W", "type": "int32"}, {"name": "V", "type": "int64"}],
            "online": true, "ttl": VIEW_B_TTL
        });
        std::fs::write(base.views().join("contract_b.json"), view_b.to_string()).unwrap();
        let view_b: View = serde_json::from_value(view_b).unwrap();
        let view: View = serde_json::from_value(view_a_json(
            &contract_source(base.source(TABLE, "UPDATED_AT")),
            true,
        ))
        .unwrap();
        let mut settings = base
            .config()
            .set("sync.lookback", "10m")
            .set("sync.max_future_skew", "5m")
            .set("sync.page_rows", page_rows)
            .set("sync.write_batch", 7)
            .set("profiles.state_prefix", STATE_PREFIX);
        if let Some(every) = full_resync_every {
            settings = settings.set("sync.full_resync_every", every);
        }
        let (store, runner) = World::connect(base.base(), &settings, PROJECT).await;
        let w = World {
            base,
            settings,
            view,
            view_b,
            project: PROJECT.to_string(),
            runner,
        };
        w.write_view_a().await;
        materializer::registry::apply(&store, std::slice::from_ref(&w.view_b))
            .await
            .unwrap();
        w
    }

    /// Writes the config for `project` and builds an in-process runner on it.
    async fn connect(base: &Base, settings: &ConfigToml, project: &str) -> (ProfileStore, Runner) {
        base.write_config(&settings.clone().set("profiles.project", project));
        let loaded = Config::load(&base.config_file, Vec::new()).expect("config loads");
        let store = ProfileStore::connect(&loaded.config.profiles)
            .await
            .expect("redis");
        let runner = Runner {
            warehouse: warehouse::build(&loaded.config.warehouse).unwrap(),
            store: store.clone(),
            config: loaded.config.sync.clone(),
            replica: "contract-test".into(),
            metrics: Arc::new(Metrics::default()),
        };
        (store, runner)
    }

    /// Writes `VIEW`'s file (every binary command applies it) and registers it.
    async fn write_view_a(&self) {
        let json = serde_json::to_value(&self.view).unwrap();
        std::fs::write(self.views().join("contract.json"), json.to_string()).unwrap();
        materializer::registry::apply(self.store(), std::slice::from_ref(&self.view))
            .await
            .unwrap();
    }

    /// Switches `VIEW` between its wide and narrow shape (a reshape).
    async fn reshape(&mut self) {
        let wide = self.view.fields.len() == 2;
        self.view = serde_json::from_value(view_a_json(
            &contract_source(self.base.source(TABLE, "UPDATED_AT")),
            wide,
        ))
        .unwrap();
        self.write_view_a().await;
    }

    /// Deletes `VIEW` and registers it again (resync from scratch).
    async fn delete_and_register_again(&self) {
        materializer::registry::delete(self.store(), &self.view.id(), false)
            .await
            .unwrap()
            .expect("registered");
        self.write_view_a().await;
    }

    /// Moves the world to another Feast project on the same Redis: its state
    /// and profiles start empty, and the next run must fill them.
    async fn change_project(&mut self, project: &str) {
        let (store, runner) = World::connect(self.base.base(), &self.settings, project).await;
        self.runner = runner;
        self.project = project.to_string();
        materializer::registry::apply(&store, &[self.view.clone(), self.view_b.clone()])
            .await
            .unwrap();
    }

    fn store(&self) -> &ProfileStore {
        &self.runner.store
    }

    async fn exec(&self, text: &str) {
        self.base.exec(&[text]).await;
    }

    /// A string literal, or NULL.
    fn text(&self, s: Option<&str>) -> String {
        self.base
            .literal(&s.map_or(Lit::Null, |s| Lit::Text(s.to_string())))
    }

    /// A TIMESTAMP_NTZ literal (the UTC wall time of `ts`), or NULL.
    fn ts(&self, ts: Option<Nanos>) -> String {
        self.base
            .literal(&ts.map_or(Lit::Null, |t| Lit::Nanos(t, SqlType::TimestampNtz)))
    }

    /// One run of `view` in this process (which may be an outdated copy: the
    /// run uses the registered shape); panics unless it succeeded.
    async fn run_view(&self, view: &View) -> materializer::profiles::RunRecord {
        let (rec, outcome) = self.runner.run(view, &CancellationToken::new()).await;
        if let Err(e) = outcome {
            panic!(
                "{:?}: in-process run failed: {e}; record {rec:?}",
                self.base.kind()
            );
        }
        rec
    }

    /// One run of every view in this process; returns `VIEW`'s record.
    async fn run_in_process(&self) -> materializer::profiles::RunRecord {
        let rec = self.run_view(&self.view).await;
        self.run_view(&self.view_b).await;
        rec
    }

    /// One `materializer sync` of the built binary; panics unless it succeeded.
    fn run_binary(&self) -> String {
        self.base.sync()
    }

    /// A `materializer sync` with `change` made while its first page waits in
    /// Redis (or, if it has no page, after it): the run must not commit the
    /// state it started from, and the binary runs once more. Panics unless the
    /// binary succeeded.
    async fn run_binary_while(&mut self, change: Change) -> String {
        use std::io::BufRead;
        let mut child = self
            .command(
                &["sync"],
                &[("MATERIALIZER_FAILPOINTS", "after_page_write=sleep(500)@1")],
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run materializer");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("failpoint: sleeping") {
                    let _ = tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let _ = tokio::task::spawn_blocking(move || {
            rx.recv_timeout(std::time::Duration::from_secs(20))
        })
        .await;
        match change {
            Change::Reshape => self.reshape().await,
            Change::DeleteAndRegister => self.delete_and_register_again().await,
        }
        let out = child.wait_with_output().unwrap();
        let stderr = reader.join().unwrap();
        let printed = stdout(&out);
        // A run that starts again between the delete and the registration
        // finds the view gone and ends superseded: a fast warehouse
        // (PostgreSQL) lands there. The next run restores the contract.
        let only_superseded = printed
            .lines()
            .filter(|l| l.contains("FAILED"))
            .all(|l| l.contains("FAILED (superseded)"));
        assert!(
            out.status.success() || only_superseded,
            "materializer sync failed\nstdout: {printed}\nstderr: {stderr}"
        );
        printed
    }

    /// The full-refresh oracle: the latest keyed row per entity, read from the table now.
    async fn oracle(&self) -> BTreeMap<String, Latest> {
        let rows = self
            .base
            .query(&format!(
                r#"SELECT "DOMAIN_USERID", "UPDATED_AT", "V", "S", "W" FROM "{TABLE}""#
            ))
            .await;
        let mut best: BTreeMap<String, Latest> = BTreeMap::new();
        for r in rows {
            let (Some(entity), Some(ts)) = (r[0].clone(), r[1].as_deref().map(parse_ntz)) else {
                continue;
            };
            let row = Latest {
                ts,
                v: r[2].as_deref().map(|v| v.parse().expect("V is an integer")),
                s: r[3].clone(),
                w: r[4].as_deref().map(|w| w.parse().expect("W is an integer")),
            };
            match best.get(&entity) {
                Some(cur) if cur.ts > row.ts => {}
                Some(cur) if cur.ts == row.ts && *cur != row => panic!(
                    "test bug: ambiguous oracle, entity {entity:?} has two different rows at {}",
                    fmt_ts(ts)
                ),
                _ => {
                    best.insert(entity, row);
                }
            }
        }
        best
    }

    /// Every profile key of the world's project in Redis (the daemon's own keys excluded).
    async fn profile_keys(&self) -> usize {
        let mut conn = self.redis.connection().await;
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.iter()
            .filter(|k| !k.starts_with(STATE_PREFIX.as_bytes()))
            .filter(|k| k.ends_with(self.project.as_bytes()))
            .count()
    }

    /// The first entity whose stored profile (of either view) differs from
    /// the oracle, as a message.
    async fn divergence(
        &self,
        universe: &BTreeSet<String>,
        oracle: &BTreeMap<String, Latest>,
    ) -> Option<String> {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
        for view in [&self.view, &self.view_b] {
            for entity in universe {
                let got = self
                    .store()
                    .read_profile(view, entity)
                    .await
                    .expect("read profile");
                let want = oracle.get(entity).and_then(|l| l.profile(view, now));
                if got != want {
                    return Some(format!(
                        "view {}, entity {entity:?}: Redis holds {} but a full refresh writes {}",
                        view.name,
                        show(&got),
                        show(&want)
                    ));
                }
            }
        }
        // `VIEW` has no ttl, so every keyed entity has a key, and nothing else.
        let keys = self.profile_keys().await;
        (keys != oracle.len()).then(|| {
            format!(
                "Redis holds {keys} profiles, a full refresh writes {}",
                oracle.len()
            )
        })
    }
}

/// A change to the registry made while a run is in flight.
#[derive(Debug, Clone, Copy)]
enum Change {
    Reshape,
    DeleteAndRegister,
}

/// `2024-05-01 10:00:00.123456000` (how the harnesses render TIMESTAMP_NTZ) as nanos.
fn parse_ntz(s: &str) -> Nanos {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("timestamp {s:?}: {e}"))
        .and_utc()
        .timestamp_nanos_opt()
        .expect("in range")
}

fn fmt_ts(n: Nanos) -> String {
    materializer::sync::format_nanos(n)
}

fn show(p: &Option<Profile>) -> String {
    match p {
        None => "nothing".into(),
        Some(p) => format!(
            "{} at {}",
            Json::Object(p.values.iter().cloned().collect()),
            p.ts.map(fmt_ts).unwrap_or_else(|| "no time".into())
        ),
    }
}

/// One keyed row as the oracle sees it.
#[derive(Debug, Clone, PartialEq)]
struct Latest {
    ts: Nanos,
    v: Option<i64>,
    s: Option<String>,
    w: Option<i64>,
}

impl Latest {
    fn w_int32(&self) -> Option<i32> {
        self.w.and_then(|w| i32::try_from(w).ok())
    }

    /// What a full refresh of `view` shows for this row at `now`: its fields
    /// in view order, nothing once the view's ttl has passed.
    fn profile(&self, view: &View, now: Nanos) -> Option<Profile> {
        if read::expired(view, self.ts, now) {
            return None;
        }
        let values = view
            .fields
            .iter()
            .map(|f| {
                let v = match f.name.as_str() {
                    "V" => self.v.map_or(Json::Null, |v| json!(v)),
                    "S" => self.s.clone().map_or(Json::Null, Json::String),
                    // Beyond int32: skipped, so a full refresh stores null.
                    "W" => self.w_int32().map_or(Json::Null, |w| json!(w)),
                    other => panic!("test bug: no column {other}"),
                };
                (f.name.clone(), v)
            })
            .collect();
        Some(Profile {
            ts: Some(self.ts),
            values,
        })
    }
}

/// A row of the table as the generator tracks it (to pick what to change next).
#[derive(Debug, Clone, PartialEq)]
struct Row {
    entity: Option<String>,
    ts: Option<Nanos>,
    v: i64,
    s: String,
}

/// Inserts rows into the table (the generator tracks them separately).
async fn insert(w: &World, rows: &[Row]) {
    let values: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "({}, {}, {}, {}, {})",
                w.text(r.entity.as_deref()),
                r.v,
                w.text(Some(&r.s)),
                w_of(r.v),
                w.ts(r.ts)
            )
        })
        .collect();
    w.exec(&format!(
        r#"INSERT INTO "{TABLE}" ("DOMAIN_USERID", "V", "S", "W", "UPDATED_AT") VALUES {}"#,
        values.join(", ")
    ))
    .await;
}

/// The int32 field `W` of a row with value `v`: mostly small, sometimes at
/// the edge of int32, sometimes beyond it (a skipped field) or NULL.
fn w_of(v: i64) -> String {
    match v % 6 {
        0 => "NULL".into(),
        1 => (i64::from(i32::MAX) + v).to_string(),
        2 => i32::MIN.to_string(),
        _ => (v * 7).to_string(),
    }
}

/// Entity names that stress quoting and string order (prefixes,
/// case, trailing space, multi-byte UTF-8, quotes and backslashes).
const TRICKY: [&str; 12] = [
    "a",
    "a ",
    "A",
    "ab",
    "o'neil",
    "back\\slash",
    "quote\"d",
    "ü-umlaut",
    "Ü",
    "日本",
    "e1",
    "e10",
];

/// A randomized history against one world; see the module doc.
struct History {
    /// The warehouse kind the history runs against, for messages.
    kind: Option<Kind>,
    seed: u64,
    rng: StdRng,
    page_rows: usize,
    /// The generator's copy of the table.
    rows: Vec<Row>,
    /// Every entity ever named (keyed or not): the oracle check covers them all.
    universe: BTreeSet<String>,
    /// Event time of "now" in the history; moves forward, far behind the warehouse's clock.
    clock: Nanos,
    /// The warehouse's CURRENT_TIMESTAMP when the history started.
    warehouse_now: Nanos,
    next_value: i64,
    next_entity: usize,
    /// Oracles of earlier runs, for the lagging-writer replay.
    snapshots: Vec<BTreeMap<String, Latest>>,
    log: Vec<String>,
}

impl History {
    fn new(seed: u64, page_rows: usize, warehouse_now: Nanos) -> History {
        History {
            kind: None,
            seed,
            rng: StdRng::seed_from_u64(seed),
            page_rows,
            rows: Vec::new(),
            universe: BTreeSet::new(),
            // Whole minutes, so equal timestamps across entities are common.
            clock: (warehouse_now - 3 * DAY).div_euclid(MINUTE) * MINUTE,
            warehouse_now,
            next_value: 1,
            next_entity: 0,
            snapshots: Vec::new(),
            log: Vec::new(),
        }
    }

    fn note(&mut self, s: String) {
        self.log.push(s);
    }

    fn value(&mut self) -> (i64, String) {
        let v = self.next_value;
        self.next_value += 1;
        let flavour = ["", " ü", " o'q", " \\n", " \"x\""]
            .choose(&mut self.rng)
            .unwrap();
        (v, format!("v{v}{flavour}"))
    }

    fn new_entity(&mut self) -> String {
        let unused: Vec<&str> = TRICKY
            .iter()
            .copied()
            .filter(|t| !self.universe.contains(*t))
            .collect();
        let e = if !unused.is_empty() && self.rng.gen_bool(0.3) {
            unused.choose(&mut self.rng).unwrap().to_string()
        } else {
            self.next_entity += 1;
            format!("e{}", self.next_entity)
        };
        self.universe.insert(e.clone());
        e
    }

    fn any_entity(&mut self) -> String {
        let known: Vec<String> = self.universe.iter().cloned().collect();
        if known.is_empty() || self.rng.gen_bool(0.3) {
            self.new_entity()
        } else {
            known.choose(&mut self.rng).unwrap().clone()
        }
    }

    /// Moves the event clock forward by 0..=90 s: a step of 0 makes ties.
    fn tick(&mut self) -> Nanos {
        let step = *[0, 0, SECOND, 7 * SECOND, 30 * SECOND, 90 * SECOND]
            .choose(&mut self.rng)
            .unwrap();
        self.clock += step;
        if self.rng.gen_bool(0.3) {
            // Sub-second times, at the microsecond precision the table keeps.
            self.clock += self.rng.gen_range(1..1_000_000) * 1000;
        }
        self.clock
    }

    /// `ts`, moved forward by microseconds until `entity` has no row at it
    /// (two different rows of one entity at one time would make the oracle ambiguous).
    fn free_ts(&self, entity: &str, mut ts: Nanos) -> Nanos {
        while self
            .rows
            .iter()
            .any(|r| r.entity.as_deref() == Some(entity) && r.ts == Some(ts))
        {
            ts += 1000;
        }
        ts
    }

    /// The newest row of every keyed entity, by index into `rows`.
    fn latest_rows(&self) -> Vec<usize> {
        let mut best: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, r) in self.rows.iter().enumerate() {
            if let (Some(e), Some(ts)) = (r.entity.as_deref(), r.ts) {
                if best.get(e).is_none_or(|&j| self.rows[j].ts < Some(ts)) {
                    best.insert(e, i);
                }
            }
        }
        best.into_values().collect()
    }

    /// Inserts rows into the table and tracks them.
    async fn insert(&mut self, w: &World, rows: Vec<Row>) {
        insert(w, &rows).await;
        self.rows.extend(rows);
    }

    /// UPDATEs every copy of the keyed row `(entity, at)` to new values (and time).
    async fn update(&mut self, w: &World, entity: &str, at: Nanos, to: Nanos) {
        let (v, s) = self.value();
        w.exec(&format!(
            r#"UPDATE "{TABLE}" SET "V" = {v}, "S" = {}, "W" = {}, "UPDATED_AT" = {}
               WHERE "DOMAIN_USERID" = {} AND "UPDATED_AT" = {}"#,
            w.text(Some(&s)),
            w_of(v),
            w.ts(Some(to)),
            w.text(Some(entity)),
            w.ts(Some(at))
        ))
        .await;
        for r in &mut self.rows {
            if r.entity.as_deref() == Some(entity) && r.ts == Some(at) {
                (r.v, r.s, r.ts) = (v, s.clone(), Some(to));
            }
        }
    }

    fn fresh_row(&mut self, entity: Option<String>, ts: Option<Nanos>) -> Row {
        let (v, s) = self.value();
        Row { entity, ts, v, s }
    }

    /// Appends 1..=6 rows at the head of time (existing or new entities).
    async fn append(&mut self, w: &World) {
        let n = self.rng.gen_range(1..=6);
        let mut rows = Vec::new();
        for _ in 0..n {
            let e = self.any_entity();
            let t = self.tick();
            let ts = self.free_ts(&e, t);
            let row = self.fresh_row(Some(e), Some(ts));
            // Tracked at once, so the next row of this batch sees its time taken.
            self.rows.push(row.clone());
            rows.push(row);
        }
        self.note(format!("append {n} rows"));
        insert(w, &rows).await;
    }

    /// More rows than a page, all stamped with one time: new rows for a mix of
    /// known and new entities, or an UPDATE of their latest rows in place.
    async fn bulk(&mut self, w: &World) {
        let t = self.tick();
        let n = self.page_rows + self.rng.gen_range(1..=2 * self.page_rows);
        if self.rng.gen_bool(0.5) {
            let mut entities = BTreeSet::new();
            while entities.len() < n {
                let e = self.any_entity();
                entities.insert(e);
            }
            let mut rows = Vec::new();
            for e in entities {
                let ts = self.free_ts(&e, t);
                rows.push(self.fresh_row(Some(e), Some(ts)));
            }
            self.note(format!("bulk insert {n} rows at {}", fmt_ts(t)));
            self.insert(w, rows).await;
        } else {
            let mut latest = self.latest_rows();
            latest.shuffle(&mut self.rng);
            latest.truncate(n);
            let picked: Vec<(String, Nanos)> = latest
                .iter()
                .map(|&i| {
                    (
                        self.rows[i].entity.clone().unwrap(),
                        self.rows[i].ts.unwrap(),
                    )
                })
                // Only forward in time: an UPDATE never moves an entity back.
                .filter(|(_, at)| *at < t)
                .collect();
            if picked.is_empty() {
                return;
            }
            let (v, s) = self.value();
            let cond: Vec<String> = picked
                .iter()
                .map(|(e, at)| {
                    format!(
                        r#"("DOMAIN_USERID" = {} AND "UPDATED_AT" = {})"#,
                        w.text(Some(e)),
                        w.ts(Some(*at))
                    )
                })
                .collect();
            w.exec(&format!(
                r#"UPDATE "{TABLE}" SET "V" = {v}, "S" = {}, "W" = {}, "UPDATED_AT" = {} WHERE {}"#,
                w.text(Some(&s)),
                w_of(v),
                w.ts(Some(t)),
                cond.join(" OR ")
            ))
            .await;
            for (e, at) in &picked {
                for r in &mut self.rows {
                    if r.entity.as_deref() == Some(e) && r.ts == Some(*at) {
                        (r.v, r.s, r.ts) = (v, s.clone(), Some(t));
                    }
                }
            }
            self.note(format!(
                "bulk update of {} latest rows to {}",
                picked.len(),
                fmt_ts(t)
            ));
        }
    }

    /// An entity's latest row gets new values and a newer time, in place.
    async fn update_in_place(&mut self, w: &World) {
        let latest = self.latest_rows();
        let Some(&i) = latest.choose(&mut self.rng) else {
            return;
        };
        let (e, at) = (
            self.rows[i].entity.clone().unwrap(),
            self.rows[i].ts.unwrap(),
        );
        let t = self.tick().max(at + 1000);
        let to = self.free_ts(&e, t);
        self.note(format!("update {e:?}@{} to {}", fmt_ts(at), fmt_ts(to)));
        self.update(w, &e, at, to).await;
    }

    /// A keyed row inside the next run's window gets new values, keeping its time.
    async fn restate(&mut self, w: &World, watermark: Option<Nanos>) {
        let floor = watermark.map(|w| w - LOOKBACK + SECOND);
        let candidates: Vec<(String, Nanos)> = self
            .rows
            .iter()
            .filter_map(|r| Some((r.entity.clone()?, r.ts?)))
            .filter(|(_, ts)| floor.is_none_or(|f| *ts > f))
            .collect();
        let Some((e, at)) = candidates.choose(&mut self.rng).cloned() else {
            return;
        };
        self.note(format!("restate {e:?}@{}", fmt_ts(at)));
        self.update(w, &e, at, at).await;
    }

    /// Rows stamped behind the watermark, but inside the lookback.
    async fn late(&mut self, w: &World, watermark: Option<Nanos>) {
        let Some(wm) = watermark else { return };
        let n = self.rng.gen_range(1..=3);
        let mut rows = Vec::new();
        for _ in 0..n {
            let e = self.any_entity();
            let back = self.rng.gen_range(0..(LOOKBACK - 2 * SECOND) / 1000) * 1000;
            let ts = self.free_ts(&e, wm - back);
            let row = self.fresh_row(Some(e), Some(ts));
            self.rows.push(row.clone());
            rows.push(row);
        }
        self.note(format!("{n} late rows behind the watermark {}", fmt_ts(wm)));
        insert(w, &rows).await;
    }

    /// An exact copy of an existing row.
    async fn duplicate(&mut self, w: &World) {
        let Some(r) = self.rows.choose(&mut self.rng).cloned() else {
            return;
        };
        self.note(format!("duplicate {:?}@{:?}", r.entity, r.ts.map(fmt_ts)));
        self.insert(w, vec![r]).await;
    }

    /// Rows without an entity or without a timestamp: never written.
    async fn unkeyed(&mut self, w: &World) {
        let t = self.tick();
        let e = self.any_entity();
        let rows = vec![self.fresh_row(None, Some(t)), self.fresh_row(Some(e), None)];
        self.note("a NULL-entity and a NULL-timestamp row".into());
        self.insert(w, rows).await;
    }

    /// A row stamped days after the warehouse's now: written, but it must not
    /// hold the watermark (and with it every later row) in the future.
    async fn future(&mut self, w: &World) {
        let e = self.any_entity();
        let ts = self.warehouse_now + self.rng.gen_range(DAY..4 * DAY) / 1000 * 1000;
        let row = self.fresh_row(Some(e.clone()), Some(ts));
        self.note(format!("future row {e:?}@{}", fmt_ts(ts)));
        self.insert(w, vec![row]).await;
    }

    /// The event clock catches up with the warehouse's real time, and a row is
    /// stamped a few minutes ahead of it, inside `max_future_skew`: it counts
    /// towards the watermark only up to the warehouse's now, so on-time rows
    /// stamped before it and delivered after it are still read.
    async fn catch_up_and_skew(&mut self, w: &World) {
        let now = w.runner.warehouse.now().await.unwrap();
        self.clock = self.clock.max(now.div_euclid(SECOND) * SECOND);
        let e = self.any_entity();
        let ts = self.clock + self.rng.gen_range(30..240) * SECOND;
        let ts = self.free_ts(&e, ts);
        let row = self.fresh_row(Some(e.clone()), Some(ts));
        self.note(format!(
            "clock catches up with real time; row {e:?}@{} inside the future skew",
            fmt_ts(ts)
        ));
        self.insert(w, vec![row]).await;
    }

    /// A writer that read the table long ago (a lagging replica, a manual
    /// backfill) writes an old snapshot late: newest-wins must refuse every
    /// value older than the stored one.
    async fn replay_stale(&mut self, w: &World, current: &BTreeMap<String, Latest>) {
        let Some(old) = self.snapshots.choose(&mut self.rng).cloned() else {
            return;
        };
        // Equal times overwrite by design (corrections that keep their time),
        // so only strictly older values are a regression to refuse.
        let stale: Vec<(&String, &Latest)> = old
            .iter()
            .filter(|(e, l)| current.get(*e).is_some_and(|c| l.ts < c.ts))
            .collect();
        if stale.is_empty() {
            return;
        }
        // Encoded for the view's current fields, at its current generation.
        let encoded: Vec<(&str, Nanos, Vec<Vec<u8>>)> = stale
            .iter()
            .map(|(e, l)| {
                let bytes = w
                    .view
                    .fields
                    .iter()
                    .map(|f| {
                        let mut b = Vec::new();
                        match f.name.as_str() {
                            "V" => l.v.into_iter().for_each(|x| feast::push_int64(&mut b, x)),
                            "S" => l.s.iter().for_each(|x| feast::push_string(&mut b, x)),
                            _ => l
                                .w_int32()
                                .into_iter()
                                .for_each(|x| feast::push_int32(&mut b, x)),
                        }
                        b
                    })
                    .collect();
                (e.as_str(), l.ts, bytes)
            })
            .collect();
        let values: Vec<Vec<(u32, &[u8])>> = encoded
            .iter()
            .map(|(_, _, b)| {
                b.iter()
                    .enumerate()
                    .map(|(i, b)| (i as u32, &b[..]))
                    .collect()
            })
            .collect();
        let upserts: Vec<Upsert<'_>> = encoded
            .iter()
            .zip(&values)
            .map(|((e, ts, _), vals)| Upsert {
                entity: e,
                ts: *ts,
                values: vals,
                delete: false,
            })
            .collect();
        let mut spec = WriteSpec::for_view(&w.view);
        spec.generation = w
            .store()
            .run_state(&w.view.id())
            .await
            .unwrap()
            .expect("registered")
            .generation;
        let out = w.store().write(&spec, &upserts, 5).await.unwrap();
        let n = upserts.len();
        self.note(format!("lagging writer replays {n} older values"));
        assert_eq!(
            out.written, 0,
            "seed {}: newest-wins let {} of {n} older values through",
            self.seed, out.written
        );
    }

    fn failure(&self, run: usize, how: &str, what: &str) -> String {
        let recent = &self.log[self.log.len().saturating_sub(12)..];
        format!(
            "sync contract broken: {kind}seed {seed}, after run {run} ({how}): {what}\n\
             recent history (oldest first):\n  {}\n\
             replay with MATERIALIZER_CONTRACT_SEED={seed} cargo test --test main contract_random::randomized",
            recent.join("\n  "),
            seed = self.seed,
            kind = self.kind.map(|k| format!("{k:?}, ")).unwrap_or_default(),
        )
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={s:?} is not a number")),
        Err(_) => default,
    }
}

/// One seeded history: `runs` runs, each after a few random changes, checked
/// against the oracle after every run.
async fn check_history(kind: Kind, seed: u64, runs: usize) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let page_rows = rng.gen_range(3..=9);
    let mut w = World::new(kind, page_rows, None).await;
    let warehouse_now = w.runner.warehouse.now().await.unwrap();
    let mut h = History::new(seed, page_rows, warehouse_now);
    h.kind = Some(kind);
    let future_run = rng.gen_range(1..runs.max(2));
    // Once per history: the event clock catches up with real time and a row
    // is stamped minutes ahead, inside `max_future_skew`; and the world moves
    // to another Feast project.
    let catch_up_run = rng.gen_range(1..runs.max(2));
    let project_run = rng.gen_range(1..runs.max(2));
    // Shapes `VIEW` had before its latest reshape: a scheduler's outdated copy.
    let mut outdated: Option<View> = None;
    for run in 0..runs {
        let watermark = w.store().watermark(&w.view.id()).await.unwrap();
        let ops = if run == 0 { 4 } else { h.rng.gen_range(1..=4) };
        for _ in 0..ops {
            match h.rng.gen_range(0..100) {
                0..=29 => h.append(&w).await,
                30..=41 => h.bulk(&w).await,
                42..=53 => h.update_in_place(&w).await,
                54..=67 => h.restate(&w, watermark).await,
                68..=81 => h.late(&w, watermark).await,
                82..=90 => h.duplicate(&w).await,
                _ => h.unkeyed(&w).await,
            }
        }
        if run == future_run {
            h.future(&w).await;
        }
        if run == catch_up_run {
            h.catch_up_and_skew(&w).await;
        }
        if run == project_run {
            let project = format!("{PROJECT}_moved");
            h.note(format!("project changes to {project}"));
            w.change_project(&project).await;
        }
        // A reshape between runs, applied by hand (the scheduler's copy stays old).
        if run > 0 && h.rng.gen_bool(0.15) {
            h.note("reshape between runs".into());
            outdated = Some(w.view.clone());
            w.reshape().await;
        }
        // At least one run of every history, and a quarter of the rest, use the binary.
        let binary = run == runs / 2 || h.rng.gen_bool(0.25);
        let how = if binary { "binary" } else { "in-process" };
        h.note(format!("--- run {run} ({how})"));
        if binary && h.rng.gen_bool(0.4) {
            let change = if h.rng.gen_bool(0.5) {
                outdated = Some(w.view.clone());
                Change::Reshape
            } else {
                Change::DeleteAndRegister
            };
            h.note(format!("{change:?} while the run is in flight"));
            w.run_binary_while(change).await;
            // The change may have landed after the binary's run of `VIEW`
            // ended: the contract holds after the next completed run.
            h.note("--- and one more run (in-process)".into());
            w.run_in_process().await;
        } else if binary {
            w.run_binary();
        } else if let Some(old) = outdated.take().filter(|_| h.rng.gen_bool(0.5)) {
            h.note("in-process run from an outdated copy of the view".into());
            w.run_view(&old).await;
            w.run_view(&w.view_b).await;
        } else {
            w.run_in_process().await;
        }
        let oracle = w.oracle().await;
        if let Some(d) = w.divergence(&h.universe, &oracle).await {
            panic!("{}", h.failure(run, how, &d));
        }
        let now = w.runner.warehouse.now().await.unwrap();
        for view in [&w.view, &w.view_b] {
            if let Some(wm) = w.store().watermark(&view.id()).await.unwrap() {
                assert!(
                    wm <= now,
                    "{}",
                    h.failure(
                        run,
                        how,
                        &format!(
                            "watermark {} of {} passed the warehouse's now",
                            fmt_ts(wm),
                            view.name
                        )
                    )
                );
            }
        }
        if h.rng.gen_bool(0.3) {
            h.replay_stale(&w, &oracle).await;
            if let Some(d) = w.divergence(&h.universe, &oracle).await {
                panic!("{}", h.failure(run, "after a stale replay", &d));
            }
        }
        h.snapshots.push(oracle);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn randomized_histories_always_match_a_full_refresh() {
    let runs = env_number("MATERIALIZER_CONTRACT_RUNS", 14) as usize;
    let seeds: Vec<u64> = match std::env::var("MATERIALIZER_CONTRACT_SEED") {
        Ok(s) => vec![s
            .trim()
            .parse()
            .expect("MATERIALIZER_CONTRACT_SEED is a number")],
        Err(_) => (0..env_number("MATERIALIZER_CONTRACT_SEEDS", 3))
            .map(|i| 0xC0_47AC7 + i)
            .collect(),
    };
    for kind in Kind::ALL {
        for &seed in &seeds {
            let started = Instant::now();
            check_history(kind, seed, runs).await;
            eprintln!(
                "{kind:?}, seed {seed}: {runs} runs matched the oracle ({:.1?})",
                started.elapsed()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn full_resync_converges_a_row_later_than_the_lookback() {
    for kind in Kind::ALL {
        full_resync_converges(kind).await;
    }
}

async fn full_resync_converges(kind: Kind) {
    let w = World::new(kind, 4, Some("24h")).await;
    let t0 = parse_ntz("2024-05-01 10:00:00");
    let mut h = History::new(1, 4, t0);
    let id = w.view.id();
    let rows = vec![
        h.fresh_row(Some("a".into()), Some(t0)),
        h.fresh_row(Some("b".into()), Some(t0 + HOUR)),
        h.fresh_row(Some("c".into()), Some(t0 + HOUR)),
    ];
    h.universe.extend(["a", "b", "c", "late"].map(String::from));
    h.insert(&w, rows).await;
    w.run_binary();
    let status = |w: &World| w.status()[0].clone();
    assert_eq!(status(&w)["last_run"]["full_read"], json!(true));
    assert_eq!(w.store().watermark(&id).await.unwrap(), Some(t0 + HOUR));

    // 30 minutes behind the watermark, three times the lookback: a new value
    // for `a` (newer than its stored one) and a new entity.
    let late = vec![
        h.fresh_row(Some("a".into()), Some(t0 + 30 * MINUTE)),
        h.fresh_row(Some("late".into()), Some(t0 + 20 * MINUTE)),
    ];
    h.insert(&w, late).await;
    let oracle = w.oracle().await;
    for _ in 0..2 {
        w.run_binary();
        let s = status(&w);
        assert_eq!(s["last_run"]["full_read"], json!(false), "{s}");
        let a = w.store().read_profile(&w.view, "a").await.unwrap().unwrap();
        assert_eq!(
            a.ts,
            Some(t0),
            "incremental runs do not see rows behind the lookback"
        );
        assert_eq!(w.store().read_profile(&w.view, "late").await.unwrap(), None);
    }

    // A day passes (rewinding the record of the last full read stands in for it).
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    w.store()
        .set_last_full_read(&id, now - DAY - MINUTE)
        .await
        .unwrap();
    let out = w.run_binary();
    let s = status(&w);
    assert_eq!(s["last_run"]["full_read"], json!(true), "{out}\n{s}");
    assert_eq!(w.divergence(&h.universe, &oracle).await, None);
    // Nothing newer than the watermark was read, so it stays where it was.
    assert_eq!(w.store().watermark(&id).await.unwrap(), Some(t0 + HOUR));

    // And the next run is incremental again, and still converged.
    w.run_binary();
    assert_eq!(status(&w)["last_run"]["full_read"], json!(false));
    assert_eq!(w.divergence(&h.universe, &oracle).await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_full_resync_a_row_later_than_the_lookback_is_never_read() {
    for kind in Kind::ALL {
        without_full_resync(kind).await;
    }
}

async fn without_full_resync(kind: Kind) {
    // The default: documents the limit the lookback has, and full resync lifts.
    let w = World::new(kind, 4, None).await;
    let t0 = parse_ntz("2024-05-01 10:00:00");
    let mut h = History::new(2, 4, t0);
    let rows = vec![
        h.fresh_row(Some("a".into()), Some(t0)),
        h.fresh_row(Some("b".into()), Some(t0 + HOUR)),
    ];
    h.insert(&w, rows).await;
    w.run_in_process().await;
    let late = vec![h.fresh_row(Some("a".into()), Some(t0 + 30 * MINUTE))];
    h.insert(&w, late).await;
    for _ in 0..3 {
        let rec = w.run_in_process().await;
        assert!(!rec.full_read);
    }
    let a = w.store().read_profile(&w.view, "a").await.unwrap().unwrap();
    assert_eq!(a.ts, Some(t0));
}
