-- Layout 1 of the daemon's own state, under the prefix ARGV[1]:
--   {prefix}views            hash  "name:version" -> view JSON (the registry)
--   {prefix}wm:{name}:{v}    string  watermark, nanoseconds since the epoch
--   {prefix}run:{name}:{v}   string  last run record (JSON)
--   {prefix}lease:{name}:{v} string  holder token of the view's sync lease (with expiry)
--   {prefix}full:{name}:{v}  string  when the view last completed a whole-table read (nanoseconds)
--   {prefix}meta             hash   layout facts; schema_version = last migration applied
--   {prefix}entities         hash   entities applied over HTTP
-- Idempotent: it only records the layout.
redis.call('HSET', ARGV[1] .. 'meta', 'layout', 'views,wm,run,lease')
return 1
