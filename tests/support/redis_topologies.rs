//! Redis topologies beyond one server: [`RedisCluster`] (3 primaries, a
//! replica each) and [`RedisSentinel`] (a master, a replica, 3 sentinels),
//! real `redis-server` processes on free loopback ports, SIGKILLed on drop,
//! logs under `CARGO_TARGET_TMPDIR`. Both have fault helpers that return only
//! once the topology has settled again, so a test can act right after them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, kill_and_reap, log_tail, redis_server_bin, scratch_dir, spawn_server};

/// How long a topology may take to form or to heal after a fault before a
/// helper gives up (formation takes 2 to 5 s, a failover 1 to 3 s).
const SETTLE: Duration = Duration::from_secs(30);

/// One server process of a topology.
struct Node {
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Node {
    /// Starts `redis-server` with `args` on a free port (retried: the port
    /// may be taken between `free_port` and the bind); `args` may name the
    /// port through `{port}`.
    fn start(dir: &Path, name: &str, args: &[String]) -> Node {
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let log = dir.join(format!("{name}-{port}.log"));
            let args: Vec<OsString> = args
                .iter()
                .map(|a| a.replace("{port}", &port.to_string()).into())
                .collect();
            match spawn_server(&redis_server_bin(), port, dir, &log, &args) {
                Ok(child) => {
                    return Node {
                        port,
                        child: Some(child),
                        log,
                    }
                }
                Err(e) => last_err = e,
            }
        }
        panic!("could not start {name}: {last_err}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_ref() {
            // A paused server ignores nothing but SIGKILL; resume it anyway so
            // the reaping below never waits on a stopped process.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .stderr(Stdio::null())
                .status();
        }
        self.kill();
    }
}

/// Runs one command on `127.0.0.1:port` over a fresh connection; the reply
/// as text (status, bulk and verbatim strings; arrays flattened line by line).
pub fn redis_cmd(port: u16, args: &[&str]) -> Result<String, String> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let value: redis::Value = cmd.query(&mut conn).map_err(|e| e.to_string())?;
    Ok(flatten(&value))
}

fn flatten(v: &redis::Value) -> String {
    use redis::Value as V;
    match v {
        V::Nil => String::new(),
        V::Int(i) => i.to_string(),
        V::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        V::SimpleString(s) => s.clone(),
        V::Okay => "OK".into(),
        V::VerbatimString { text, .. } => text.clone(),
        V::Array(items) | V::Set(items) | V::Push { data: items, .. } => {
            items.iter().map(flatten).collect::<Vec<_>>().join("\n")
        }
        other => format!("{other:?}"),
    }
}

/// True when the node on `port` is a primary whose every replica has
/// acknowledged its whole replication stream (replication is asynchronous,
/// so a test that kills a primary and expects its data waits for this first).
fn replicas_caught_up(port: u16) -> bool {
    let Ok(info) = redis_cmd(port, &["INFO", "replication"]) else {
        return false;
    };
    if info_field(&info, "role").as_deref() != Some("master") {
        return true;
    }
    let Some(offset) = info_field(&info, "master_repl_offset") else {
        return false;
    };
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains(":ip="))
        .all(|l| l.split(',').any(|kv| kv == format!("offset={offset}")))
}

