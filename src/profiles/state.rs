//! The daemon's own state in Redis: the only place that spells its keys.
//!
//! Layout 3 (created and moved by the ordered migrations in `migrations/`,
//! whose latest file lists every key): per Feast project `{prefix}{{project}}:meta`,
//! `:views` (the registry), `:registry_rev`, `:entities`, and per view
//! `{prefix}{{project}}:{name}:{version}:wm | full | run | lease | gen | rev |
//! retired | runs | inflight`. `runs` (list, newest first, at most
//! `sync.run_history` entries) and `inflight` (hash: the lease token and start
//! of the run that last took the lease) came after layout 3 without a
//! migration: a missing key reads as "no history yet". The braces around the project are a Redis Cluster hash tag: a
//! project's whole state shares one slot, so every script here (a registry
//! change touches the registry and the view's state together; a commit checks
//! the lease and the revision) runs on one node, atomically, on every kind of
//! store. The state is a few keys per view, written a few times per run, so
//! one slot is no bottleneck. Layouts 1 and 2 kept `{prefix}meta` global.
//!
//! Promises:
//! - every registry change (create, update, reshape, delete) is one script:
//!   compare-and-set against the entry the caller read, so concurrent appliers
//!   never half-apply and exactly one creator of a view wins; each change bumps
//!   `registry_rev`, so a registry that went back in time (failover to a
//!   lagging replica, an older snapshot) is recognisable;
//! - a reshape or delete, and a scheduled full resync
//!   ([`ProfileStore::begin_full_pass`]), bumps the view's shape generation (`gen`, to at least
//!   the clock in milliseconds, so it outruns generations that profile hashes
//!   kept when the daemon's state was lost without them) and forgets
//!   its watermark and last full read, and keeps the old shape in `retired` until
//!   a run of the new shape has removed its values; every reshape, delete and
//!   reset bumps the view's revision (`rev`);
//! - reads never use MULTI (Redis refuses even reads inside one when out of
//!   memory); where several keys are read together, their order is chosen so
//!   that a change in between is caught (see [`ProfileStore::run_state`]);
//! - [`ProfileStore::commit_run`] moves a watermark only if the caller still
//!   holds the lease *and* the view's revision is the one its run started
//!   from, in one script: a run never commits a shape or a window that is no
//!   longer the registered one.
//!
//! Assumes a prefix and project without `{` or `}` (the config refuses them),
//! so the hash tag is the project.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::AsyncCommands;

use super::conn::Node;
use super::{feast, ProfileStore, RunRecord, StoreError, StoreResult as Result};
use crate::model::{View, ViewId};
use crate::time::Nanos;

/// Ordered migrations of the state layout; each is idempotent and gets the
/// prefix and the project as ARGV[1] and ARGV[2].
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "initial_layout",
        include_str!("../../migrations/0001_initial_layout.lua"),
    ),
    (
        2,
        "per_project_state",
        include_str!("../../migrations/0002_per_project_state.lua"),
    ),
    (
        3,
        "one_slot_per_project",
        include_str!("../../migrations/0003_one_slot_per_project.lua"),
    ),
];

/// Migrations up to this one recorded their version in the global
/// `{prefix}meta`; later ones in the project's own meta.
const LAST_GLOBAL_MIGRATION: u32 = 2;

/// Builds every key the daemon owns.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// `{prefix}{{project}}:`
    ns: String,
}

impl Keys {
    pub fn new(prefix: &str, project: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
            ns: format!("{prefix}{{{project}}}:"),
        }
    }
    /// Layouts 1 and 2: the global hash whose `schema_version` they recorded.
    pub fn global_meta(&self) -> String {
        format!("{}meta", self.prefix)
    }
    /// The project's `schema_version` (from layout 3) and state `epoch`.
    pub fn meta(&self) -> String {
        format!("{}meta", self.ns)
    }
    pub fn views(&self) -> String {
        format!("{}views", self.ns)
    }
    pub fn registry_rev(&self) -> String {
        format!("{}registry_rev", self.ns)
    }
    pub fn entities(&self) -> String {
        format!("{}entities", self.ns)
    }
    /// A per-view key: `kind` is one of wm, full, run, lease, gen, rev,
    /// retired, runs, inflight.
    pub fn view(&self, id: &ViewId, kind: &str) -> String {
        format!("{}{}:{}:{kind}", self.ns, id.name, id.version)
    }
}

