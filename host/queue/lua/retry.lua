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

  ARGV[1] JSON array of [run id, owner token, delay in ms] (0: due at once; the next claim
  promotes it)

  Returns: {retried, fenced_id...}
]]
--- @include "now_ms"
--- @include "ready_score"
--- @include "limits"
--- @include "batch"

local now = now_ms()
local good, ids, fenced = owned(KEYS[2], cjson.decode(ARGV[1]))
if #ids > 0 then
  local counts = {}
  count_leaving(KEYS[1], KEYS[6], ids, counts)
  chunked('ZREM', KEYS[1], ids)
  chunked('HDEL', KEYS[2], ids)
  chunked('HDEL', KEYS[5], ids)
  local due = {}
  for _, item in ipairs(good) do
    due[#due + 1] = now + item[3]
    due[#due + 1] = item[1]
  end
  chunked('ZADD', KEYS[3], due)
  leave_active(KEYS[7], KEYS[8], KEYS[4], counts)
  -- Idle workers sleep until the earliest due run they knew of: wake one to look again.
  if redis.call('LLEN', KEYS[4]) == 0 then redis.call('LPUSH', KEYS[4], 1) end
end
local out = {#ids}
for _, id in ipairs(fenced) do out[#out + 1] = id end
return out
