//! The Profiles Store on Redis, and the daemon's own state beside it.
//!
//! Promises:
//! - profile writes use Feast's layout ([`feast`]) and are newest-wins: one Lua
//!   script call checks each entity's stored `_ts:{feature_view}` (and the
//!   shape generation in `_gen:{feature_view}`) and skips the entity if the
//!   stored value is newer, atomically inside Redis, so replays, replicas and
//!   backfills never regress a value, and a run of a view's old shape never
//!   overwrites its new shape (see `newest_wins.lua`);
//! - a view's `ttl` counts from the row's timestamp (Feast's feature-view ttl):
//!   reads ([`read`]) hide its values once `timestamp + ttl` has passed, and
//!   key expiry only cleans up storage once every view on the key has expired;
//!   one view's ttl never removes another view's values;
//! - writes are idempotent; a batch whose call failed must be treated as
//!   unwritten (some of its keys may have landed; rewriting them is harmless);
//! - the daemon's own state (registry, watermarks, leases, runs, generations)
//!   is spelled only in [`state`], per project, next to the migrations that
//!   create it, in the same Redis as the profiles, so losing Redis loses both
//!   together.
//!
//! On a Redis Cluster ([`conn`]), a script call touches keys of one primary
//! only (of many slots, passed as arguments; or of one slot, declared, until
//! the slot map is known and after a resharding or failover moved them), so
//! newest-wins stays atomic per key; every primary's pipeline is in flight at
//! once. Erasure ([`erase`]) writes tombstones that the script honours.

pub mod conn;
pub mod erase;
pub mod feast;
pub mod read;
pub mod state;

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::config::{ProfilesConfig, RedisType};
use crate::model::View;
use crate::time::Nanos;

const NEWEST_WINS: &str = include_str!("newest_wins.lua");

/// A failure of the Profiles Store, sorted once where Redis is called, so a
/// caller knows how to react without reading messages.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis cannot be reached or is not serving yet (connection refused or
    /// dropped, a timeout, loading a snapshot, a failover): retrying helps.
    #[error("Redis unavailable: {0}")]
    Unavailable(String),
    /// Redis answered and refused (wrong password, read-only replica, out of
    /// memory, a script error): retrying helps once someone acts.
    #[error("Redis refused: {0}")]
    Refused(String),
    /// What Redis holds cannot be read (a watermark that is not a number, an
    /// entry that is not a view): a person must fix or remove it.
    #[error("unreadable state in Redis: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether retrying the same call later can succeed without a person.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, StoreError::Corrupt(_))
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        use redis::ErrorKind as K;
        let text = e.to_string();
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            return StoreError::Unavailable(text);
        }
        match e.kind() {
            K::BusyLoadingError
            | K::TryAgain
            | K::ClusterDown
            | K::MasterDown
            | K::Moved
            | K::Ask => StoreError::Unavailable(text),
            K::TypeError | K::ParseError => StoreError::Corrupt(text),
            _ => StoreError::Refused(text),
        }
    }
}

/// How many per-slot pipelines are in flight at once on a cluster.
const CLUSTER_IN_FLIGHT: usize = 512;

/// What the Profiles Store's calls return.
pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// One entity's new values for one view: `values` pairs a field index (into
/// [`WriteSpec::fields`]) with a serialized Feast `Value`.
pub struct Upsert<'a> {
    pub entity: &'a str,
    pub ts: Nanos,
    pub values: &'a [(u32, &'a [u8])],
    /// A row whose soft-delete flag is set: removes the view's values (and
    /// keeps its time, so an older row cannot bring them back).
    pub delete: bool,
}

/// What is fixed for every write of one view.
pub struct WriteSpec {
    pub join_key: String,
    pub ts_field: String,
    pub gen_field: String,
    /// The view's erasure tombstone field (see [`erased_field`]).
    pub erased_field: String,
    /// The view's shape generation (see [`state`]); values of a newer
    /// generation always win over older ones.
    pub generation: u64,
    /// Hash field name of each view field, in view order.
    pub fields: Vec<[u8; 4]>,
    /// The view's `ttl` in milliseconds; 0 for none. A value expires `ttl`
    /// after its row's timestamp.
    pub ttl_ms: i64,
}