/// What a run reads of its view's state before it starts (see [`ProfileStore::run_state`]).
#[derive(Debug, Clone)]
pub struct RunState {
    /// The view as registered now (a scheduler's copy may be older).
    pub view: View,
    pub generation: u64,
    pub revision: u64,
    pub watermark: Option<Nanos>,
    pub last_full_read: Option<Nanos>,
}

/// What [`ProfileStore::commit_run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Done,
    /// Another holder has the view's lease.
    LeaseLost,
    /// The view was reshaped, deleted or reset since the run started.
    Superseded,
}

/// How a registry entry changes in [`ProfileStore::registry_put`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// No entry before.
    Create,
    /// Same sync shape: only the entry changes.
    Update,
    /// Source, entity, fields or ttl changed: a new shape generation.
    Reshape,
}

/// Identifies what the registry holds: the state's incarnation and the
/// registry's revision (a flush resets the revision, and changes the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryVersion {
    pub epoch: Option<String>,
    pub revision: u64,
}

/// The registry at one moment.
#[derive(Debug, Clone, Default)]
pub struct RegistrySnapshot {
    pub revision: u64,
    /// `name:version` -> view JSON.
    pub entries: BTreeMap<String, String>,
}

const REGISTRY_PUT: &str = r"
-- KEYS: views, registry_rev, gen, rev, wm, full, retired
-- ARGV: id, expected entry ('' for none), new entry, change, now (ms)
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (cur or '') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('INCR', KEYS[2])
if ARGV[4] == 'reshape' then
  -- At least the clock in ms: a generation outruns those left in profile
  -- hashes by state that was lost (a changed prefix) while they survived.
  local g = math.max((tonumber(redis.call('GET', KEYS[3])) or 0) + 1, tonumber(ARGV[5]))
  redis.call('SET', KEYS[3], string.format('%d', g))
  redis.call('DEL', KEYS[5], KEYS[6])
  redis.call('RPUSH', KEYS[7], cur)
  redis.call('LTRIM', KEYS[7], -8, -1)
end
if ARGV[4] ~= 'update' then redis.call('INCR', KEYS[4]) end
return 1";

const REGISTRY_DELETE: &str = r"
-- KEYS: views, registry_rev, gen, rev, wm, full, retired, run, runs, inflight
-- ARGV: id, expected entry, now (ms)
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (not cur) or cur ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[2])
local g = math.max((tonumber(redis.call('GET', KEYS[3])) or 0) + 1, tonumber(ARGV[3]))
redis.call('SET', KEYS[3], string.format('%d', g))
redis.call('INCR', KEYS[4])
redis.call('DEL', KEYS[5], KEYS[6], KEYS[8], KEYS[9], KEYS[10])
redis.call('RPUSH', KEYS[7], cur)
redis.call('LTRIM', KEYS[7], -8, -1)
return 1";

static REGISTRY_PUT_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(REGISTRY_PUT));
static REGISTRY_DELETE_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(REGISTRY_DELETE));

const RECORD_RUN: &str = r"
-- KEYS: run, runs; ARGV: run record JSON, how many runs to keep (>= 1)
redis.call('SET', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
return 1";

static RECORD_RUN_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(RECORD_RUN));

const COMMIT_RUN: &str = r"
-- KEYS: lease, rev, wm, full, retired
-- ARGV: lease token, expected revision, new watermark or '', full-read start or '', '1' to drop retired shapes
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[2] then return 2 end
if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3]) end
if ARGV[4] ~= '' then redis.call('SET', KEYS[4], ARGV[4]) end
if ARGV[5] == '1' then redis.call('DEL', KEYS[5]) end
return 1";

const FULL_PASS: &str = r"
-- KEYS: lease, rev, gen, full; ARGV: lease token, expected revision, now (ms)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[2] then return false end
local g = math.max((tonumber(redis.call('GET', KEYS[3])) or 0) + 1, tonumber(ARGV[3]))
redis.call('SET', KEYS[3], string.format('%d', g))
redis.call('DEL', KEYS[4])
return {string.format('%d', g), redis.call('INCR', KEYS[2])}";

