--[[
  bury: forget dying runs (attempts spent by lease expiry) once PostgreSQL records them dead.
  Only runs still in the dying set are removed, so a stray call cannot remove a live run.

  KEYS[1] dying     ZSET run id -> time its last lease expired
  KEYS[2] env       HASH run id -> envelope
  KEYS[3] meta      HASH run id -> "priority|max_attempts|type|lane"
  KEYS[4] att       HASH run id -> attempts started
  KEYS[5] owner     HASH run id -> owner token
  KEYS[6] progress  HASH run id -> last progress report

  ARGV run ids

  Returns: number of runs buried
]]
local buried = 0
for _, id in ipairs(ARGV) do
  if redis.call('ZREM', KEYS[1], id) == 1 then
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
    redis.call('HDEL', KEYS[5], id)
    redis.call('HDEL', KEYS[6], id)
    buried = buried + 1
  end
end
return buried
