--[[
  claim: take up to N runs across the worker's types, highest priority first, FIFO within a
  priority, and lease them: each moves to the in-flight set with a deadline, its attempt counter
  goes up by one, and the owner token "worker:attempt" is recorded for fencing.
  Due delayed runs are promoted first, so delayed runs and retries need no scheduler.
  Limits are enforced here, atomically with the claim and on the Redis clock: a type whose token
  bucket is empty or whose concurrency limit is reached is skipped (not blocking the others), and
  the claim reports when its next token is due.

  KEYS[1] inflight  ZSET run id -> lease deadline (ms, Redis clock)
  KEYS[2] env       HASH run id -> envelope
  KEYS[3] att       HASH run id -> attempts started
  KEYS[4] owner     HASH run id -> owner token "worker:attempt"
  KEYS[5] delayed   ZSET run id -> due time
  KEYS[6] meta      HASH run id -> "priority|max_attempts|type"
  KEYS[7] seq       STRING FIFO counter
  KEYS[8] wake      LIST wake tokens
  KEYS[9] limits    HASH type -> "rate_per_s|burst|concurrency" (empty field: unlimited)
  KEYS[10] buckets  HASH type -> "tokens|updated_ms" token bucket state
  KEYS[11] active   HASH type -> runs in flight
  KEYS[12] throttled HASH type -> claims that found runs waiting but no allowance
  KEYS[13..] the ready queues (ZSET) of the types this worker serves

  ARGV[1] key prefix
  ARGV[2] N, most runs to take
  ARGV[3] lease length in ms
  ARGV[4] worker id
  ARGV[5] most delayed runs to promote in this call

  Returns: {now_ms, next_due_ms, id1, attempt1, envelope1, id2, ...}
  next_due_ms: when nothing was claimed, ms until the earliest delayed run is due or the next
  token of a throttled type (-1: neither; a concurrency-limited type wakes workers on ack).

  Reads prefix..'config' (age_step_ms) for the ready score: see includes/ready_score.lua.
]]
--- @include "now_ms"
--- @include "ready_score"
--- @include "promote_due"
--- @include "limits"

local FIRST_QUEUE = 13
local prefix, n, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local worker = ARGV[4]
local limits_key, buckets_key, active_key, throttled_key = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local now = now_ms()
promote_due(prefix, KEYS[5], KEYS[6], KEYS[7], now, tonumber(ARGV[5]))

-- How many runs each queue may give now, and when a throttled one gets its next token.
local types, allow, buckets = {}, {}, {}
local token_wait = -1
local type_start = string.len(prefix) + 3
for k = FIRST_QUEUE, #KEYS do
  local jobtype = string.sub(KEYS[k], type_start)
  types[k] = jobtype
  allow[k] = n
  local limits = redis.call('HGET', limits_key, jobtype)
  if limits then
    local rate, burst, concurrency = parse_limits(limits)
    if concurrency then
      local active = tonumber(redis.call('HGET', active_key, jobtype) or '0')
      allow[k] = math.min(allow[k], math.max(0, concurrency - active))
    end
    if rate then
      local tokens, updated = burst or math.max(1, rate), now
      local state = redis.call('HGET', buckets_key, jobtype)
      if state then
        local bar = string.find(state, '|', 1, true)
        tokens = tonumber(string.sub(state, 1, bar - 1))
        updated = tonumber(string.sub(state, bar + 1))
      end
      burst = burst or math.max(1, rate)
      tokens = math.min(burst, tokens + math.max(0, now - updated) * rate / 1000)
      buckets[k] = tokens
      allow[k] = math.min(allow[k], math.floor(tokens))
      if tokens < 1 then
        local wait = math.ceil((1 - tokens) * 1000 / rate)
        if token_wait < 0 or wait < token_wait then token_wait = wait end
      end
    end
    if allow[k] == 0 and redis.call('ZCARD', KEYS[k]) > 0 then
      redis.call('HINCRBY', throttled_key, jobtype, 1)
    end
  end
end

-- Pick: one queue pops directly; several merge their heads by score.
local picked, from = {}, {}
if #KEYS == FIRST_QUEUE then
  if allow[FIRST_QUEUE] > 0 then
    local popped = redis.call('ZPOPMIN', KEYS[FIRST_QUEUE], allow[FIRST_QUEUE])
    for i = 1, #popped, 2 do
      picked[#picked + 1] = popped[i]
      from[#from + 1] = FIRST_QUEUE
    end
  end
else
  local candidates = {}
  for k = FIRST_QUEUE, #KEYS do
    if allow[k] > 0 then
      local head = redis.call('ZRANGE', KEYS[k], 0, allow[k] - 1, 'WITHSCORES')
      for i = 1, #head, 2 do
        candidates[#candidates + 1] = {tonumber(head[i + 1]), head[i], k}
      end
    end
  end
  table.sort(candidates, function(a, b) return a[1] < b[1] end)
  for i = 1, math.min(n, #candidates) do
    local c = candidates[i]
    redis.call('ZREM', KEYS[c[3]], c[2])
    picked[#picked + 1] = c[2]
    from[#from + 1] = c[3]
  end
end

-- Lease the picked runs.
local out = {now, -1}
local deadline = now + lease
local taken = {}
for i, id in ipairs(picked) do
  local envelope = redis.call('HGET', KEYS[2], id)
  if envelope then
    local attempt = redis.call('HINCRBY', KEYS[3], id, 1)
    redis.call('ZADD', KEYS[1], deadline, id)
    redis.call('HSET', KEYS[4], id, worker .. ':' .. attempt)
    out[#out + 1] = id
    out[#out + 1] = attempt
    out[#out + 1] = envelope
    taken[from[i]] = (taken[from[i]] or 0) + 1
  end
end

-- Spend tokens and count the runs now in flight, per type.
for k, tokens in pairs(buckets) do
  redis.call('HSET', buckets_key, types[k], (tokens - (taken[k] or 0)) .. '|' .. now)
end
for k, count in pairs(taken) do
  redis.call('HINCRBY', active_key, types[k], count)
end

if #picked == 0 then
  local head = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
  if #head > 0 then out[2] = math.max(0, tonumber(head[2]) - now) end
  if token_wait >= 0 and (out[2] < 0 or token_wait < out[2]) then out[2] = token_wait end
elseif #picked == n and redis.call('LLEN', KEYS[8]) == 0 then
  -- A full batch suggests more is waiting: pass the wake-up on to another idle worker.
  redis.call('LPUSH', KEYS[8], 1)
end
return out
