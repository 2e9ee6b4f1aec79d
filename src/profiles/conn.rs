//! One connection type for the three kinds of Redis deployment the Profiles
//! Store runs on (Feast's `redis_type`): one Redis, Redis Cluster, and Redis
//! behind Sentinel.
//!
//! Promises:
//! - [`Conn`] is a multiplexed connection (clones share it) that runs any
//!   command or single-slot pipeline on each kind: on a cluster a command goes
//!   to the primary of its key's slot, and `MOVED`/`ASK` redirects, resharding
//!   and failovers are followed (redis-rs's cluster client); behind Sentinel a
//!   failover (a dropped connection, `READONLY` from a demoted master) makes
//!   the next command ask the sentinels for the master again;
//! - [`slot`] is Redis Cluster's key slot (CRC16 of the key, or of its
//!   `{hash tag}`), so callers can group keys that one call may touch together;
//! - [`Conn::primaries`] and [`Conn::scan`] reach every primary, for passes
//!   over all keys (a `SCAN` on one node of a cluster sees only that node's);
//! - [`Conn::wait_for_replicas`] confirms that writes reached a replica of
//!   each primary of a cluster;
//! - [`Conn::slot_map`] and [`Conn::pipeline_via`] let a caller send one
//!   pipeline per primary (calls of many of its slots) instead of one per slot.
//!
//! Assumes: a call that declares several keys on a cluster declares keys of
//! one slot (Redis refuses others with `CROSSSLOT`), which callers ensure
//! with [`slot`]; a script reaching keys of several slots of one primary
//! declares none and is flagged for it (see `newest_wins.lua`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value};

use crate::config::{ProfilesConfig, RedisType};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to the store's Redis, whatever its kind.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Sentinel),
}

/// Where new connections come from: the HTTP API opens its own, so its reads
/// do not queue behind a sync's writes on one multiplexed connection.
#[derive(Clone)]
pub enum Opener {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
}

impl Opener {
    pub fn new(cfg: &ProfilesConfig) -> redis::RedisResult<Opener> {
        let urls: Vec<&str> = cfg.redis_urls().map(|u| u.expose()).collect();
        Ok(match cfg.redis_type {
            RedisType::Redis => Opener::Single(redis::Client::open(urls[0])?),
            RedisType::RedisCluster => Opener::Cluster(
                redis::cluster::ClusterClientBuilder::new(urls)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .build()?,
            ),
            RedisType::RedisSentinel => {
                let infos = urls
                    .iter()
                    .map(|u| u.into_connection_info())
                    .collect::<redis::RedisResult<Vec<_>>>()?;
                let first = &infos[0];
                // The URL's credentials are the master's, as in Feast; the
                // sentinels are asked without them.
                let mut b = SentinelClientBuilder::new(
                    infos.iter().map(|i| i.addr.clone()),
                    cfg.sentinel_master.clone().unwrap_or_default(),
                    SentinelServerType::Master,
                )?
                .set_client_to_redis_db(first.redis.db);
                if let Some(user) = &first.redis.username {
                    b = b.set_client_to_redis_username(user.clone());
                }
                if let Some(pw) = &first.redis.password {
                    b = b.set_client_to_redis_password(pw.clone());
                }
                if let redis::ConnectionAddr::TcpTls { insecure, .. } = &first.addr {
                    b = b.set_client_to_redis_tls_mode(if *insecure {
                        redis::TlsMode::Insecure
                    } else {
                        redis::TlsMode::Secure
                    });
                }
                Opener::Sentinel(Arc::new(tokio::sync::Mutex::new(b.build()?)))
            }
        })
    }

    /// A new connection (with timeouts; it reconnects by itself afterwards).
    pub async fn open(&self) -> redis::RedisResult<Conn> {
        Ok(match self {
            Opener::Single(client) => {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT)
                    .set_number_of_retries(2)
                    .set_max_delay(2000);
                Conn::Single(client.get_connection_manager_with_config(cfg).await?)
            }
            Opener::Cluster(client) => Conn::Cluster(client.get_async_connection().await?),
            Opener::Sentinel(client) => {
                let s = Sentinel(Arc::new(SentinelState {
                    client: client.clone(),
                    master: Mutex::new(None),
                }));
                // Connect now, so a wrong sentinel or master name shows at start.
                s.master().await?;
                Conn::Sentinel(s)
            }
        })
    }
}