const RESET: &str = r"
-- KEYS: wm, full, rev; ARGV: new watermark or '' to forget it
if ARGV[1] == '' then redis.call('DEL', KEYS[1], KEYS[2]) else redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('INCR', KEYS[3])
return 1";

/// Removes, from each key, the values an older shape generation of a view
/// left: KEYS are entity hashes; ARGV: `_gen` field, current generation, the
/// count of fields to remove from an older generation's hash, those fields,
/// then fields to remove even from a current one (fields the view no longer has).
const REMOVE_OLDER_GENERATIONS: &str = r"
local genf, gen, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local removed = 0
for _, key in ipairs(KEYS) do
  local cg = tonumber(redis.call('HGET', key, genf)) or 0
  if cg < gen then
    if redis.call('HDEL', key, unpack(ARGV, 4, 3 + n)) > 0 then removed = removed + 1 end
  elseif #ARGV > 3 + n then
    redis.call('HDEL', key, unpack(ARGV, 4 + n, #ARGV))
  end
end
return removed";

/// Where a pass over the keys of every primary is (see [`ProfileStore::scan_all`]).
struct ScanAll {
    pattern: Vec<u8>,
    /// Nodes still to scan, the current one last; `None` for the only node.
    nodes: Vec<Option<Node>>,
    cursor: u64,
}

impl ScanAll {
    /// The next batch of keys; `None` once every node is done.
    async fn next(&mut self, store: &ProfileStore) -> Result<Option<Vec<Vec<u8>>>> {
        while let Some(node) = self.nodes.last() {
            let (next, keys) = store
                .conn
                .scan(node.as_ref(), &self.pattern, self.cursor)
                .await?;
            self.cursor = next;
            if next == 0 {
                self.nodes.pop();
            }
            if !keys.is_empty() {
                return Ok(Some(keys));
            }
        }
        Ok(None)
    }
}

/// Milliseconds since the epoch, by this process's clock.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn parse_nanos(what: &str, v: Option<String>) -> Result<Option<Nanos>> {
    v.map(|s| {
        s.parse()
            .map_err(|_| StoreError::Corrupt(format!("{what} is not a number: `{s}`")))
    })
    .transpose()
}

/// Escapes the glob metacharacters of Redis `MATCH` in a binary key part.
fn glob_escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

impl ProfileStore {
    /// Applies pending state migrations (idempotent; run at every connect).
    /// A Redis with none of the daemon's state starts at the latest layout;
    /// older layouts can only exist on one Redis (the daemon did not run on a
    /// cluster before layout 3), where their scripts run.
    pub async fn migrate(&self) -> Result<()> {
        let mut c = self.conn.clone();
        let meta = self.keys.meta();
        let global_meta = self.keys.global_meta();
        let mut current: Option<u32> = c.hget(&meta, "schema_version").await?;
        if current.is_none() {
            current = c.hget(&global_meta, "schema_version").await?;
            if current.is_none() {
                current = Some(MIGRATIONS.last().map(|m| m.0).unwrap_or(0));
                let _: () = c.hset(&meta, "schema_version", current).await?;
            }
        }
        for (version, name, lua) in MIGRATIONS {
            if current.unwrap_or(0) >= *version {
                continue;
            }
            redis::Script::new(lua)
                .arg(&self.keys.prefix)
                .arg(&self.project)
                .invoke_async::<i64>(&mut c)
                .await
                .map_err(|e| match StoreError::from(e) {
                    StoreError::Refused(m) => {
                        StoreError::Refused(format!("state migration {version:04}_{name}: {m}"))
                    }
                    other => other,
                })?;
            let at = if *version <= LAST_GLOBAL_MIGRATION {
                &global_meta
            } else {
                &meta
            };
            let _: () = c.hset(at, "schema_version", *version).await?;
            tracing::info!(version, name, "applied state migration");
        }
        // Names this incarnation of the state. Any process re-creates `meta`
        // after a flush, so its presence alone cannot tell a daemon that the
        // registry was lost; a changed epoch can. Written only when missing, so
        // a read-only or full Redis can still be read.
        let epoch: Option<String> = c.hget(&meta, "epoch").await?;
        if epoch.is_none() {
            let _: bool = c
                .hset_nx(&meta, "epoch", format!("{:016x}", rand::random::<u64>()))
                .await?;
        }
        Ok(())
    }

    /// The id of the state's current incarnation (see [`ProfileStore::migrate`]);
    /// `None` when Redis holds none of the daemon's state.
    pub async fn state_epoch(&self) -> Result<Option<String>> {
        let mut c = self.conn.clone();
        Ok(c.hget(self.keys.meta(), "epoch").await?)
    }

    // ---- registry ----

    /// Every registry entry and the registry's revision. Read in that order
    /// (no MULTI: Redis refuses even reads inside one when out of memory), so
    /// the entries are at least as new as the revision; a change in between
    /// shows as a newer revision at the next read.
    pub async fn registry_snapshot(&self) -> Result<RegistrySnapshot> {
        let mut c = self.conn.clone();
        let (rev, entries): (Option<u64>, BTreeMap<String, String>) = redis::pipe()
            .get(self.keys.registry_rev())
            .hgetall(self.keys.views())
            .query_async(&mut c)
            .await?;
        Ok(RegistrySnapshot {
            revision: rev.unwrap_or(0),
            entries,
        })
    }

    /// The registry's version, in one round trip.
    pub async fn registry_version(&self) -> Result<RegistryVersion> {
        let mut c = self.conn.clone();
        let (epoch, rev): (Option<String>, Option<u64>) = redis::pipe()
            .hget(self.keys.meta(), "epoch")
            .get(self.keys.registry_rev())
            .query_async(&mut c)
            .await?;
        Ok(RegistryVersion {
            epoch,
            revision: rev.unwrap_or(0),
        })
    }

    /// One registry entry (view JSON).
    pub async fn registry_entry(&self, id: &ViewId) -> Result<Option<String>> {
        let mut c = self.conn.clone();
        Ok(c.hget(self.keys.views(), id.to_string()).await?)
    }

    /// A registry-changing script with the keys every such change touches, in
    /// the order the scripts name them: views, registry_rev, gen, rev, wm,
    /// full, retired.
    fn registry_change(
        &self,
        script: &'static redis::Script,
        id: &ViewId,
    ) -> redis::ScriptInvocation<'static> {
        let mut inv = script.prepare_invoke();
        inv.key(self.keys.views())
            .key(self.keys.registry_rev())
            .key(self.keys.view(id, "gen"))
            .key(self.keys.view(id, "rev"))
            .key(self.keys.view(id, "wm"))
            .key(self.keys.view(id, "full"))
            .key(self.keys.view(id, "retired"));
        inv
    }

    /// Sets a registry entry if it still is `expected` (`None`: absent);
    /// false when somebody changed it first (read again and decide again).
    pub async fn registry_put(
        &self,
        id: &ViewId,
        expected: Option<&str>,
        entry: &str,
        change: Change,
    ) -> Result<bool> {
        let mut c = self.conn.clone();
        let done: i64 = self
            .registry_change(&REGISTRY_PUT_SCRIPT, id)
            .arg(id.to_string())
            .arg(expected.unwrap_or(""))
            .arg(entry)
            .arg(match change {
                Change::Create => "create",
                Change::Update => "update",
                Change::Reshape => "reshape",
            })
            .arg(now_ms())
            .invoke_async(&mut c)
            .await?;
        Ok(done == 1)
    }

    /// Removes a registry entry if it still is `expected`, forgetting the
    /// view's watermark, last full read, last run and run history; false when it changed.
    pub async fn registry_delete(&self, id: &ViewId, expected: &str) -> Result<bool> {
        let mut c = self.conn.clone();
        let done: i64 = self
            .registry_change(&REGISTRY_DELETE_SCRIPT, id)
            .key(self.keys.view(id, "run"))
            .key(self.keys.view(id, "runs"))
            .key(self.keys.view(id, "inflight"))
            .arg(id.to_string())
            .arg(expected)
            .arg(now_ms())
            .invoke_async(&mut c)
            .await?;
        Ok(done == 1)
    }

    /// Entities applied over HTTP: name -> JSON.
    pub async fn entities(&self) -> Result<BTreeMap<String, String>> {
        let mut c = self.conn.clone();
        Ok(c.hgetall(self.keys.entities()).await?)
    }

    pub async fn put_entity(&self, name: &str, json: &str) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = c.hset(self.keys.entities(), name, json).await?;
        Ok(())
    }

    // ---- per-view state ----

    /// The registered view and its state; `None` when the view is not
    /// registered. One pipeline, read in an order that needs no MULTI (which
    /// Redis refuses, even for reads, when out of memory): the revision first,
    /// so any change after it makes [`ProfileStore::commit_run`] refuse the
    /// run; then the generation before the entry, so a reshape in between can
    /// only pair the *new* shape with the old generation, whose values the new
    /// generation's run replaces, never the old shape with the new generation.
    pub async fn run_state(&self, id: &ViewId) -> Result<Option<RunState>> {
        let mut c = self.conn.clone();
        type Raw = (
            Option<u64>,
            Option<u64>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let (revision, generation, entry, wm, full): Raw = redis::pipe()
            .get(self.keys.view(id, "rev"))
            .get(self.keys.view(id, "gen"))
            .hget(self.keys.views(), id.to_string())
            .get(self.keys.view(id, "wm"))
            .get(self.keys.view(id, "full"))
            .query_async(&mut c)
            .await?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        let view: View = serde_json::from_str(&entry).map_err(|e| {
            StoreError::Corrupt(format!("registry entry `{id}` is not a view: {e}"))
        })?;
        view.validate()
            .map_err(|e| StoreError::Corrupt(format!("registry entry `{id}`: {e}")))?;
        Ok(Some(RunState {
            view,
            generation: generation.unwrap_or(0),
            revision: revision.unwrap_or(0),
            watermark: parse_nanos(&format!("watermark of {id}"), wm)?,
            last_full_read: parse_nanos(&format!("last full read of {id}"), full)?,
        }))
    }

    pub async fn watermark(&self, id: &ViewId) -> Result<Option<Nanos>> {
        let mut c = self.conn.clone();
        let v: Option<String> = c.get(self.keys.view(id, "wm")).await?;
        parse_nanos(&format!("watermark of {id}"), v)
    }

    /// Shapes of the view whose values a run of the current shape must still remove.
    pub async fn retired_shapes(&self, id: &ViewId) -> Result<Vec<View>> {
        let mut c = self.conn.clone();
        let raw: Vec<String> = c.lrange(self.keys.view(id, "retired"), 0, -1).await?;
        Ok(raw
            .iter()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect())
    }

    /// On a cluster, makes sure the run's profile writes reached a replica of
    /// every primary before its watermark (on another node) commits them: a
    /// failover to a replica must not lose rows that the watermark has
    /// passed. One primary holds the state and the profiles otherwise, and
    /// replicates them in order, so a lagging replica loses the commit with
    /// the writes (and the run is repeated).
    pub async fn confirm_writes_replicated(&self) -> Result<()> {
        if !self.conn.is_cluster() {
            return Ok(());
        }
        let late = self.conn.wait_for_replicas(Duration::from_secs(5)).await?;
        if late.is_empty() {
            return Ok(());
        }
        Err(StoreError::Unavailable(format!(
            "writes not confirmed by a replica within 5 s on {}; the run is not committed",
            late.join(", ")
        )))
    }

    /// Ends a run: if `lease_token` still holds the view's lease and the view's
    /// revision is still `revision`, moves the watermark to `watermark` (when
    /// given), records a full read that started at `full_read_at` (when given)
    /// and, with `retired_removed`, forgets the retired shapes. Changes nothing
    /// unless it returns [`Commit::Done`].
    pub async fn commit_run(
        &self,
        id: &ViewId,
        lease_token: &str,
        revision: u64,
        watermark: Option<Nanos>,
        full_read_at: Option<Nanos>,
        retired_removed: bool,
    ) -> Result<Commit> {
        let mut c = self.conn.clone();
        let ok: i64 = redis::Script::new(COMMIT_RUN)
            .key(self.keys.view(id, "lease"))
            .key(self.keys.view(id, "rev"))
            .key(self.keys.view(id, "wm"))
            .key(self.keys.view(id, "full"))
            .key(self.keys.view(id, "retired"))
            .arg(lease_token)
            .arg(revision)
            .arg(watermark.map(|w| w.to_string()).unwrap_or_default())
            .arg(full_read_at.map(|w| w.to_string()).unwrap_or_default())
            .arg(if retired_removed { "1" } else { "0" })
            .invoke_async(&mut c)
            .await?;
        Ok(match ok {
            1 => Commit::Done,
            0 => Commit::LeaseLost,
            _ => Commit::Superseded,
        })
    }

    /// Starts a full resync as a new shape generation of the same shape (its
    /// first complete read then removes what the table no longer holds): if
    /// `lease_token` holds the lease and the revision is still `revision`,
    /// bumps the generation (to at least the clock in ms), forgets the last
    /// full read and bumps the revision. The new (generation, revision), or
    /// `None` when the lease or the view changed.
    pub async fn begin_full_pass(
        &self,
        id: &ViewId,
        lease_token: &str,
        revision: u64,
    ) -> Result<Option<(u64, u64)>> {
        let mut c = self.conn.clone();
        let r: Option<(u64, u64)> = redis::Script::new(FULL_PASS)
            .key(self.keys.view(id, "lease"))
            .key(self.keys.view(id, "rev"))
            .key(self.keys.view(id, "gen"))
            .key(self.keys.view(id, "full"))
            .arg(lease_token)
            .arg(revision)
            .arg(now_ms())
            .invoke_async(&mut c)
            .await?;
        Ok(r)
    }

    /// Records when the view last completed a read of its whole table, as a
    /// run's commit does (tests use it to stand in for the passing of time).
    pub async fn set_last_full_read(&self, id: &ViewId, at: Nanos) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = c.set(self.keys.view(id, "full"), at.to_string()).await?;
        Ok(())
    }

    /// Rewinds (or forgets, with `None`) a watermark, for backfills; a run in
    /// flight will not commit over it.
    pub async fn reset_watermark(&self, id: &ViewId, to: Option<Nanos>) -> Result<()> {
        let mut c = self.conn.clone();
        let _: i64 = redis::Script::new(RESET)
            .key(self.keys.view(id, "wm"))
            .key(self.keys.view(id, "full"))
            .key(self.keys.view(id, "rev"))
            .arg(to.map(|w| w.to_string()).unwrap_or_default())
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    // ---- leases ----

    /// Takes the view's lease if nobody holds it.
    pub async fn acquire_lease(&self, id: &ViewId, token: &str, ttl: Duration) -> Result<bool> {
        let mut c = self.conn.clone();
        let r: Option<String> = redis::cmd("SET")
            .arg(self.keys.view(id, "lease"))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut c)
            .await?;
        Ok(r.is_some())
    }

    /// Extends the lease if still held; false when it was lost.
    pub async fn renew_lease(&self, id: &ViewId, token: &str, ttl: Duration) -> Result<bool> {
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
             return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
        );
        let mut c = self.conn.clone();
        let ok: i64 = script
            .key(self.keys.view(id, "lease"))
            .arg(token)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut c)
            .await?;
        Ok(ok == 1)
    }

    pub async fn release_lease(&self, id: &ViewId, token: &str) -> Result<()> {
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then \
             return redis.call('DEL', KEYS[1]) end return 0",
        );
        let mut c = self.conn.clone();
        let _: i64 = script
            .key(self.keys.view(id, "lease"))
            .arg(token)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    pub async fn lease_holder(&self, id: &ViewId) -> Result<Option<String>> {
        let mut c = self.conn.clone();
        Ok(c.get(self.keys.view(id, "lease")).await?)
    }

    // ---- run records ----

    pub async fn last_run(&self, id: &ViewId) -> Result<Option<RunRecord>> {
        let mut c = self.conn.clone();
        let v: Option<String> = c.get(self.keys.view(id, "run")).await?;
        Ok(v.and_then(|s| serde_json::from_str(&s).ok()))
    }

    pub async fn save_run(&self, id: &ViewId, run: &RunRecord) -> Result<()> {
        let mut c = self.conn.clone();
        let json = serde_json::to_string(run).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let _: () = c.set(self.keys.view(id, "run"), json).await?;
        Ok(())
    }

    /// Saves a finished run as the view's last run and at the head of its
    /// history, trimmed to the `keep` newest, in one script: the last run and
    /// the history's head never disagree.
    pub async fn record_run(&self, id: &ViewId, run: &RunRecord, keep: usize) -> Result<()> {
        let mut c = self.conn.clone();
        let json = serde_json::to_string(run).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let _: i64 = RECORD_RUN_SCRIPT
            .key(self.keys.view(id, "run"))
            .key(self.keys.view(id, "runs"))
            .arg(json)
            .arg(keep.max(1))
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// The view's finished runs, newest first, at most `n`. A record this
    /// version cannot read is left out rather than failing the listing.
    pub async fn run_history(&self, id: &ViewId, n: usize) -> Result<Vec<RunRecord>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        let raw: Vec<String> = c
            .lrange(self.keys.view(id, "runs"), 0, n as isize - 1)
            .await?;
        Ok(raw
            .iter()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect())
    }

    /// Notes that the run holding lease `token` started at `started_at`
    /// (RFC 3339). Trusted only while that token holds the lease (see
    /// [`ProfileStore::in_flight`]), so a crashed run's note needs no clean-up.
    pub async fn note_run_started(&self, id: &ViewId, token: &str, started_at: &str) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = c
            .hset_multiple(
                self.keys.view(id, "inflight"),
                &[("token", token), ("started_at", started_at)],
            )
            .await?;
        Ok(())
    }

    /// Whether a run of the view holds its lease now, and when it started if
    /// it noted that: `None` when no run holds the lease; `Some(None)` while
    /// the holder has not noted its start yet (it just took the lease).
    pub async fn in_flight(&self, id: &ViewId) -> Result<Option<Option<String>>> {
        let mut c = self.conn.clone();
        let (holder, token, started): (Option<String>, Option<String>, Option<String>) =
            redis::pipe()
                .get(self.keys.view(id, "lease"))
                .hget(self.keys.view(id, "inflight"), "token")
                .hget(self.keys.view(id, "inflight"), "started_at")
                .query_async(&mut c)
                .await?;
        Ok(holder.map(|h| started.filter(|_| token.as_deref() == Some(h.as_str()))))
    }

    // ---- passes over profile keys ----

    /// `MATCH` pattern of every profile key of entity `join_key` in this project.
    fn entity_key_pattern(&self, join_key: &str) -> Vec<u8> {
        // Every key of this entity starts with the serialized join key and ends
        // with the project; the value in between varies.
        let empty = feast::entity_key(join_key, b"", "");
        let mut pattern = glob_escape(&empty[..empty.len() - 4]);
        pattern.push(b'*');
        pattern.extend(glob_escape(self.project.as_bytes()));
        pattern
    }

    /// A pass over every key matching `pattern` on every primary (a SCAN sees
    /// one node's keys). Keys that a resharding moves during the pass may be
    /// missed or seen twice.
    async fn scan_all(&self, pattern: &[u8]) -> Result<ScanAll> {
        let mut nodes: Vec<Option<Node>> =
            self.conn.primaries().await?.into_iter().map(Some).collect();
        if nodes.is_empty() {
            nodes.push(None);
        }
        Ok(ScanAll {
            pattern: pattern.to_vec(),
            nodes,
            cursor: 0,
        })
    }

    /// Runs one command per key (`cmd` builds it), grouped by slot on a
    /// cluster; the replies in key order.
    async fn per_key(
        &self,
        keys: &[Vec<u8>],
        cmd: impl Fn(&[Vec<u8>]) -> redis::Cmd,
    ) -> Result<Vec<redis::Value>> {
        if !self.conn.is_cluster() {
            return self.run_all(vec![cmd(keys)], &[]).await;
        }
        let mut by_slot: BTreeMap<u16, Vec<Vec<u8>>> = BTreeMap::new();
        for k in keys {
            by_slot
                .entry(super::conn::slot(k))
                .or_default()
                .push(k.clone());
        }
        let slots: Vec<u16> = by_slot.keys().copied().collect();
        let cmds = by_slot.values().map(|ks| cmd(ks)).collect();
        self.run_all(cmds, &slots).await
    }

    /// Removes the view's values and `_ts:`/`_gen:` fields from every entity
    /// hash (other views' fields stay); returns how many hashes held some.
    pub async fn purge_view(&self, view: &View) -> Result<u64> {
        let fields = super::view_hash_fields(view);
        let mut scan = self
            .scan_all(&self.entity_key_pattern(view.entity.join_key()))
            .await?;
        let mut purged = 0u64;
        while let Some(keys) = scan.next(self).await? {
            let cmds: Vec<redis::Cmd> = keys
                .iter()
                .map(|k| {
                    let mut c = redis::cmd("HDEL");
                    c.arg(k).arg(&fields);
                    c
                })
                .collect();
            let slots: Vec<u16> = keys.iter().map(|k| super::conn::slot(k)).collect();
            for n in self.run_all(cmds, &slots).await? {
                if redis::from_redis_value::<u64>(&n).unwrap_or(0) > 0 {
                    purged += 1;
                }
            }
        }
        Ok(purged)
    }

    /// After a reshape: removes every value that an older shape generation of
    /// `view` left (the retired shapes name the fields and entities they used),
    /// and fields the view no longer has, so the store holds exactly what the
    /// current shape writes. Returns how many hashes lost older values.
    pub async fn remove_older_generations(
        &self,
        view: &View,
        generation: u64,
        retired: &[View],
    ) -> Result<u64> {
        let fv = view.feast_name();
        let current = super::view_hash_fields(view);
        let mut old_only: Vec<Vec<u8>> = Vec::new();
        for r in retired {
            for f in super::view_hash_fields(r) {
                if !current.contains(&f) && !old_only.contains(&f) {
                    old_only.push(f);
                }
            }
        }
        let mut join_keys: Vec<&str> = vec![view.entity.join_key()];
        for r in retired {
            if !join_keys.contains(&r.entity.join_key()) {
                join_keys.push(r.entity.join_key());
            }
        }
        let mut removed = 0u64;
        for join_key in join_keys {
            let mut scan = self.scan_all(&self.entity_key_pattern(join_key)).await?;
            while let Some(keys) = scan.next(self).await? {
                let call = |keys: &[Vec<u8>]| {
                    let mut c = redis::cmd("EVAL");
                    c.arg(REMOVE_OLDER_GENERATIONS).arg(keys.len());
                    for k in keys {
                        c.arg(k);
                    }
                    c.arg(super::gen_field(&fv))
                        .arg(generation)
                        .arg(current.len() + old_only.len());
                    for f in current.iter().chain(&old_only).chain(&old_only) {
                        c.arg(&f[..]);
                    }
                    c
                };
                for n in self.per_key(&keys, call).await? {
                    removed += redis::from_redis_value::<u64>(&n)
                        .map_err(|e| StoreError::Corrupt(format!("clean-up reply: {e}")))?;
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projects_state_keys_share_its_hash_tag() {
        let k = Keys::new("materializer:", "signals");
        let id = ViewId {
            name: "ecom".into(),
            version: 2,
        };
        assert_eq!(k.view(&id, "wm"), "materializer:{signals}:ecom:2:wm");
        assert_eq!(k.views(), "materializer:{signals}:views");
        assert_eq!(k.meta(), "materializer:{signals}:meta");
        assert_eq!(k.global_meta(), "materializer:meta");
        let slot = super::super::conn::slot;
        for key in [k.views(), k.registry_rev(), k.meta(), k.entities()] {
            assert_eq!(slot(key.as_bytes()), slot(k.view(&id, "lease").as_bytes()));
        }
        let other = Keys::new("materializer:", "other");
        assert_ne!(k.view(&id, "wm"), other.view(&id, "wm"));
    }
}
