//! Erasure of one entity's profiles (privacy requests).
//!
//! Promises: [`ProfileStore::erase`] removes an entity's values (of every view
//! of its entity, or of one view) and leaves a tombstone in the entity's hash:
//! `_erased` (every view) or `_erased:{feature_view}` (one view), holding the
//! erasure time as a serialized Timestamp. The newest-wins script never writes
//! a row stamped at or before a tombstone, whatever its shape generation, so a
//! later run, a replay, a full resync or a reshape does not bring the values
//! back; a row stamped after the erasure does.
//!
//! Assumes: the erasure time is this process's clock, and row timestamps are
//! comparable with it (a warehouse clock far ahead would stamp rows "after"
//! an erasure that happened later in real time). A tombstone keeps the entity
//! key (its identifier) in Redis: it is what remembers the erasure. It lives
//! as long as the hash: persistent, or, when the key expires because of views
//! with a ttl, at least until the erased view's rows stamped before the
//! erasure are past its ttl.

use super::{feast, view_hash_fields, ProfileStore, StoreResult};
use crate::model::View;
use crate::time::Nanos;

/// KEYS[1]: the entity hash. ARGV: tombstone field, tombstone, then
/// 'all' | 'view'; for 'view': the view's ttl in ms (0: none), the erasure
/// time in ms, then the view's hash fields. Returns 1 when the key held
/// values that went, else 0.
const ERASE: &str = r"
local key, tf, t, mode = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local removed = 0
if mode == 'all' then
  local n = redis.call('HLEN', key) - redis.call('HEXISTS', key, '_erased')
  if n > 0 then removed = 1 end
  redis.call('DEL', key)
else
  if redis.call('HDEL', key, unpack(ARGV, 6, #ARGV)) > 0 then removed = 1 end
  local ttl, at = tonumber(ARGV[4]), tonumber(ARGV[5])
  local expires = redis.call('PEXPIRETIME', key)
  if expires >= 0 then
    if ttl == 0 then
      redis.call('PERSIST', key)
    elseif at + ttl > expires then
      redis.call('PEXPIREAT', key, at + ttl)
    end
  end
end
redis.call('HSET', key, tf, t)
return removed";

impl ProfileStore {
    /// Erases the values of the entities `values` of `join_key` at `at`: of
    /// `view` only, or of every view (`None`). Returns how many entities had
    /// values that went.
    pub async fn erase(
        &self,
        join_key: &str,
        values: &[String],
        view: Option<&View>,
        at: Nanos,
    ) -> StoreResult<u64> {
        if values.is_empty() {
            return Ok(0);
        }
        let mut tombstone = Vec::new();
        feast::push_timestamp(&mut tombstone, at);
        let field = super::erased_field(view.map(|v| v.feast_name()).as_deref());
        let mut cmds = Vec::with_capacity(values.len());
        let mut slots = Vec::with_capacity(values.len());
        for value in values {
            let key = feast::entity_key(join_key, value.as_bytes(), self.project());
            slots.push(super::conn::slot(&key));
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(ERASE)
                .arg(1)
                .arg(key)
                .arg(&field)
                .arg(&tombstone[..]);
            match view {
                None => {
                    cmd.arg("all");
                }
                Some(v) => {
                    let ttl_ms = v.ttl().map(|d| d.as_millis() as i64).unwrap_or(0);
                    cmd.arg("view")
                        .arg(ttl_ms)
                        .arg(at.div_euclid(1_000_000))
                        .arg(view_hash_fields(v));
                }
            }
            cmds.push(cmd);
        }
        let mut removed = 0;
        for r in self.run_all(cmds, &slots).await? {
            removed += redis::from_redis_value::<u64>(&r).unwrap_or(0);
        }
        Ok(removed)
    }
}
