//! The Profiles Store on other kinds of Redis: a Redis Cluster
//! (`redis_type = "redis_cluster"`), Redis behind Sentinel
//! (`redis_type = "redis_sentinel"`) and Valkey's server. The built binary
//! syncs a Parquet table into each, and the store is read back through raw
//! commands, the real Feast SDK configured for the same topology, and the
//! daemon's HTTP API. Failover tests kill or demote the node a run is writing
//! to, and promote a replica that lost the latest writes; every one ends with
//! the store equal to the table.
//!
//! The table has rounds: round `r` stamps entities `u0..u{20+10r}` at `50 -
//! 10r` minutes ago with `VISITS = 1000r + i`, `PLAN = "r{r}"` and
//! `TIER = "t{i%3}"` (a column only the reshaped view reads), so the store after
//! round `r` has a known value for every entity.
//!
//! Assumes `redis-server`, `redis-cli` (tests/support), the `feast` and
//! `valkey` Python environments.

use std::collections::BTreeMap;
use std::time::Duration;

use materializer::profiles::{feast, read};
use serde_json::{json, Value as Json};

use crate::fixtures::{api_comes_up, feast_read, ConfigToml, Daemon, ParquetWorld, Rows};
use crate::support::{free_port, key_slot, redis_cmd, RedisCluster, RedisSentinel, RedisServer};

const VIEW: &str = "store_kinds";
const FV: &str = "store_kinds_v1";
const KEY: &str = "domain_userid";

/// The Profiles Store a test syncs into.
enum Store {
    Single(RedisServer),
    Cluster(RedisCluster),
    Sentinel(RedisSentinel),
}

