--[[
  enqueue: add runs to their ready queue, or to the delayed set when due later.
  Idempotent by run id: a run Redis already knows (ready, delayed, in flight or dying) is skipped,
  so a retried enqueue or a reconciliation pass never duplicates a run.

  KEYS[1] env       HASH run id -> envelope (JSON)
  KEYS[2] meta      HASH run id -> "priority|max_attempts|type|lane"
  KEYS[3] delayed   ZSET run id -> due time (ms, Redis clock)
  KEYS[4] types     SET of job type names seen
  KEYS[5] wake      LIST wake tokens for idle workers

  ARGV[1] key prefix ("jh:{ns}:"), for the ready queue of each type
  ARGV[2] number of runs n
  then per run, 8 values: id, type, lane, priority, max_attempts, delay_ms, attempts_done,
  envelope. The lane (tenant, or tenant and a payload field) picks the run's ready queue.
  delay_ms is counted from the Redis clock; 0 or less means ready now.
  attempts_done is 0 for a new run; reconciliation passes the attempts PostgreSQL recorded, so
  the next claim counts on from there and fencing keeps working.

  Returns: {added, skipped_id...}

  Reads prefix..'config' (age_step_ms) for the ready score: see includes/ready_score.lua.
]]
--- @include "now_ms"
--- @include "ready_score"
--- @include "lanes"

local prefix = ARGV[1]
local n = tonumber(ARGV[2])
local now = now_ms()
local age = age_step(prefix)
local added = 0
local skipped = {}
for i = 0, n - 1 do
  local base = 3 + i * 8
  local id, jobtype, lane = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  local priority, max_attempts = ARGV[base + 3], ARGV[base + 4]
  local delay, done, envelope = tonumber(ARGV[base + 5]), tonumber(ARGV[base + 6]), ARGV[base + 7]
  if redis.call('HSETNX', KEYS[1], id, envelope) == 1 then
    if done > 0 then redis.call('HSET', KEYS[6], id, done) end
    redis.call('HSET', KEYS[2], id, priority .. '|' .. max_attempts .. '|' .. jobtype .. '|' .. lane)
    if delay > 0 then
      redis.call('ZADD', KEYS[3], now + delay, id)
    else
      push_ready(prefix, jobtype, lane, ready_score(priority, now, age), id)
    end
    redis.call('SADD', KEYS[4], jobtype)
    added = added + 1
  else
    skipped[#skipped + 1] = id
  end
end
if added > 0 and redis.call('LLEN', KEYS[5]) == 0 then
  redis.call('LPUSH', KEYS[5], 1)
end
local out = {added}
for _, id in ipairs(skipped) do out[#out + 1] = id end
return out
