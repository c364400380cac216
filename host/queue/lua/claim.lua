--[[
  claim: take up to N runs across the worker's types, highest priority first, FIFO within a
  priority, and lease them: each moves to the in-flight set with a deadline, its attempt counter
  goes up by one, and the owner token "worker:attempt" is recorded for fencing.
  Due delayed runs are promoted first, so delayed runs and retries need no scheduler.

  KEYS[1] inflight  ZSET run id -> lease deadline (ms, Redis clock)
  KEYS[2] env       HASH run id -> envelope
  KEYS[3] att       HASH run id -> attempts started
  KEYS[4] owner     HASH run id -> owner token "worker:attempt"
  KEYS[5] delayed   ZSET run id -> due time
  KEYS[6] meta      HASH run id -> "priority|max_attempts|type"
  KEYS[7] seq       STRING FIFO counter
  KEYS[8] wake      LIST wake tokens
  KEYS[9..] the ready queues (ZSET) of the types this worker serves

  ARGV[1] key prefix
  ARGV[2] N, most runs to take
  ARGV[3] lease length in ms
  ARGV[4] worker id
  ARGV[5] most delayed runs to promote in this call

  Returns: {now_ms, next_due_ms, id1, attempt1, envelope1, id2, ...}
  next_due_ms: when nothing was claimed, ms until the earliest delayed run is due (-1: none).
]]
--- @include "now_ms"
--- @include "ready_score"
--- @include "promote_due"

local prefix, n, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local worker = ARGV[4]
local now = now_ms()
promote_due(prefix, KEYS[5], KEYS[6], KEYS[7], now, tonumber(ARGV[5]))

local picked = {}
if #KEYS == 9 then
  local popped = redis.call('ZPOPMIN', KEYS[9], n)
  for i = 1, #popped, 2 do picked[#picked + 1] = popped[i] end
else
  -- Merge the heads of every queue by score, then remove the winners.
  local candidates = {}
  for k = 9, #KEYS do
    local head = redis.call('ZRANGE', KEYS[k], 0, n - 1, 'WITHSCORES')
    for i = 1, #head, 2 do
      candidates[#candidates + 1] = {tonumber(head[i + 1]), head[i], KEYS[k]}
    end
  end
  table.sort(candidates, function(a, b) return a[1] < b[1] end)
  for i = 1, math.min(n, #candidates) do
    redis.call('ZREM', candidates[i][3], candidates[i][2])
    picked[#picked + 1] = candidates[i][2]
  end
end

local out = {now, -1}
local deadline = now + lease
for _, id in ipairs(picked) do
  local envelope = redis.call('HGET', KEYS[2], id)
  if envelope then
    local attempt = redis.call('HINCRBY', KEYS[3], id, 1)
    redis.call('ZADD', KEYS[1], deadline, id)
    redis.call('HSET', KEYS[4], id, worker .. ':' .. attempt)
    out[#out + 1] = id
    out[#out + 1] = attempt
    out[#out + 1] = envelope
  end
end

if #picked == 0 then
  local head = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
  if #head > 0 then out[2] = math.max(0, tonumber(head[2]) - now) end
elseif #picked == n and redis.call('LLEN', KEYS[8]) == 0 then
  -- A full batch suggests more is waiting: pass the wake-up on to another idle worker.
  redis.call('LPUSH', KEYS[8], 1)
end
return out