/// A connection to whatever node(s) hold the data now.
enum Conn {
    Plain(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Conn::Plain(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

impl Store {
    /// Points `[profiles]` at this store: every node or sentinel is named,
    /// the first as `redis_url`, the others as `redis_nodes`.
    fn configure(&self, c: ConfigToml) -> ConfigToml {
        let (kind, urls) = match self {
            Store::Single(r) => return c.set("profiles.redis_url", &r.url),
            Store::Cluster(cl) => ("redis_cluster", cl.urls()),
            Store::Sentinel(s) => ("redis_sentinel", s.sentinel_urls()),
        };
        let c = c
            .set("profiles.redis_type", kind)
            .set("profiles.redis_url", &urls[0])
            .set("profiles.redis_nodes", &urls[1..]);
        match self {
            Store::Sentinel(s) => c.set("profiles.sentinel_master", s.master_name()),
            _ => c,
        }
    }

    /// The `redis*` keys of a `feast_read.py` request for this store.
    fn feast_request(&self) -> Json {
        match self {
            Store::Single(r) => json!({"redis": r.url}),
            Store::Cluster(cl) => json!({"redis": cl.urls(), "redis_type": "redis_cluster"}),
            Store::Sentinel(s) => json!({
                "redis": s.sentinel_urls(),
                "redis_type": "redis_sentinel",
                "sentinel_master": s.master_name(),
            }),
        }
    }

    async fn conn(&self) -> Conn {
        match self {
            Store::Single(r) => Conn::Plain(r.connection().await),
            Store::Cluster(cl) => Conn::Cluster(cl.connection().await),
            Store::Sentinel(s) => Conn::Plain(s.master_connection().await),
        }
    }

    fn cluster(&mut self) -> &mut RedisCluster {
        match self {
            Store::Cluster(c) => c,
            _ => panic!("not a cluster"),
        }
    }

    fn sentinel(&mut self) -> &mut RedisSentinel {
        match self {
            Store::Sentinel(s) => s,
            _ => panic!("not a sentinel setup"),
        }
    }
}

/// Entities of round `r`: `u0..u{20+10r}`.
fn entities(round: i32) -> std::ops::Range<i32> {
    0..20 + 10 * round
}

/// The view; reshaped, it also reads `TIER`.
fn view(reshaped: bool) -> Json {
    let mut fields = vec![
        json!({"name": "VISITS", "type": "int32"}),
        json!({"name": "PLAN", "type": "string"}),
    ];
    if reshaped {
        fields.push(json!({"name": "TIER", "type": "string"}));
    }
    json!({
        "name": VIEW, "version": 1,
        "entity": {"name": KEY},
        "batch_source": {"name": "events", "database": "ANY", "schema": "ANY",
                         "table": "events", "timestamp_field": "updated_at"},
        "fields": fields,
        "online": true
    })
}

/// A Parquet world whose `[profiles]` is `store`, small pages (so a run has
/// several), the view registered from its file, and `more` config on top.
fn world(store: &Store, more: impl FnOnce(ConfigToml) -> ConfigToml) -> ParquetWorld {
    let w = ParquetWorld::new();
    w.write_config(&more(store.configure(config(&w))));
    w.write_view("view.json", &view(false));
    w
}

/// The world's config (its own single Redis) with small pages.
fn config(w: &ParquetWorld) -> ConfigToml {
    w.config()
        .set("sync.lookback", "1h")
        .set("sync.page_rows", 5)
        .set("sync.write_batch", 2)
}

fn write_round(w: &ParquetWorld, round: i32) {
    let ids: Vec<String> = entities(round).map(|i| format!("u{i}")).collect();
    let plan = format!("r{round}");
    let tiers: Vec<String> = entities(round).map(|i| format!("t{}", i % 3)).collect();
    let at = (w.now - (50 - 10 * round as i64) * 60) * 1_000_000;
    let rows = Rows::default()
        .text(KEY, ids.iter().map(|s| Some(s.as_str())))
        .int32("VISITS", entities(round).map(|i| 1000 * round + i))
        .text("PLAN", entities(round).map(|_| Some(plan.as_str())))
        .text("TIER", tiers.iter().map(|s| Some(s.as_str())))
        .utc_micros("UPDATED_AT", entities(round).map(|_| Some(at)));
    w.write_table("EVENTS", &format!("round-{round}.parquet"), rows, None);
}

fn profile_key(entity: &str) -> Vec<u8> {
    feast::entity_key(KEY, entity.as_bytes(), "signals")
}

/// What the store should hold after round `round`: per entity, the decoded
/// `VISITS`, `PLAN` (and `TIER` once reshaped).
fn expected(round: i32, reshaped: bool) -> BTreeMap<String, Vec<Json>> {
    entities(round)
        .map(|i| {
            let mut v = vec![json!(1000 * round + i), json!(format!("r{round}"))];
            if reshaped {
                v.push(json!(format!("t{}", i % 3)));
            }
            (format!("u{i}"), v)
        })
        .collect()
}

/// The entities whose stored values differ from [`expected`], with what is
/// stored (empty when the store has converged); an error when the store
/// does not answer.
async fn differences(store: &Store, round: i32, reshaped: bool) -> Result<Vec<String>, String> {
    let fields: &[&str] = if reshaped {
        &["VISITS", "PLAN", "TIER"]
    } else {
        &["VISITS", "PLAN"]
    };
    let names: Vec<Vec<u8>> = fields
        .iter()
        .map(|f| feast::feature_field(FV, f).to_vec())
        .collect();
    let mut conn = store.conn().await;
    let mut wrong = Vec::new();
    for (entity, want) in expected(round, reshaped) {
        let raw: Vec<Option<Vec<u8>>> = conn
            .query(redis::cmd("HMGET").arg(profile_key(&entity)).arg(&names))
            .await
            .map_err(|e| e.to_string())?;
        let got: Vec<Json> = raw
            .iter()
            .map(|v| {
                v.as_ref()
                    .map_or(Json::Null, |b| read::decode_value(b).unwrap())
            })
            .collect();
        if got != want {
            wrong.push(format!("{entity}: {got:?}, want {want:?}"));
        }
    }
    Ok(wrong)
}

async fn assert_converged(store: &Store, round: i32, reshaped: bool) {
    let wrong = differences(store, round, reshaped).await.unwrap();
    assert!(wrong.is_empty(), "round {round}: {}", wrong.join("\n"));
}

/// Polls until the store holds round `round` (tolerating a store that does not
/// answer for a while); panics with the differences and `daemon`'s log.
async fn wait_converged(
    store: &Store,
    round: i32,
    reshaped: bool,
    timeout: Duration,
    daemon: Option<&Daemon>,
) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let last = differences(store, round, reshaped).await;
        if last.as_ref().is_ok_and(Vec::is_empty) {
            return;
        }
        if std::time::Instant::now() >= deadline {
            panic!(
                "round {round} (reshaped: {reshaped}) not in the store within {timeout:?}: {last:?}\nlog:\n{}",
                daemon.map(|d| d.log_tail(60)).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every entity's whole hash, as bytes.
async fn hashes(conn: &mut Conn, round: i32) -> BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for i in entities(round) {
        let e = format!("u{i}");
        let h = conn
            .query(redis::cmd("HGETALL").arg(profile_key(&e)))
            .await
            .unwrap();
        out.insert(e, h);
    }
    out
}

/// Sync, the same bytes as a single Redis gets, a Feast read, an incremental
/// run, a reshape, and an HTTP read from the daemon, all against `store`.
async fn core_flow(store: Store) {
    let w = world(&store, |c| c);
    write_round(&w, 1);
    w.sync();
    assert_converged(&store, 1, false).await;

    // The same run into a single Redis (the world's own) writes byte for byte
    // the same hashes.
    let ours = hashes(&mut store.conn().await, 1).await;
    w.write_config(&config(&w));
    w.sync();
    let reference = hashes(&mut Conn::Plain(w.redis.connection().await), 1).await;
    assert_eq!(ours, reference, "the hashes differ from a single Redis's");
    w.write_config(&store.configure(config(&w)));

    let mut request = store.feast_request();
    request["project"] = json!("signals");
    request["views"] = json!([view(false)]);
    request["entities"] = json!(["u0", "u17", "u29", "nobody"]);
    let got = feast_read(&request, &w.dir.join("feast_request.json"));
    assert_eq!(got["VISITS"], json!([1000, 1017, 1029, null]), "{got}");
    assert_eq!(got["PLAN"], json!(["r1", "r1", "r1", null]), "{got}");

    // Incremental: round 2 updates every entity and adds ten.
    write_round(&w, 2);
    w.sync();
    assert_converged(&store, 2, false).await;

    // A reshape: every entity gains TIER, nothing else changes.
    w.write_view("view.json", &view(true));
    w.sync();
    assert_converged(&store, 2, true).await;

    // The daemon's HTTP API reads the same store.
    let port = free_port();
    w.write_config(
        &store.configure(
            w.config()
                .set("scheduler.interval", "1h")
                .set("api.listen", format!("127.0.0.1:{port}")),
        ),
    );
    let daemon = w.spawn("daemon", &["run"], &[]);
    let base = format!("http://127.0.0.1:{port}");
    assert!(api_comes_up(&base).await, "{}", daemon.log_tail(40));
    let resp = reqwest::Client::new()
        .post(format!("{base}/api/v1/get-online-attributes"))
        .json(&json!({
            "attribute_keys": {KEY: ["u0", "u35", "nobody"]},
            "attributes": [format!("{FV}:VISITS"), format!("{FV}:TIER")],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got: Json = resp.json().await.unwrap();
    assert_eq!(
        got,
        json!({KEY: ["u0", "u35", "nobody"], "VISITS": [2000, 2035, null], "TIER": ["t0", "t2", null]})
    );
    drop(daemon);

    // Erasure and purge reach every primary: u0 and u35 keep only their
    // tombstone; after `delete --purge` no hash holds anything of the view.
    let out = w.materializer(&["erase", "--entity", KEY, "u0", "u35"], &[]);
    assert!(out.status.success(), "{}", crate::fixtures::shown(&out));
    let only = |h: &BTreeMap<Vec<u8>, Vec<u8>>| h.keys().cloned().collect::<Vec<_>>();
    let after = hashes(&mut store.conn().await, 2).await;
    assert_eq!(only(&after["u0"]), vec![b"_erased".to_vec()]);
    assert_eq!(only(&after["u35"]), vec![b"_erased".to_vec()]);
    assert!(after["u1"].len() > 1, "{:?}", after["u1"]);
    std::fs::remove_file(w.views().join("view.json")).unwrap();
    let out = w.materializer(&["delete", "--view", VIEW, "--purge"], &[]);
    assert!(out.status.success(), "{}", crate::fixtures::shown(&out));
    for (entity, h) in hashes(&mut store.conn().await, 2).await {
        let left: Vec<Vec<u8>> = only(&h).into_iter().filter(|f| f != b"_erased").collect();
        assert!(left.is_empty(), "{entity} kept {left:?} after the purge");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_syncs_and_reads_back_through_feast_and_the_api() {
    let cluster = RedisCluster::start();
    // The profiles really are spread: the entities' slots span every primary.
    let map = cluster.primary_map();
    let owners: std::collections::BTreeSet<u16> = entities(1)
        .map(|i| cluster.primary_for(&profile_key(&format!("u{i}"))))
        .collect();
    assert_eq!(owners.len(), map.len(), "{map:?}");
    core_flow(Store::Cluster(cluster)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_sentinel_syncs_and_reads_back_through_feast_and_the_api() {
    core_flow(Store::Sentinel(RedisSentinel::start())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn valkey_syncs_and_reads_back_through_feast_and_the_api() {
    let valkey = RedisServer::start_valkey();
    let mut conn = valkey.connection().await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(info.contains("valkey_version:8."), "{info}");
    core_flow(Store::Single(valkey)).await;
}

/// What happens to the store while a run is mid-way.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILL of the cluster primary that serves the daemon's state slot
    /// (the run's commit must reach its promoted replica).
    KillClusterPrimary,
    /// `SENTINEL FAILOVER`: the master becomes a replica, the replica master.
    SentinelFailover,
    /// SIGKILL of the master; the sentinels promote the replica.
    KillSentinelMaster,
}

/// Syncs round 1, then starts round 2's `sync` held after every page, and
/// returns it once some but not all of round 2 is in the store.
async fn held_round_2(store: &Store, w: &ParquetWorld) -> Daemon {
    write_round(w, 1);
    w.sync();
    assert_converged(store, 1, false).await;

    write_round(w, 2);
    let mut run = w.spawn(
        "interrupted",
        &["sync"],
        &[("MATERIALIZER_FAILPOINTS", "after_page_write=sleep(400)")],
    );
    let total = entities(2).len();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let wrong = differences(store, 2, false).await.unwrap().len();
        if wrong < total {
            assert!(
                wrong > 0,
                "the run finished before the fault: no failpoints (cargo test --features failpoints)?"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && run.is_running(),
            "round 2 never started; log:\n{}",
            run.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run
}

/// Round 1 synced; round 2's run is held after every page, and `fault` hits
/// once some but not all of round 2 is in the store. That run may fail; the
/// next one must leave every entity at round 2.
async fn failover_mid_run(mut store: Store, fault: Fault) {
    // A run that fails with its node may leave its lease on the promoted
    // replica; the next run waits it out, so keep it short.
    let w = world(&store, |c| c.set("sync.lease_ttl", "3s"));
    let mut run = held_round_2(&store, &w).await;
    match fault {
        Fault::KillClusterPrimary => {
            let cluster = store.cluster();
            let port = cluster.primary_for(b"materializer:{signals}:views");
            cluster.kill_primary(port);
        }
        Fault::SentinelFailover => {
            store.sentinel().failover();
        }
        Fault::KillSentinelMaster => {
            store.sentinel().kill_master();
        }
    }
    let status = run.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some(),
        "the interrupted run hangs; log:\n{}",
        run.log_tail(40)
    );
    eprintln!("{fault:?}: the interrupted run ended {status:?}");

    let out = w.sync();
    assert!(out.contains(" ok "), "{out}");
    assert_converged(&store, 2, false).await;
    let status = w.status();
    assert_eq!(status[0]["last_run"]["status"], json!("ok"), "{status}");
}

/// A resharding (slots and their keys move to another primary) and a
/// `SCRIPT FLUSH` on every primary while a run writes: the run itself
/// follows the moved slots and reloads the script, and completes.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_resharding_and_a_script_flush_mid_run_do_not_fail_the_run() {
    let store = Store::Cluster(RedisCluster::start());
    let w = world(&store, |c| c);
    let mut run = held_round_2(&store, &w).await;
    let cluster = match &store {
        Store::Cluster(c) => c,
        _ => unreachable!(),
    };
    for port in cluster.primaries() {
        redis_cmd(port, &["SCRIPT", "FLUSH"]).unwrap();
    }
    let map = cluster.primary_map();
    let out = std::process::Command::new("redis-cli")
        .args([
            "--cluster",
            "reshard",
            &format!("127.0.0.1:{}", map[0].port),
        ])
        .args(["--cluster-from", &map[0].id, "--cluster-to", &map[1].id])
        .args(["--cluster-slots", "3000", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        cluster.primary_map()[0]
            .slots
            .iter()
            .map(|(a, b)| b - a + 1)
            .sum::<u16>()
            < 5461 - 2000
    );
    let status = run.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "the run failed ({status:?}); log:\n{}",
        run.log_tail(40)
    );
    assert_converged(&store, 2, false).await;
    let status = w.status();
    assert_eq!(status[0]["last_run"]["status"], json!("ok"), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_primary_killed_mid_run_the_next_run_converges() {
    failover_mid_run(
        Store::Cluster(RedisCluster::start()),
        Fault::KillClusterPrimary,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sentinel_failover_and_killed_master_mid_run_the_next_run_converges() {
    for fault in [Fault::SentinelFailover, Fault::KillSentinelMaster] {
        failover_mid_run(Store::Sentinel(RedisSentinel::start()), fault).await;
    }
}

/// The daemon syncs round 1; the replica is cut off; round 2 and a reshape
/// (over the API, so the daemon has seen the newer registry) land on the
/// master only; the master dies and the stale replica is promoted. The
/// daemon must notice the registry went back, restore its views and resync:
/// the new master ends at round 2, reshaped.
#[tokio::test(flavor = "multi_thread")]
async fn sentinel_promoting_a_replica_that_lost_the_latest_writes_resyncs_to_the_table() {
    let mut store = Store::Sentinel(RedisSentinel::start());
    let port = free_port();
    let w = world(&store, |c| {
        c.set("scheduler.interval", "1s")
            .set("api.listen", format!("127.0.0.1:{port}"))
            .set("log.format", "json")
    });
    write_round(&w, 1);
    let daemon = w.spawn("daemon", &["run"], &[]);
    let base = format!("http://127.0.0.1:{port}");
    assert!(api_comes_up(&base).await, "{}", daemon.log_tail(40));
    wait_converged(&store, 1, false, Duration::from_secs(30), Some(&daemon)).await;

    let stale = store.sentinel().detach_replica();
    write_round(&w, 2);
    let resp = reqwest::Client::new()
        .put(format!("{base}/api/v1/registry/views/{VIEW}/versions/1"))
        .json(&view(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    // Sentinel turns a detached replica back into a replica (and resyncs it)
    // no sooner than 8 s after it notices; fail over well before that.
    wait_converged(&store, 2, true, Duration::from_secs(6), Some(&daemon)).await;
    let promoted = store.sentinel().kill_master();
    assert_eq!(promoted, stale, "the sentinels promoted another node");

    wait_converged(&store, 2, true, Duration::from_secs(60), Some(&daemon)).await;
    assert!(
        daemon.log_text().contains("registry went back in time"),
        "the daemon did not notice the lost registry change; log:\n{}",
        daemon.log_tail(60)
    );
}

/// The topologies themselves, without the daemon: a cluster spreads keys over
/// its primaries and survives a killed primary with its data; Sentinel moves
/// the master and the data follows; Valkey answers as Valkey.
#[tokio::test(flavor = "multi_thread")]
async fn topologies_start_fail_over_and_keep_their_data() {
    let mut cluster = RedisCluster::start();
    assert_eq!(cluster.primaries().len(), 3);
    assert_eq!(cluster.urls().len(), 6);
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    let mut conn = Conn::Cluster(cluster.connection().await);
    for k in &keys {
        let _: () = conn.query(redis::cmd("SET").arg(k).arg(k)).await.unwrap();
    }
    let victim = cluster.primary_for(keys[0].as_bytes());
    cluster.wait_replicated();
    let promoted = cluster.kill_primary(victim);
    assert!(!cluster.primaries().contains(&victim));
    assert!(cluster.primaries().contains(&promoted));
    let mut conn = Conn::Cluster(cluster.connection().await);
    for k in &keys {
        let v: Option<String> = conn.query(redis::cmd("GET").arg(k)).await.unwrap();
        assert_eq!(v.as_deref(), Some(k.as_str()));
    }
    assert_eq!(
        key_slot(b"{user1000}.following"),
        key_slot(b"{user1000}.followers")
    );
    assert_eq!(key_slot(b"123456789"), 12739);

    let mut sentinel = RedisSentinel::start();
    let first = sentinel.master_port();
    let mut m = sentinel.master_connection().await;
    let _: () = redis::cmd("SET")
        .arg("x")
        .arg(1)
        .query_async(&mut m)
        .await
        .unwrap();
    sentinel.wait_replicated();
    let second = sentinel.failover();
    assert_ne!(first, second);
    let third = sentinel.kill_master();
    assert_eq!(third, first);
    let mut m = sentinel.master_connection().await;
    let x: i64 = redis::cmd("GET")
        .arg("x")
        .query_async(&mut m)
        .await
        .unwrap();
    assert_eq!(x, 1);
}