/// The master behind the sentinels, asked for again after a failover.
#[derive(Clone)]
pub struct Sentinel(Arc<SentinelState>);

struct SentinelState {
    client: Arc<tokio::sync::Mutex<SentinelClient>>,
    master: Mutex<Option<MultiplexedConnection>>,
}

impl Sentinel {
    async fn master(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(c) = self.0.master.lock().unwrap().clone() {
            return Ok(c);
        }
        let mut client = self.0.client.lock().await;
        if let Some(c) = self.0.master.lock().unwrap().clone() {
            return Ok(c);
        }
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        let c = client.get_async_connection_with_config(&cfg).await?;
        *self.0.master.lock().unwrap() = Some(c.clone());
        Ok(c)
    }

    /// Runs `call` on the master. During a failover the sentinels name the
    /// old master for a moment: a refused connection or `READONLY` (nothing
    /// ran) is tried again on the master the sentinels name then, for up to
    /// about 6 s. A connection dropped mid-call is not retried (the call may
    /// have run), but the next call asks the sentinels again.
    async fn run<T, F, Fut>(&self, call: F) -> redis::RedisResult<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut delay = Duration::from_millis(100);
        loop {
            let r = match self.master().await {
                Ok(c) => call(c).await,
                Err(e) => Err(e),
            };
            let Err(e) = r else { return r };
            // The old master refusing writes, or the sentinels naming no
            // master that answers as one yet.
            let nothing_ran = matches!(
                e.kind(),
                ErrorKind::ReadOnly | ErrorKind::MasterNameNotFoundBySentinel
            ) || e.is_connection_refusal();
            if nothing_ran
                || e.is_io_error()
                || e.is_connection_dropped()
                || e.is_timeout()
                || e.kind() == ErrorKind::MasterDown
            {
                *self.0.master.lock().unwrap() = None;
            }
            if nothing_ran && delay < Duration::from_secs(4) {
                tokio::time::sleep(delay).await;
                delay *= 2;
                continue;
            }
            if e.kind() == ErrorKind::ReadOnly {
                return Err(RedisError::from((
                    ErrorKind::TryAgain,
                    "the master became a replica (Sentinel failover)",
                )));
            }
            return Err(e);
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(s) => Box::pin(async move {
                s.run(|mut c| async move { c.req_packed_command(cmd).await })
                    .await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Sentinel(s) => Box::pin(async move {
                s.run(|mut c| async move { c.req_packed_commands(cmd, offset, count).await })
                    .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(_) => 0,
        }
    }
}

const SLOTS: usize = 16384;
const UNSERVED: u16 = u16::MAX;

/// Which primary serves each slot of a cluster.
#[derive(Debug, Clone)]
pub struct SlotMap {
    pub nodes: Vec<Node>,
    /// Per slot, an index into `nodes` ([`UNSERVED`] when no node serves it).
    owner: Vec<u16>,
}

impl SlotMap {
    /// The primary serving `slot`, if any.
    pub fn node_of(&self, slot: u16) -> Option<usize> {
        match self.owner.get(slot as usize) {
            Some(&i) if i != UNSERVED => Some(i as usize),
            _ => None,
        }
    }
}

/// A primary of a cluster, by the address the cluster announces, and how
/// many healthy replicas it has.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Node {
    pub host: String,
    pub port: u16,
    pub replicas: usize,
}

impl Conn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// The cluster's primaries (from `CLUSTER SLOTS`); empty for one Redis or
    /// Sentinel, where the one master holds every key.
    pub async fn primaries(&self) -> redis::RedisResult<Vec<Node>> {
        Ok(self.slot_map().await?.map(|m| m.nodes).unwrap_or_default())
    }

    /// Which primary serves each slot, as the cluster says now (`None`: not
    /// a cluster).
    pub async fn slot_map(&self) -> redis::RedisResult<Option<SlotMap>> {
        let Conn::Cluster(c) = self else {
            return Ok(None);
        };
        let mut c = c.clone();
        let ranges: Vec<Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut c)
            .await?;
        let mut map = SlotMap {
            nodes: Vec::new(),
            owner: vec![UNSERVED; SLOTS],
        };
        for range in ranges {
            // [start, end, [host, port, id, ...] (the primary), replicas...]
            let Value::Array(parts) = range else { continue };
            let (Some(start), Some(end), Some(Value::Array(primary))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                continue;
            };
            let (Some(host), Some(port)) = (primary.first(), primary.get(1)) else {
                continue;
            };
            let node = Node {
                host: redis::from_redis_value(host)?,
                port: redis::from_redis_value(port)?,
                // Failed replicas are not listed.
                replicas: parts.len().saturating_sub(3),
            };
            let i = match map
                .nodes
                .iter()
                .position(|n| n.host == node.host && n.port == node.port)
            {
                Some(i) => i,
                None => {
                    map.nodes.push(node);
                    map.nodes.len() - 1
                }
            };
            let start: usize = redis::from_redis_value(start)?;
            let end: usize = redis::from_redis_value(end)?;
            for slot in start..=end.min(SLOTS - 1) {
                map.owner[slot] = i as u16;
            }
        }
        Ok(Some(map))
    }

