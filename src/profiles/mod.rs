//! The Profiles Store on Redis, and the daemon's own state beside it.
//!
//! Promises:
//! - profile writes use Feast's layout ([`feast`]) and are newest-wins: one Lua
//!   script call checks each entity's stored `_ts:{feature_view}` and skips the
//!   entity if the stored time is newer (an equal time overwrites), atomically
//!   inside Redis, so replays, replicas and backfills never regress a value;
//! - writes are idempotent; a batch whose call failed must be treated as
//!   unwritten (some of its keys may have landed; rewriting them is harmless);
//! - the watermark of a view moves only through [`ProfileStore::commit_watermark`],
//!   which checks in the same script that the caller still holds the view's lease
//!   and that nobody reset the watermark since the run read it;
//! - state keys (registry `views`, `wm:`, `full:`, `run:`, `lease:`, `meta`) live
//!   under one prefix in the same Redis as the profiles, so losing Redis loses
//!   both together.
//!
//! Assumes one Redis (not Cluster): a script touches many entity keys at once.

pub mod feast;
pub mod read;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::config::ProfilesConfig;
use crate::model::{View, ViewId};
use crate::warehouse::Nanos;

const NEWEST_WINS: &str = include_str!("newest_wins.lua");

/// Ordered migrations of the state layout; each is idempotent and gets the prefix as ARGV[1].
const MIGRATIONS: &[(u32, &str, &str)] = &[(
    1,
    "initial_layout",
    include_str!("../../migrations/0001_initial_layout.lua"),
)];

/// One entity's new values for one view: `values` pairs a field index (into
/// [`WriteSpec::fields`]) with a serialized Feast `Value`.
pub struct Upsert<'a> {
    pub entity: &'a str,
    pub ts: Nanos,
    pub values: &'a [(u32, &'a [u8])],
}

/// What is fixed for every write of one view.
pub struct WriteSpec {
    pub join_key: String,
    pub ts_field: String,
    /// Hash field name of each view field, in view order.
    pub fields: Vec<[u8; 4]>,
    /// Key expiry from the view's `ttl`, in milliseconds; 0 for none.
    pub ttl_ms: u64,
}

impl WriteSpec {
    pub fn for_view(view: &View) -> WriteSpec {
        let fv = view.feast_name();
        WriteSpec {
            join_key: view.entity.join_key().to_string(),
            ts_field: feast::ts_field(&fv),
            fields: view
                .fields
                .iter()
                .map(|f| feast::feature_field(&fv, &f.name))
                .collect(),
            ttl_ms: view.ttl().map(|d| d.as_millis() as u64).unwrap_or(0),
        }
    }
}

/// Every hash field a view owns in an entity's hash: one per field, in view
/// order, then `_ts:{feature_view}`.
pub fn view_hash_fields(view: &View) -> Vec<Vec<u8>> {
    let fv = view.feast_name();
    let mut fields: Vec<Vec<u8>> = view
        .fields
        .iter()
        .map(|f| feast::feature_field(&fv, &f.name).to_vec())
        .collect();
    fields.push(feast::ts_field(&fv).into_bytes());
    fields
}

/// Newest-wins script calls encoded by [`ProfileStore::prepare`], ready to send.
pub struct PreparedWrite {
    pipelines: Vec<redis::Pipeline>,
    rows: u64,
}

/// What [`ProfileStore::commit_watermark`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    Done,
    /// Another holder has the view's lease.
    LeaseLost,
    /// The watermark is no longer the one the run started from (reset, reshaped, deleted).
    WatermarkChanged,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Entities whose values were written.
    pub written: u64,
    /// Entities left alone because Redis already held a newer timestamp.
    pub stale: u64,
}

/// The record of a view's last run, as `status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub view: String,
    pub version: u32,
    /// `ok`, `failed`, `interrupted` (shutdown) or `running`.
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: u64,
    pub rows_read: u64,
    pub rows_written: u64,
    pub rows_stale: u64,
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
    conn: ConnectionManager,
    project: String,
    prefix: String,
    script: redis::Script,
}