impl WriteSpec {
    /// The spec of `view` at shape generation 0; set `generation` for later ones.
    pub fn for_view(view: &View) -> WriteSpec {
        let fv = view.feast_name();
        WriteSpec {
            join_key: view.entity.join_key().to_string(),
            ts_field: feast::ts_field(&fv),
            gen_field: gen_field(&fv),
            erased_field: erased_field(Some(&fv)),
            generation: 0,
            fields: view
                .fields
                .iter()
                .map(|f| feast::feature_field(&fv, &f.name))
                .collect(),
            ttl_ms: view
                .ttl()
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0),
        }
    }

    /// Key expiry deadline (ms since the epoch) of a row stamped `ts`; at
    /// least 1, so a row that expired long ago expires its new key at once.
    fn deadline_ms(&self, ts: Nanos) -> i64 {
        ts.div_euclid(1_000_000).saturating_add(self.ttl_ms).max(1)
    }
}

/// Hash field holding the shape generation of a feature view's values; absent
/// for generation 0 (Feast's own layout has no such field and ignores it).
pub fn gen_field(feature_view: &str) -> String {
    format!("_gen:{feature_view}")
}

/// Hash field holding an erasure tombstone (a serialized Timestamp): of one
/// feature view, or (`None`) of every view of the entity. Rows stamped at or
/// before it are never written again.
pub fn erased_field(feature_view: Option<&str>) -> String {
    match feature_view {
        Some(fv) => format!("_erased:{fv}"),
        None => "_erased".into(),
    }
}

/// Every hash field a view owns in an entity's hash: one per field, in view
/// order, then `_ts:{feature_view}`, then `_gen:{feature_view}`.
pub fn view_hash_fields(view: &View) -> Vec<Vec<u8>> {
    let fv = view.feast_name();
    let mut fields: Vec<Vec<u8>> = view
        .fields
        .iter()
        .map(|f| feast::feature_field(&fv, &f.name).to_vec())
        .collect();
    fields.push(feast::ts_field(&fv).into_bytes());
    fields.push(gen_field(&fv).into_bytes());
    fields
}

/// Newest-wins script calls encoded by [`ProfileStore::prepare`], ready to send.
pub struct PreparedWrite {
    groups: Vec<CallGroup>,
    rows: u64,
}

/// Script calls sent as one pipeline: on a cluster, those of one primary
/// (by the slot map), or of one slot when no map is known.
struct CallGroup {
    pipeline: redis::Pipeline,
    /// A slot of the primary whose keys the calls pass as arguments (see
    /// [`encode_call`]); `None`: calls with declared keys.
    via: Option<u16>,
    /// The slot of each call with declared keys (a cluster only), to resend
    /// them slot by slot.
    slots: Vec<u16>,
}

/// One newest-wins script call for the rows `which` (indexes into `rows`
/// and their `keys`): with `declared` keys (one slot on a cluster), or
/// with the keys passed as arguments (one primary's keys of many slots;
/// see `newest_wins.lua`); `sha` names the script.
fn encode_call(
    sha: &str,
    spec: &WriteSpec,
    which: &[usize],
    rows: &[Upsert<'_>],
    keys: &[Vec<u8>],
    declared: bool,
) -> redis::Cmd {
    let ttl = spec.ttl_ms > 0;
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha);
    if !declared {
        cmd.arg(0);
    }
    cmd.arg(which.len());
    for &i in which {
        cmd.arg(&keys[i][..]);
    }
    cmd.arg(&spec.ts_field)
        .arg(&spec.gen_field)
        .arg(spec.generation)
        .arg(if ttl { "1" } else { "0" })
        .arg(&spec.erased_field);
    if which.iter().any(|&i| rows[i].delete) {
        cmd.arg(spec.fields.len());
        for f in &spec.fields {
            cmd.arg(&f[..]);
        }
    } else {
        cmd.arg(0);
    }
    let mut ts_buf = Vec::with_capacity(16);
    for &i in which {
        let r = &rows[i];
        ts_buf.clear();
        feast::push_timestamp(&mut ts_buf, r.ts);
        if r.delete {
            cmd.arg(-1);
        } else {
            cmd.arg(r.values.len());
        }
        if ttl {
            cmd.arg(spec.deadline_ms(r.ts));
        }
        cmd.arg(&ts_buf[..]);
        for (field, value) in r.values.iter().filter(|_| !r.delete) {
            cmd.arg(&spec.fields[*field as usize][..]).arg(*value);
        }
    }
    cmd
}

