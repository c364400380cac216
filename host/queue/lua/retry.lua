--[[
  retry: release leased runs whose attempt failed, to become ready again after a delay.
  Fenced like ack: only the current lease owner can schedule the retry. The run keeps its
  envelope and attempt counter; the next claim counts the next attempt.

  KEYS[1] inflight  ZSET run id -> lease deadline
  KEYS[2] owner     HASH run id -> owner token
  KEYS[3] delayed   ZSET run id -> due time (ms, Redis clock)
  KEYS[4] wake      LIST wake tokens
  KEYS[5] progress  HASH run id -> last progress report
  KEYS[6] meta      HASH run id -> "priority|max_attempts|type|lane"
  KEYS[7] active    HASH type -> runs in flight
  KEYS[8] limits    HASH type -> limits

  ARGV triples: run id, owner token, delay in ms (0: due at once, promoted by the next claim)

  Returns: {retried, fenced_id...}
]]
--- @include "now_ms"
--- @include "ready_score"
--- @include "limits"

local now = now_ms()
local retried = 0
local fenced = {}
local counts = {}
for i = 1, #ARGV, 3 do
  local id, token, delay = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if redis.call('HGET', KEYS[2], id) == token then
    if redis.call('ZREM', KEYS[1], id) == 1 then count_type(counts, redis.call('HGET', KEYS[6], id)) end
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[5], id)
    redis.call('ZADD', KEYS[3], now + delay, id)
    retried = retried + 1
  else
    fenced[#fenced + 1] = id
  end
end
leave_active(KEYS[7], KEYS[8], KEYS[4], counts)
-- Idle workers sleep until the earliest due run they knew of: wake one to look again.
if retried > 0 and redis.call('LLEN', KEYS[4]) == 0 then
  redis.call('LPUSH', KEYS[4], 1)
end
local out = {retried}
for _, id in ipairs(fenced) do out[#out + 1] = id end
return out