impl std::fmt::Debug for ProfileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileStore")
            .field("project", &self.project)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl ProfileStore {
    /// Connects (with timeouts; the connection reconnects by itself afterwards)
    /// and applies pending state migrations.
    pub async fn connect(cfg: &ProfilesConfig) -> Result<ProfileStore> {
        let client = redis::Client::open(cfg.redis_url.expose())
            .map_err(|e| anyhow::anyhow!("profiles.redis_url: {}", e))?;
        let conn_cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(5))
            .set_response_timeout(Duration::from_secs(30))
            .set_number_of_retries(2)
            .set_max_delay(2000);
        let conn = client
            .get_connection_manager_with_config(conn_cfg)
            .await
            .with_context(|| format!("cannot connect to Redis at {}", cfg.redis_url))?;
        let store = ProfileStore {
            conn,
            project: cfg.project.clone(),
            prefix: cfg.state_prefix.clone(),
            script: redis::Script::new(NEWEST_WINS),
        };
        // The first commands are where a wrong password, a read-only replica or
        // an out-of-memory Redis shows: say which Redis.
        store
            .migrate()
            .await
            .with_context(|| format!("Redis at {}", cfg.redis_url))?;
        Ok(store)
    }

    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    pub fn state_key(&self, suffix: &str) -> String {
        format!("{}{}", self.prefix, suffix)
    }

    fn view_key(&self, kind: &str, id: &ViewId) -> String {
        format!("{}{}:{}:{}", self.prefix, kind, id.name, id.version)
    }

    /// Applies pending state migrations (idempotent; run at every connect).
    pub async fn migrate(&self) -> Result<()> {
        let mut c = self.conn.clone();
        let meta = self.state_key("meta");
        let current: Option<u32> = c.hget(&meta, "schema_version").await?;
        for (version, name, lua) in MIGRATIONS {
            if current.unwrap_or(0) >= *version {
                continue;
            }
            redis::Script::new(lua)
                .arg(&self.prefix)
                .invoke_async::<i64>(&mut c)
                .await
                .with_context(|| format!("state migration {version:04}_{name}"))?;
            let _: () = c.hset(&meta, "schema_version", *version).await?;
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
        Ok(c.hget(self.state_key("meta"), "epoch").await?)
    }

    pub async fn ping(&self) -> Result<()> {
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
    ) -> Result<WriteOutcome> {
        self.send(self.prepare(spec, rows, batch)).await
    }

    /// Encodes the newest-wins script calls for `rows` (`batch` entities per
    /// call) without sending them. The result owns its bytes, so a caller can
    /// encode the next page while Redis runs this one.
    pub fn prepare(&self, spec: &WriteSpec, rows: &[Upsert<'_>], batch: usize) -> PreparedWrite {
        let batch = batch.max(1);
        // Crash tests only: one pipeline per script call, so a crash can land
        // between two of them, leaving half a page in Redis.
        let per_pipeline = if crate::failpoints::armed("mid_page") {
            batch
        } else {
            rows.len().max(1)
        };
        let sha = self.script.get_hash();
        let mut key = Vec::with_capacity(128);
        let mut ts_buf = Vec::with_capacity(16);
        let pipelines = rows
            .chunks(per_pipeline)
            .map(|part| {
                let mut pipe = redis::pipe();
                for chunk in part.chunks(batch) {
                    let cmd = pipe.cmd("EVALSHA").arg(sha).arg(chunk.len());
                    for r in chunk {
                        key.clear();
                        feast::push_entity_key(
                            &mut key,
                            &spec.join_key,
                            r.entity.as_bytes(),
                            &self.project,
                        );
                        cmd.arg(&key[..]);
                    }
                    cmd.arg(&spec.ts_field).arg(spec.ttl_ms);
                    for r in chunk {
                        ts_buf.clear();
                        feast::push_timestamp(&mut ts_buf, r.ts);
                        cmd.arg(r.values.len()).arg(&ts_buf[..]);
                        for (field, value) in r.values {
                            cmd.arg(&spec.fields[*field as usize][..]).arg(*value);
                        }
                    }
                }
                pipe
            })
            .collect();
        PreparedWrite {
            pipelines,
            rows: rows.len() as u64,
        }
    }

    /// Sends what [`ProfileStore::prepare`] encoded. On error, treat every row
    /// of it as unwritten (some may have landed; rewriting them is harmless).
    pub async fn send(&self, prepared: PreparedWrite) -> Result<WriteOutcome> {
        let mut c = self.conn.clone();
        let mut written = 0u64;
        for (i, pipe) in prepared.pipelines.iter().enumerate() {
            if i > 0 {
                crate::failpoints::hit("mid_page").await;
            }
            let counts: Vec<u64> = match pipe.query_async(&mut c).await {
                Ok(v) => v,
                Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                    // Redis restarted or SCRIPT FLUSH: load once more and resend.
                    self.script.prepare_invoke().load_async(&mut c).await?;
                    pipe.query_async(&mut c).await?
                }
                Err(e) => return Err(e.into()),
            };
            written += counts.iter().sum::<u64>();
        }
        Ok(WriteOutcome {
            written,
            stale: prepared.rows - written,
        })
    }

    /// Loads the newest-wins script (call once before writing).
    pub async fn load_scripts(&self) -> Result<()> {
        let mut c = self.conn.clone();
        self.script.prepare_invoke().load_async(&mut c).await?;
        Ok(())
    }

    pub async fn watermark(&self, id: &ViewId) -> Result<Option<Nanos>> {
        let mut c = self.conn.clone();
        let v: Option<String> = c.get(self.view_key("wm", id)).await?;
        v.map(|s| {
            s.parse()
                .with_context(|| format!("watermark of {id} is not a number: `{s}`"))
        })
        .transpose()
    }

    /// Moves the watermark from `expected` (what the run started from) to `wm`
    /// if `lease_token` still holds the view's lease and nobody changed the
    /// watermark meanwhile (a `reset`, a reshaping apply or a delete forgets it:
    /// a run finishing afterwards must not bring it back). Changes nothing
    /// unless it returns [`Commit::Done`].
    pub async fn commit_watermark(
        &self,
        id: &ViewId,
        lease_token: &str,
        expected: Option<Nanos>,
        wm: Nanos,
    ) -> Result<Commit> {
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end \
             local cur = redis.call('GET', KEYS[2]) \
             if (cur or '') ~= ARGV[2] then return 2 end \
             redis.call('SET', KEYS[2], ARGV[3]) return 1",
        );
        let mut c = self.conn.clone();
        let ok: i64 = script
            .key(self.view_key("lease", id))
            .key(self.view_key("wm", id))
            .arg(lease_token)
            .arg(expected.map(|w| w.to_string()).unwrap_or_default())
            .arg(wm.to_string())
            .invoke_async(&mut c)
            .await?;
        Ok(match ok {
            1 => Commit::Done,
            0 => Commit::LeaseLost,
            _ => Commit::WatermarkChanged,
        })
    }

    /// When the view last completed a read of its whole table (first run or
    /// `full_resync_every`); forgotten with the watermark.
    pub async fn last_full_read(&self, id: &ViewId) -> Result<Option<Nanos>> {
        let mut c = self.conn.clone();
        let v: Option<String> = c.get(self.view_key("full", id)).await?;
        Ok(v.and_then(|s| s.parse().ok()))
    }

    pub async fn set_last_full_read(&self, id: &ViewId, at: Nanos) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = c.set(self.view_key("full", id), at.to_string()).await?;
        Ok(())
    }

    /// Rewinds (or forgets, with `None`) a watermark, for backfills.
    pub async fn reset_watermark(&self, id: &ViewId, to: Option<Nanos>) -> Result<()> {
        let mut c = self.conn.clone();
        let key = self.view_key("wm", id);
        match to {
            Some(wm) => c.set::<_, _, ()>(key, wm.to_string()).await?,
            None => c.del::<_, ()>(&[key, self.view_key("full", id)]).await?,
        }
        Ok(())
    }

    /// Takes the view's lease if nobody holds it.
    pub async fn acquire_lease(&self, id: &ViewId, token: &str, ttl: Duration) -> Result<bool> {
        let mut c = self.conn.clone();
        let r: Option<String> = redis::cmd("SET")
            .arg(self.view_key("lease", id))
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
            .key(self.view_key("lease", id))
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
            .key(self.view_key("lease", id))
            .arg(token)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    pub async fn lease_holder(&self, id: &ViewId) -> Result<Option<String>> {
        let mut c = self.conn.clone();
        Ok(c.get(self.view_key("lease", id)).await?)
    }

    pub async fn last_run(&self, id: &ViewId) -> Result<Option<RunRecord>> {
        let mut c = self.conn.clone();
        let v: Option<String> = c.get(self.view_key("run", id)).await?;
        Ok(v.and_then(|s| serde_json::from_str(&s).ok()))
    }

    pub async fn save_run(&self, id: &ViewId, run: &RunRecord) -> Result<()> {
        let mut c = self.conn.clone();
        let _: () = c
            .set(self.view_key("run", id), serde_json::to_string(run)?)
            .await?;
        Ok(())
    }
}
