-- Layout 2: the daemon's state per Feast project, per view keys hash-tagged by
-- view so that a view's state lives in one Redis Cluster slot.
-- ARGV[1]: prefix, ARGV[2]: project.
--   {prefix}meta                               hash   schema_version, epoch, layout
--   {prefix}{project}:views                    hash   "name:version" -> view JSON (the registry)
--   {prefix}{project}:registry_rev             string registry revision, +1 per change
--   {prefix}{project}:entities                 hash   entities applied over HTTP
--   {prefix}{project}:{name:version}:wm        string watermark, nanoseconds since the epoch
--   {prefix}{project}:{name:version}:full      string when the last whole-table read started
--   {prefix}{project}:{name:version}:run       string last run record (JSON)
--   {prefix}{project}:{name:version}:lease     string holder token of the sync lease (expiring)
--   {prefix}{project}:{name:version}:gen       string shape generation, +1 per reshape or delete
--   {prefix}{project}:{name:version}:rev       string view revision, +1 per reshape, delete or reset
--   {prefix}{project}:{name:version}:retired   list   earlier shapes whose values are still to remove
-- Layout 1 had no project: its registry, watermarks, runs and last full
-- reads move to the project of the daemon that migrates first (leases are
-- dropped: they expire anyway). Idempotent: a second run finds nothing to move.
local p, proj = ARGV[1], ARGV[2]
local ns = p .. proj .. ':'
local old_views = p .. 'views'
if redis.call('EXISTS', old_views) == 1 then
  local ids = redis.call('HKEYS', old_views)
  for _, id in ipairs(ids) do
    for _, kind in ipairs({'wm', 'run', 'full'}) do
      local old = p .. kind .. ':' .. id
      if redis.call('EXISTS', old) == 1 then
        redis.call('RENAME', old, ns .. '{' .. id .. '}:' .. kind)
      end
    end
    redis.call('DEL', p .. 'lease:' .. id)
    local json = redis.call('HGET', old_views, id)
    redis.call('HSETNX', ns .. 'views', id, json)
  end
  redis.call('DEL', old_views)
  redis.call('INCR', ns .. 'registry_rev')
end
if redis.call('EXISTS', p .. 'entities') == 1 and redis.call('EXISTS', ns .. 'entities') == 0 then
  redis.call('RENAME', p .. 'entities', ns .. 'entities')
end
redis.call('HSET', p .. 'meta', 'layout', 'per-project views,registry_rev,entities,wm,full,run,lease,gen,rev,retired')
return 1
