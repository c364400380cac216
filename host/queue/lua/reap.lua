--[[
  reap: recover runs whose lease expired (the worker died, hung or lost Redis): at-least-once.
  A run with attempts left goes straight back to its ready queue; a run whose attempts are spent
  moves to the dying set, where it stays (envelope kept) until the caller has recorded it dead in
  PostgreSQL and called bury. Dying runs are returned on every call until buried, so a crash
  between the two steps loses nothing. Idempotent: a second call finds nothing new to move.

  KEYS[1] inflight  ZSET run id -> lease deadline
  KEYS[2] meta      HASH run id -> "priority|max_attempts|type|lane"
  KEYS[3] att       HASH run id -> attempts started
  KEYS[4] owner     HASH run id -> owner token
  KEYS[5] dying     ZSET run id -> time its last lease expired
  KEYS[6] wake      LIST wake tokens
  KEYS[7] active    HASH type -> runs in flight
  KEYS[8] limits    HASH type -> limits

  ARGV[1] key prefix
  ARGV[2] most runs to move in this call

  Returns: {requeued, dying_id1, dying_attempt1, dying_owner1, ...}

  Reads prefix..'config' (age_step_ms) for the ready score: see includes/ready_score.lua.
]]
--- @include "now_ms"
--- @include "ready_score"
--- @include "lanes"
--- @include "limits"

local prefix, limit = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local requeued = 0
local counts = {}
local age = age_step(prefix)
for i, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  local meta = redis.call('HGET', KEYS[2], id)
  count_type(counts, meta)
  local owner = redis.call('HGET', KEYS[4], id) or ''
  redis.call('HDEL', KEYS[4], id)
  if meta then
    local priority, max_attempts, jobtype, lane = split_meta(meta)
    local attempt = tonumber(redis.call('HGET', KEYS[3], id) or '0')
    if attempt >= max_attempts then
      redis.call('ZADD', KEYS[5], now, id)
      redis.call('HSET', KEYS[4], id, owner)  -- kept so bury/PG know which attempt was lost
    else
      push_ready(prefix, jobtype, lane, ready_score(priority, now, age), id)
      requeued = requeued + 1
    end
  end
end
leave_active(KEYS[7], KEYS[8], KEYS[6], counts)
if requeued > 0 and redis.call('LLEN', KEYS[6]) == 0 then
  redis.call('LPUSH', KEYS[6], 1)
end
local out = {requeued}
local dying = redis.call('ZRANGE', KEYS[5], 0, limit - 1)
for _, id in ipairs(dying) do
  out[#out + 1] = id
  out[#out + 1] = tonumber(redis.call('HGET', KEYS[3], id) or '0')
  out[#out + 1] = redis.call('HGET', KEYS[4], id) or ''
end
return out