    /// Sends `pipe` as it is to the primary that serves `slot` (by the
    /// client's slot map, which follows failovers): the fast way to reach a
    /// primary with calls of many of its slots. An error in any call (`MOVED`
    /// for a slot that moved in a resharding among them) fails it whole.
    pub async fn pipeline_via(&self, slot: u16, pipe: &Pipeline) -> redis::RedisResult<Vec<Value>> {
        match self {
            Conn::Cluster(c) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                c.clone().route_pipeline(pipe, 0, pipe.len(), route).await
            }
            _ => pipe.query_async(&mut self.clone()).await,
        }
    }

    /// Runs `cmd` on `node` of a cluster (`None`, or not a cluster: the only node).
    async fn on_node(&self, node: Option<&Node>, cmd: &Cmd) -> redis::RedisResult<Value> {
        match (self, node) {
            (Conn::Cluster(c), Some(node)) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: node.host.clone(),
                    port: node.port,
                });
                c.clone().route_command(cmd, routing).await
            }
            _ => cmd.query_async(&mut self.clone()).await,
        }
    }

    /// Waits until what this connection wrote to each primary of a cluster
    /// reached at least one of its replicas (`WAIT`), so that a failover to
    /// a replica cannot lose writes that a later commit (on another node)
    /// counts as done. The names of primaries that did not confirm in time.
    pub async fn wait_for_replicas(&self, timeout: Duration) -> redis::RedisResult<Vec<String>> {
        let mut late = Vec::new();
        for node in self.primaries().await? {
            if node.replicas == 0 {
                continue;
            }
            let mut cmd = redis::cmd("WAIT");
            cmd.arg(1).arg(timeout.as_millis() as u64);
            let acked: i64 = redis::from_redis_value(&self.on_node(Some(&node), &cmd).await?)?;
            if acked < 1 {
                late.push(format!("{}:{}", node.host, node.port));
            }
        }
        Ok(late)
    }

    /// One step of `SCAN` on `node` (`None`: the only node): the next cursor
    /// (0 when done) and a batch of keys.
    pub async fn scan(
        &self,
        node: Option<&Node>,
        pattern: &[u8],
        cursor: u64,
    ) -> redis::RedisResult<(u64, Vec<Vec<u8>>)> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        redis::from_redis_value(&self.on_node(node, &cmd).await?)
    }
}

/// Redis Cluster's slot of `key`: CRC16 (XMODEM) of the key, or of the part
/// between its first `{` and the next `}` when that part is not empty.
pub fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16_xmodem(hashed) % 16384
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31c3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
    }
}
