--[[
  enqueue: add runs to their ready queue, or to the delayed set when due later.
  Idempotent by run id: a run Redis already knows (ready, delayed, in flight or dying) is skipped,
  so a retried enqueue or a reconciliation pass never duplicates a run.

  KEYS[1] env       HASH run id -> envelope (JSON)
  KEYS[2] meta      HASH run id -> "priority|max_attempts|type"
  KEYS[3] delayed   ZSET run id -> due time (ms, Redis clock)
  KEYS[4] seq       STRING FIFO counter
  KEYS[5] types     SET of job type names seen
  KEYS[6] wake      LIST wake tokens for idle workers

  ARGV[1] key prefix ("jh:{ns}:"), for the ready queue of each type
  ARGV[2] number of runs n
  then per run, 7 values: id, type, priority, max_attempts, delay_ms, attempts_done, envelope
  delay_ms is counted from the Redis clock; 0 or less means ready now.
  attempts_done is 0 for a new run; reconciliation passes the attempts PostgreSQL recorded, so
  the next claim counts on from there and fencing keeps working.

  Returns: {added, skipped_id...}
]]
--- @include "now_ms"
--- @include "ready_score"

local prefix = ARGV[1]
local n = tonumber(ARGV[2])
local now = now_ms()
local seq = redis.call('INCRBY', KEYS[4], n) - n
local added = 0
local skipped = {}
for i = 0, n - 1 do
  local base = 3 + i * 7
  local id, jobtype, priority = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  local max_attempts, delay = ARGV[base + 3], tonumber(ARGV[base + 4])
  local done, envelope = tonumber(ARGV[base + 5]), ARGV[base + 6]
  if redis.call('HSETNX', KEYS[1], id, envelope) == 1 then
    if done > 0 then redis.call('HSET', KEYS[7], id, done) end
    redis.call('HSET', KEYS[2], id, priority .. '|' .. max_attempts .. '|' .. jobtype)
    if delay > 0 then
      redis.call('ZADD', KEYS[3], now + delay, id)
    else
      redis.call('ZADD', prefix .. 'q:' .. jobtype, ready_score(priority, seq + i + 1), id)
    end
    redis.call('SADD', KEYS[5], jobtype)
    added = added + 1
  else
    skipped[#skipped + 1] = id
  end
end
if added > 0 and redis.call('LLEN', KEYS[6]) == 0 then
  redis.call('LPUSH', KEYS[6], 1)
end
local out = {added}
for _, id in ipairs(skipped) do out[#out + 1] = id end
return out