/// Splits a newest-wins call whose keys are arguments (one primary's keys,
/// see [`encode_call`]) into calls with declared keys, one per
/// slot, for a cluster whose slots moved since the call was encoded.
fn split_by_slot(cmd: &redis::Cmd) -> Vec<(u16, redis::Cmd)> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(s) => Some(s),
            redis::Arg::Cursor => None,
        })
        .collect();
    let num = |b: &[u8]| -> i64 {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    // EVALSHA sha 0 n key... ; then tsf genf gen ttl erasedf m field... ;
    // then per key: count (-1: a delete), [deadline], ts, field/value pairs.
    let n = num(args[3]) as usize;
    let header_at = 4 + n;
    let ttl = args[header_at + 3] == b"1";
    let m = num(args[header_at + 5]) as usize;
    let header = &args[header_at..header_at + 6 + m];
    let mut at = header_at + 6 + m;
    // Per slot: its keys, then their sections.
    type Part<'a> = (Vec<&'a [u8]>, Vec<&'a [u8]>);
    let mut parts: BTreeMap<u16, Part<'_>> = BTreeMap::new();
    for key in &args[4..header_at] {
        let len = 2 + usize::from(ttl) + 2 * num(args[at]).max(0) as usize;
        let (keys, sections) = parts.entry(conn::slot(key)).or_default();
        keys.push(key);
        sections.extend_from_slice(&args[at..at + len]);
        at += len;
    }
    parts
        .into_iter()
        .map(|(slot, (keys, sections))| {
            let mut c = redis::cmd("EVALSHA");
            c.arg(args[1]).arg(keys.len());
            for a in keys.iter().chain(header).chain(&sections) {
                c.arg(*a);
            }
            (slot, c)
        })
        .collect()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Entities whose values were written.
    pub written: u64,
    /// Entities left alone because Redis already held a newer timestamp.
    pub stale: u64,
}

/// Where a run is, or how it ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    #[default]
    Running,
    Ok,
    Failed,
    /// Stopped by a shutdown; nothing committed.
    Interrupted,
    /// The view was reshaped, deleted or reset during the run; nothing committed.
    Superseded,
}

impl RunStatus {
    /// The label in run records, `status` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Ok => "ok",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Superseded => "superseded",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The record of a view's last run, as `status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub view: String,
    pub version: u32,
    pub status: RunStatus,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: u64,
    pub rows_read: u64,
    pub rows_written: u64,
    pub rows_stale: u64,
    /// Statements the run sent to the warehouse (0 for Parquet).
    #[serde(default)]
    pub statements: u64,
    /// Rows or fields skipped, by reason (`null_entity`, `overflow`, ...).
    pub skipped: BTreeMap<String, u64>,
    /// Whether the run read the whole table (first run or `full_resync_every`).
    #[serde(default)]
    pub full_read: bool,
    pub watermark_before: Option<String>,
    pub watermark_after: Option<String>,
    pub error: Option<String>,
    /// The last error and the last success survive later runs of the other kind.
    pub last_error: Option<String>,
    pub last_success_at: Option<String>,
}

#[derive(Clone)]
pub struct ProfileStore {
    opener: conn::Opener,
    conn: conn::Conn,
    /// A cluster's slot map, read at every run's start (see [`ProfileStore::prepare`]).
    slot_map: Arc<std::sync::Mutex<Option<Arc<conn::SlotMap>>>>,
    project: String,
    keys: state::Keys,
    script: redis::Script,
}

