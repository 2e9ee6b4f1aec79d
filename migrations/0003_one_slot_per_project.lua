-- Layout 3: a project's whole state under one Redis Cluster hash tag, the
-- project, so every state script (a registry change touches the registry and
-- the view's state together) runs on one slot.
-- ARGV[1]: prefix, ARGV[2]: project.
--   {prefix}{{project}}:meta                     hash   schema_version (from 3 on), epoch
--   {prefix}{{project}}:views                    hash   "name:version" -> view JSON (the registry)
--   {prefix}{{project}}:registry_rev             string registry revision, +1 per change
--   {prefix}{{project}}:entities                 hash   entities applied over HTTP
--   {prefix}{{project}}:{name}:{version}:wm      string watermark, nanoseconds since the epoch
--   {prefix}{{project}}:{name}:{version}:full    string when the last whole-table read started
--   {prefix}{{project}}:{name}:{version}:run     string last run record (JSON)
--   {prefix}{{project}}:{name}:{version}:lease   string holder token of the sync lease (expiring)
--   {prefix}{{project}}:{name}:{version}:gen     string shape generation, +1 per reshape or delete
--   {prefix}{{project}}:{name}:{version}:rev     string view revision, +1 per reshape, delete or reset
--   {prefix}{{project}}:{name}:{version}:retired list   earlier shapes whose values are still to remove
--   {prefix}meta                                 hash   schema_version of layouts 1 and 2 only
-- Layout 2 existed on one Redis only (it could not run on a cluster), so this
-- script moves keys with RENAME. Idempotent: a second run finds nothing to move.
local p, proj = ARGV[1], ARGV[2]
local old = p .. proj .. ':'
local new = p .. '{' .. proj .. '}:'
local function move(from, to)
  if redis.call('EXISTS', from) == 1 and redis.call('EXISTS', to) == 0 then
    redis.call('RENAME', from, to)
  end
end
for _, name in ipairs({'views', 'registry_rev', 'entities'}) do
  move(old .. name, new .. name)
end
-- Every per-view key, also of deleted views (their generation and retired
-- shapes still matter when the view is registered again).
local pattern = string.gsub(old, '[%*%?%[%]\\]', '\\%0') .. '{*}:*'
for _, key in ipairs(redis.call('KEYS', pattern)) do
  local id, kind = string.match(string.sub(key, #old + 1), '^{(.+)}:(%a+)$')
  if id then
    move(key, new .. id .. ':' .. kind)
  end
end
local epoch = redis.call('HGET', p .. 'meta', 'epoch')
if epoch then
  redis.call('HSETNX', new .. 'meta', 'epoch', epoch)
end
redis.call('HSET', new .. 'meta', 'layout', 'one slot per project: meta,views,registry_rev,entities,wm,full,run,lease,gen,rev,retired')
return 1