/// `field:value` of an `INFO`-style reply.
fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool, logs: &[&Path]) {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() >= deadline {
            let tails: Vec<String> = logs
                .iter()
                .map(|l| format!("--- {}\n{}", l.display(), log_tail(l)))
                .collect();
            panic!("{what}: not within {timeout:?}\n{}", tails.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every server answers with one connection and sends a full copy at once
/// (no 5 s wait for more replicas), so replicas are in sync a moment after
/// they attach, also after a failover.
const DATA_NODE_ARGS: [&str; 2] = ["--repl-diskless-sync-delay", "0"];

// ---------------------------------------------------------------------------
// Cluster

/// A primary of a [`RedisCluster`] as `CLUSTER NODES` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Primary {
    pub port: u16,
    pub id: String,
    /// Inclusive slot ranges.
    pub slots: Vec<(u16, u16)>,
}

/// A Redis Cluster of 3 primaries with a replica each, made by
/// `redis-cli --cluster create`; every node has `cluster-node-timeout 1000`,
/// so a killed primary is replaced within 1 to 3 s.
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts 6 nodes, joins them, and waits until every node says
    /// `cluster_state:ok` and every replica's link is up (2 to 5 s).
    pub fn start() -> RedisCluster {
        let dir = scratch_dir("cluster");
        let nodes: Vec<Node> = (0..6)
            .map(|i| {
                let mut args: Vec<String> = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "1000",
                    // A replica may take over however long its link was down:
                    // a test kills primaries at arbitrary moments.
                    "--cluster-replica-validity-factor",
                    "0",
                ]
                .iter()
                .chain(&DATA_NODE_ARGS)
                .map(|s| s.to_string())
                .collect();
                args.push("--cluster-config-file".into());
                args.push(
                    dir.join(format!("nodes-{i}-{{port}}.conf"))
                        .display()
                        .to_string(),
                );
                Node::start(&dir, &format!("node{i}"), &args)
            })
            .collect();
        let cluster = RedisCluster { dir, nodes };
        let log = cluster.dir.join("cluster-create.log");
        let out = Command::new(redis_cli_bin())
            .arg("--cluster")
            .arg("create")
            .args(
                cluster
                    .nodes
                    .iter()
                    .map(|n| format!("127.0.0.1:{}", n.port)),
            )
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        std::fs::write(&log, [&out.stdout[..], &out.stderr[..]].concat()).unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}",
            log_tail(&log)
        );
        cluster.wait_healthy("the new cluster");
        cluster
    }

    /// `redis://127.0.0.1:{port}/` of the first node (a primary at start).
    pub fn seed_url(&self) -> String {
        self.nodes[0].url()
    }

    /// The URLs of every node started, dead ones included (as a client's
    /// seed list would be).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The ports of the current primaries.
    pub fn primaries(&self) -> Vec<u16> {
        self.primary_map().into_iter().map(|p| p.port).collect()
    }

    /// The current primaries with their slots, as a live node sees them.
    pub fn primary_map(&self) -> Vec<Primary> {
        let text = self
            .live_ports()
            .into_iter()
            .find_map(|p| redis_cmd(p, &["CLUSTER", "NODES"]).ok())
            .expect("no live cluster node answers");
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let flags = f.get(2)?;
                if !flags.split(',').any(|x| x == "master") || flags.contains("fail") {
                    return None;
                }
                let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
                let slots = f[8..]
                    .iter()
                    .filter(|s| !s.starts_with('['))
                    .filter_map(|s| match s.split_once('-') {
                        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                        None => s.parse().ok().map(|x| (x, x)),
                    })
                    .collect::<Vec<_>>();
                (!slots.is_empty()).then(|| Primary {
                    port,
                    id: f[0].to_string(),
                    slots,
                })
            })
            .collect()
    }

    /// The port of the primary serving `key`'s slot now.
    pub fn primary_for(&self, key: &[u8]) -> u16 {
        let slot = key_slot(key);
        self.primary_map()
            .into_iter()
            .find(|p| p.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .unwrap_or_else(|| panic!("no primary serves slot {slot}"))
            .port
    }

    /// SIGKILLs the primary on `port` and waits until one of its replicas
    /// serves its slots and every live node says `cluster_state:ok`; returns
    /// the promoted replica's port.
    pub fn kill_primary(&mut self, port: u16) -> u16 {
        let old = self
            .primary_map()
            .into_iter()
            .find(|p| p.port == port)
            .unwrap_or_else(|| panic!("{port} is not a primary"));
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
            .kill();
        let mut promoted = None;
        let logs = self.logs();
        let logs: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
        wait_until(
            &format!("a replica takes over from killed primary {port}"),
            SETTLE,
            || {
                promoted = self
                    .primary_map()
                    .into_iter()
                    .find(|p| p.port != port && p.slots == old.slots)
                    .map(|p| p.port);
                promoted.is_some() && self.all_ok()
            },
            &logs,
        );
        promoted.unwrap()
    }

    /// Waits until every replica has every write its primary took so far.
    pub fn wait_replicated(&self) {
        let logs = self.logs();
        let logs: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
        wait_until(
            "the replicas catch up",
            SETTLE,
            || self.live_ports().into_iter().all(replicas_caught_up),
            &logs,
        );
    }

    /// An async cluster connection over every live node.
    pub async fn connection(&self) -> redis::cluster_async::ClusterConnection {
        let urls: Vec<String> = self
            .live_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect();
        redis::cluster::ClusterClient::new(urls)
            .expect("cluster client")
            .get_async_connection()
            .await
            .expect("connect to the cluster")
    }

    fn live_ports(&self) -> Vec<u16> {
        // Nodes die only through `kill_primary`, which takes their child.
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    fn logs(&self) -> Vec<PathBuf> {
        self.nodes.iter().map(|n| n.log.clone()).collect()
    }

    fn all_ok(&self) -> bool {
        self.live_ports().into_iter().all(|p| {
            redis_cmd(p, &["CLUSTER", "INFO"])
                .is_ok_and(|i| info_field(&i, "cluster_state").as_deref() == Some("ok"))
        })
    }

    fn wait_healthy(&self, what: &str) {
        let logs = self.logs();
        let logs: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
        wait_until(
            &format!("{what}: cluster_state:ok everywhere, replicas in sync"),
            SETTLE,
            || {
                self.all_ok()
                    && self.live_ports().into_iter().all(|p| {
                        redis_cmd(p, &["INFO", "replication"]).is_ok_and(|i| {
                            match info_field(&i, "role").as_deref() {
                                Some("slave") => {
                                    info_field(&i, "master_link_status").as_deref() == Some("up")
                                        && info_field(&i, "master_sync_in_progress").as_deref()
                                            == Some("0")
                                }
                                Some("master") => {
                                    info_field(&i, "connected_slaves").as_deref() == Some("1")
                                }
                                _ => false,
                            }
                        })
                    })
            },
            &logs,
        );
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn redis_cli_bin() -> PathBuf {
    super::find_on_path("redis-cli").unwrap_or_else(|| {
        panic!("redis-cli not found on PATH: run scripts/ensure-deps.sh to install redis-tools")
    })
}

/// Redis Cluster's slot of `key`: CRC16 (XMODEM) of the key, or of its hash
/// tag (the first non-empty `{...}`), modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &b in hashed {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

// ---------------------------------------------------------------------------
// Sentinel

/// A master, one replica (`replicaof`) and 3 sentinels monitoring them as
/// [`RedisSentinel::MASTER`] with quorum 2, `down-after-milliseconds 1000`
/// and `failover-timeout 3000`.
pub struct RedisSentinel {
    dir: PathBuf,
    /// The two data nodes; which one is master changes with failovers.
    data: Vec<Node>,
    sentinels: Vec<Node>,
}

impl RedisSentinel {
    pub const MASTER: &'static str = "mymaster";

    /// Starts the master, its replica and the sentinels; waits until the
    /// replica is in sync and every sentinel sees the replica and the other
    /// two sentinels (2 to 3 s: sentinels announce themselves every 2 s).
    pub fn start() -> RedisSentinel {
        let dir = scratch_dir("sentinel");
        let data_args: Vec<String> = DATA_NODE_ARGS.iter().map(|s| s.to_string()).collect();
        let master = Node::start(&dir, "master", &data_args);
        let replica_args: Vec<String> = data_args
            .iter()
            .cloned()
            .chain([
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port.to_string(),
            ])
            .collect();
        let replica = Node::start(&dir, "replica", &replica_args);
        let sentinels = (0..3)
            .map(|i| {
                // Sentinel rewrites its config file (discovered peers, epochs),
                // so each gets its own writable copy.
                let conf = dir.join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "sentinel monitor {m} 127.0.0.1 {port} 2\n\
                         sentinel down-after-milliseconds {m} 1000\n\
                         sentinel failover-timeout {m} 3000\n",
                        m = Self::MASTER,
                        port = master.port
                    ),
                )
                .unwrap();
                Node::start(
                    &dir,
                    &format!("sentinel{i}"),
                    &[conf.display().to_string(), "--sentinel".into()],
                )
            })
            .collect();
        let s = RedisSentinel {
            dir,
            data: vec![master, replica],
            sentinels,
        };
        s.wait_until("the sentinels see the replica and each other", || {
            s.sentinels.iter().all(|n| {
                redis_cmd(n.port, &["SENTINEL", "MASTER", Self::MASTER]).is_ok_and(|r| {
                    let kv: Vec<&str> = r.lines().collect();
                    let get = |k: &str| {
                        kv.chunks(2)
                            .find(|c| c[0] == k)
                            .and_then(|c| c.get(1).copied())
                    };
                    get("num-slaves") == Some("1") && get("num-other-sentinels") == Some("2")
                })
            }) && s.replica_in_sync()
        });
        s
    }

    /// `redis://127.0.0.1:{port}` of each sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(Node::url).collect()
    }

    pub fn master_name(&self) -> &'static str {
        Self::MASTER
    }

    /// The master's port as the first live sentinel reports it.
    pub fn master_port(&self) -> u16 {
        self.reported_masters()
            .into_iter()
            .flatten()
            .next()
            .expect("no sentinel reports a master")
    }

    /// A connection to the current master.
    pub async fn master_connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.master_port()))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the master")
    }

    /// `SENTINEL FAILOVER`, then waits until every sentinel reports the
    /// replica as master and it takes writes; the old master is made a replica
    /// of the new one at once (sentinel would do so only 8 to 18 s later, and
    /// meanwhile it would take writes that the demotion then throws away).
    /// Returns the new master's port.
    pub fn failover(&mut self) -> u16 {
        let old = self.master_port();
        redis_cmd(
            self.sentinels[0].port,
            &["SENTINEL", "FAILOVER", Self::MASTER],
        )
        .unwrap_or_else(|e| panic!("SENTINEL FAILOVER: {e}"));
        let new = self.wait_new_master(old);
        redis_cmd(old, &["REPLICAOF", "127.0.0.1", &new.to_string()])
            .unwrap_or_else(|e| panic!("REPLICAOF on the old master: {e}"));
        self.wait_until("the old master follows the new one", || {
            self.replica_in_sync()
        });
        new
    }

    /// SIGKILLs the master and waits until the sentinels have promoted the
    /// replica and it takes writes (2 to 4 s). The old master stays dead.
    pub fn kill_master(&mut self) -> u16 {
        let old = self.master_port();
        self.data
            .iter_mut()
            .find(|n| n.port == old)
            .expect("the master is ours")
            .kill();
        self.wait_new_master(old)
    }

    /// `REPLICAOF NO ONE` on the replica: it keeps what it has and gets
    /// nothing more, while sentinels still count it as the master's replica,
    /// so a failover soon after promotes a node that lost the latest writes.
    /// (Sentinel turns it back into a replica 8 to 18 s later.)
    pub fn detach_replica(&self) -> u16 {
        let master = self.master_port();
        let replica = self
            .data
            .iter()
            .find(|n| n.port != master && n.child.is_some())
            .expect("a live replica")
            .port;
        redis_cmd(replica, &["REPLICAOF", "NO", "ONE"])
            .unwrap_or_else(|e| panic!("REPLICAOF NO ONE: {e}"));
        replica
    }

    /// Waits until the replica has every write the master took so far.
    pub fn wait_replicated(&self) {
        self.wait_until("the replica catches up", || {
            replicas_caught_up(self.master_port())
        });
    }

    /// Each live sentinel's answer to `get-master-addr-by-name` (None when it
    /// does not answer).
    fn reported_masters(&self) -> Vec<Option<u16>> {
        self.sentinels
            .iter()
            .map(|n| {
                redis_cmd(
                    n.port,
                    &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", Self::MASTER],
                )
                .ok()
                .and_then(|r| r.lines().nth(1).and_then(|p| p.parse().ok()))
            })
            .collect()
    }

    fn wait_new_master(&self, old: u16) -> u16 {
        let mut new = 0;
        self.wait_until(&format!("the sentinels promote a replica of {old}"), || {
            let all = self.reported_masters();
            match all[0] {
                Some(p) if p != old && all.iter().all(|x| *x == Some(p)) => {
                    new = p;
                    redis_cmd(p, &["SET", "__topology_probe", "1"]).is_ok()
                        && redis_cmd(p, &["DEL", "__topology_probe"]).is_ok()
                }
                _ => false,
            }
        });
        new
    }

    /// Every live data node other than the master is a replica of it with
    /// its link up and no sync in progress.
    fn replica_in_sync(&self) -> bool {
        let Some(Some(master)) = self.reported_masters().first().copied() else {
            return false;
        };
        self.data
            .iter()
            .filter(|n| n.child.is_some() && n.port != master)
            .all(|n| {
                redis_cmd(n.port, &["INFO", "replication"]).is_ok_and(|i| {
                    info_field(&i, "role").as_deref() == Some("slave")
                        && info_field(&i, "master_port").as_deref() == Some(&master.to_string())
                        && info_field(&i, "master_link_status").as_deref() == Some("up")
                        && info_field(&i, "master_sync_in_progress").as_deref() == Some("0")
                })
            })
    }

    fn wait_until(&self, what: &str, check: impl FnMut() -> bool) {
        let logs: Vec<&Path> = self
            .data
            .iter()
            .chain(&self.sentinels)
            .map(|n| n.log.as_path())
            .collect();
        wait_until(what, SETTLE, check, &logs);
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        self.sentinels.clear();
        self.data.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