impl std::fmt::Debug for ProfileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileStore")
            .field("project", &self.project)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl ProfileStore {
    /// Connects (with timeouts; the connection reconnects by itself afterwards)
    /// and applies pending state migrations.
    pub async fn connect(cfg: &ProfilesConfig) -> Result<ProfileStore> {
        let opener =
            conn::Opener::new(cfg).map_err(|e| anyhow::anyhow!("profiles.redis_url: {}", e))?;
        let at = || match cfg.redis_type {
            RedisType::Redis => format!("Redis at {}", cfg.redis_url),
            RedisType::RedisCluster => format!("Redis Cluster at {}", cfg.redis_url),
            RedisType::RedisSentinel => format!(
                "Redis master `{}` of the sentinels at {}",
                cfg.sentinel_master.as_deref().unwrap_or_default(),
                cfg.redis_url
            ),
        };
        let conn = opener
            .open()
            .await
            .with_context(|| format!("cannot connect to {}", at()))?;
        let store = ProfileStore {
            opener,
            conn,
            slot_map: Arc::default(),
            project: cfg.project.clone(),
            keys: state::Keys::new(&cfg.state_prefix, &cfg.project),
            script: redis::Script::new(NEWEST_WINS),
        };
        // The first commands are where a wrong password, a read-only replica or
        // an out-of-memory Redis shows: say which Redis.
        store.migrate().await.with_context(at)?;
        Ok(store)
    }

    /// The same store on a connection of its own: one connection pipelines
    /// its commands in order, so the HTTP API's reads would otherwise queue
    /// behind a sync's page writes.
    pub async fn separate(&self) -> StoreResult<ProfileStore> {
        Ok(ProfileStore {
            conn: self.opener.open().await?,
            ..self.clone()
        })
    }

    /// Runs `cmds` and returns their replies in order: one pipeline on one
    /// Redis; on a cluster, one pipeline per slot (`slots[i]` is the slot of
    /// `cmds[i]`'s keys), all in flight at once, so each primary gets its
    /// share in about one round trip.
    pub(crate) async fn run_all(
        &self,
        cmds: Vec<redis::Cmd>,
        slots: &[u16],
    ) -> StoreResult<Vec<redis::Value>> {
        if !self.conn.is_cluster() {
            let mut pipe = redis::pipe();
            for c in cmds {
                pipe.add_command(c);
            }
            let mut c = self.conn.clone();
            return Ok(pipe.query_async(&mut c).await?);
        }
        let mut by_slot: BTreeMap<u16, (Vec<usize>, redis::Pipeline)> = BTreeMap::new();
        for (i, cmd) in cmds.into_iter().enumerate() {
            let (idx, pipe) = by_slot
                .entry(slots[i])
                .or_insert_with(|| (Vec::new(), redis::pipe()));
            idx.push(i);
            pipe.add_command(cmd);
        }
        let n = slots.len();
        let replies = futures::stream::iter(by_slot.into_values().map(|(idx, pipe)| {
            let mut c = self.conn.clone();
            async move {
                let v: Vec<redis::Value> = pipe.query_async(&mut c).await?;
                Ok::<_, redis::RedisError>((idx, v))
            }
        }))
        .buffer_unordered(CLUSTER_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
        let mut out = vec![redis::Value::Nil; n];
        for r in replies {
            let (idx, values) = r?;
            for (i, v) in idx.into_iter().zip(values) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    pub async fn ping(&self) -> StoreResult<()> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    /// Newest-wins upsert of `rows`, `batch` entities per script call, all
    /// calls sent as one pipeline: [`ProfileStore::prepare`] then [`ProfileStore::send`].
    pub async fn write(
        &self,
        spec: &WriteSpec,
        rows: &[Upsert<'_>],
        batch: usize,
    ) -> StoreResult<WriteOutcome> {
        self.send(self.prepare(spec, rows, batch)).await
    }

    /// Encodes the newest-wins script calls for `rows` (`batch` entities per
    /// call) without sending them. The result owns its bytes, so a caller can
    /// encode the next page while Redis runs this one. On a cluster, a call
    /// holds entities of one slot only (Redis runs a script on one slot's
    /// keys), and the calls of each primary (by the slot map read at
    /// [`ProfileStore::load_scripts`]) make one pipeline.
    pub fn prepare(&self, spec: &WriteSpec, rows: &[Upsert<'_>], batch: usize) -> PreparedWrite {
        let batch = batch.max(1);
        let keys: Vec<Vec<u8>> = rows
            .iter()
            .map(|r| {
                let mut key = Vec::with_capacity(64);
                feast::push_entity_key(
                    &mut key,
                    &spec.join_key,
                    r.entity.as_bytes(),
                    &self.project,
                );
                key
            })
            .collect();
        let cluster = self.conn.is_cluster();
        let slots: Vec<u16> = if cluster {
            keys.iter().map(|k| conn::slot(k)).collect()
        } else {
            Vec::new()
        };
        let map = self.slot_map.lock().expect("slot map lock").clone();
        // Which pipeline a slot's calls go to: its primary's (numbered below
        // 2^16), or (no map yet, or a slot no primary serves) its own; one
        // pipeline on one Redis.
        let group_of = |slot: Option<u16>| match (slot, &map) {
            (Some(s), Some(m)) => m.node_of(s).unwrap_or((usize::from(s) + 1) << 16),
            (Some(s), None) => usize::from(s),
            (None, _) => 0,
        };
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| slots.get(i).copied().map(|s| (group_of(Some(s)), s)));
        // A call's entities share its slot, or (a primary known) its primary.
        let whole_primary = |slot: Option<u16>| group_of(slot) < 1 << 16 && map.is_some();
        let call_key = |n: usize| {
            let slot = slots.get(order[n]).copied();
            (group_of(slot), slot.filter(|_| !whole_primary(slot)))
        };
        // Crash tests only: one call per pipeline, so a crash can land between
        // two of them, leaving half a page in Redis.
        let call_per_pipeline = crate::failpoints::armed("mid_page");
        let mut groups: Vec<CallGroup> = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            while end < order.len() && end - start < batch && call_key(end) == call_key(start) {
                end += 1;
            }
            let slot = slots.get(order[start]).copied();
            let same_group =
                start > 0 && !call_per_pipeline && call_key(start - 1).0 == call_key(start).0;
            if !same_group {
                groups.push(CallGroup {
                    pipeline: redis::pipe(),
                    via: slot.filter(|_| whole_primary(slot)),
                    slots: Vec::new(),
                });
            }
            let g = groups.last_mut().expect("one group at least");
            let declared = g.via.is_none();
            g.pipeline.add_command(encode_call(
                self.script.get_hash(),
                spec,
                &order[start..end],
                rows,
                &keys,
                declared,
            ));
            if declared {
                g.slots.extend(slot);
            }
            start = end;
        }
        PreparedWrite {
            groups,
            rows: rows.len() as u64,
        }
    }

    /// Sends what [`ProfileStore::prepare`] encoded; on a cluster, every
    /// primary's pipeline at once. On error, treat every row of it as
    /// unwritten (some may have landed; rewriting them is harmless).
    pub async fn send(&self, prepared: PreparedWrite) -> StoreResult<WriteOutcome> {
        let written = if self.conn.is_cluster() {
            let counts =
                futures::stream::iter(prepared.groups.into_iter().map(|g| self.send_group(g)))
                    .buffer_unordered(CLUSTER_IN_FLIGHT)
                    .collect::<Vec<_>>()
                    .await;
            let mut written = 0;
            for c in counts {
                written += c?;
            }
            written
        } else {
            let mut written = 0;
            for (i, g) in prepared.groups.into_iter().enumerate() {
                if i > 0 {
                    crate::failpoints::hit("mid_page").await;
                }
                written += self.send_one(g.pipeline, None).await?;
            }
            written
        };
        Ok(WriteOutcome {
            written,
            stale: prepared.rows - written,
        })
    }

    /// One cluster group: its primary's pipeline straight to that primary;
    /// if that fails (a resharding, a failover: `MOVED`, a dead node), the
    /// slot map is read again and the group's calls go one slot at a time,
    /// routed and redirected by the cluster client.
    fn send_group(
        &self,
        g: CallGroup,
    ) -> impl std::future::Future<Output = StoreResult<u64>> + Send + 'static {
        let store = self.clone();
        async move {
            let mut by_slot: BTreeMap<u16, redis::Pipeline> = BTreeMap::new();
            if let Some(via) = g.via {
                match store.send_one(g.pipeline.clone(), Some(via)).await {
                    Ok(n) => return Ok(n),
                    Err(e) => {
                        tracing::debug!(error = %e, "pipeline to a primary failed; sending per slot");
                        store.refresh_slot_map().await;
                    }
                }
                for cmd in g.pipeline.cmd_iter() {
                    for (slot, part) in split_by_slot(cmd) {
                        by_slot
                            .entry(slot)
                            .or_insert_with(redis::pipe)
                            .add_command(part);
                    }
                }
            } else {
                for (cmd, slot) in g.pipeline.cmd_iter().zip(&g.slots) {
                    by_slot
                        .entry(*slot)
                        .or_insert_with(redis::pipe)
                        .add_command(cmd.clone());
                }
            }
            let counts =
                futures::stream::iter(by_slot.into_values().map(|p| store.send_one(p, None)))
                    .buffer_unordered(CLUSTER_IN_FLIGHT)
                    .collect::<Vec<_>>()
                    .await;
            let mut written = 0;
            for c in counts {
                written += c?;
            }
            Ok(written)
        }
    }

    /// One pipeline of newest-wins calls (as it is to the primary of `via`,
    /// or routed by its keys); how many entities they wrote. Owns what it
    /// uses, so many can be in flight at once.
    fn send_one(
        &self,
        pipe: redis::Pipeline,
        via: Option<u16>,
    ) -> impl std::future::Future<Output = StoreResult<u64>> + Send + 'static {
        let c = self.conn.clone();
        let script = self.script.clone();
        async move {
            let run = || async {
                match via {
                    Some(slot) => c.pipeline_via(slot, &pipe).await,
                    None => pipe.query_async(&mut c.clone()).await,
                }
            };
            let replies = match run().await {
                Ok(v) => v,
                Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                    // A restart, a failover or SCRIPT FLUSH: load once more
                    // (on every primary) and resend; rewriting is harmless.
                    script.prepare_invoke().load_async(&mut c.clone()).await?;
                    run().await?
                }
                Err(e) => return Err(e.into()),
            };
            let mut written = 0;
            for v in replies {
                written += redis::from_redis_value::<u64>(&v)
                    .map_err(|e| StoreError::Corrupt(format!("newest-wins reply: {e}")))?;
            }
            Ok(written)
        }
    }

    /// Reads which primary serves each slot again (a cluster only); on
    /// failure forgets it, so writes go per slot until the next read.
    async fn refresh_slot_map(&self) {
        let map = self.conn.slot_map().await.ok().flatten().map(Arc::new);
        *self.slot_map.lock().expect("slot map lock") = map;
    }

    /// Loads the newest-wins script (call once before writing).
    pub async fn load_scripts(&self) -> StoreResult<()> {
        self.refresh_slot_map().await;
        let mut c = self.conn.clone();
        self.script.prepare_invoke().load_async(&mut c).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &redis::Cmd) -> Vec<Vec<u8>> {
        cmd.args_iter()
            .filter_map(|a| match a {
                redis::Arg::Simple(s) => Some(s.to_vec()),
                redis::Arg::Cursor => None,
            })
            .collect()
    }

    #[test]
    fn a_primary_wide_call_splits_into_the_per_slot_calls_it_replaces() {
        let spec = WriteSpec {
            join_key: "domain_userid".into(),
            ts_field: "_ts:v_v1".into(),
            gen_field: "_gen:v_v1".into(),
            erased_field: "_erased:v_v1".into(),
            generation: 3,
            fields: vec![*b"f001", *b"f002"],
            ttl_ms: 60_000,
        };
        let (v1, v2): (&[u8], &[u8]) = (b"one", b"two");
        let values: Vec<(u32, &[u8])> = vec![(0, v1), (1, v2)];
        let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
        // A call lists the view's fields when any of its rows is a delete:
        // all rows or none are, so each part lists them as its call does.
        for delete in [false, true] {
            let rows: Vec<Upsert<'_>> = names
                .iter()
                .enumerate()
                .map(|(i, e)| Upsert {
                    entity: e,
                    ts: 1_700_000_000_000_000_000 + i as i64,
                    values: &values[..i % 3],
                    delete,
                })
                .collect();
            let keys: Vec<Vec<u8>> = names
                .iter()
                .map(|e| feast::entity_key("domain_userid", e.as_bytes(), "signals"))
                .collect();
            let all: Vec<usize> = (0..rows.len()).collect();
            let wide = encode_call("sha", &spec, &all, &rows, &keys, false);
            let parts = split_by_slot(&wide);
            let mut slots: Vec<u16> = keys.iter().map(|k| conn::slot(k)).collect();
            slots.sort();
            slots.dedup();
            assert!(slots.len() > 1, "the entities must span slots");
            assert_eq!(parts.iter().map(|p| p.0).collect::<Vec<_>>(), slots);
            for (slot, part) in &parts {
                let which: Vec<usize> = all
                    .iter()
                    .copied()
                    .filter(|&i| conn::slot(&keys[i]) == *slot)
                    .collect();
                let declared = encode_call("sha", &spec, &which, &rows, &keys, true);
                assert_eq!(args(part), args(&declared), "slot {slot}");
            }
        }
    }
}
