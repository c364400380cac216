--[[
  enqueue: add runs to their lane's ready queue, or to the delayed set when due later.
  Idempotent by run id: a run Redis already knows (ready, delayed, in flight or dying) is skipped,
  so a retried enqueue or a reconciliation pass never duplicates a run. One variadic command
  per key for the whole batch.

  KEYS[1] env       HASH run id -> envelope (JSON)
  KEYS[2] meta      HASH run id -> "priority|max_attempts|type|lane"
  KEYS[3] delayed   ZSET run id -> due time (ms, Redis clock)
  KEYS[4] types     SET of job type names seen
  KEYS[5] wake      LIST wake tokens for idle workers
  KEYS[6] att       HASH run id -> attempts started
  Also, built from the prefix: q:TYPE#LANE, lanes:TYPE, laneseq, config (see includes/).

  ARGV[1] key prefix ("jh:{ns}:")
  ARGV[2] JSON array of runs, each [id, type, lane, priority, max_attempts, delay_ms,
          attempts_done, envelope]:
    lane: the run's ready queue within its type (tenant, or tenant and a payload key);
    delay_ms: counted from the Redis clock; 0 or less means ready now;
    attempts_done: 0 for a new run; reconciliation passes the attempts PostgreSQL recorded, so
    the next claim counts on from there and fencing keeps working.

  Returns: {added, skipped_id...}
]]
--- @include "now_ms"
--- @include "ready_score"
--- @include "lanes"
--- @include "limits"
--- @include "batch"

local prefix = ARGV[1]
local runs = cjson.decode(ARGV[2])
local now = now_ms()
local age = age_step(prefix)
local ids = {}
for i, run in ipairs(runs) do ids[i] = run[1] end
local known = #ids > 0 and chunked('HMGET', KEYS[1], ids) or {}

local envs, metas, atts, delayed, skipped = {}, {}, {}, {}, {}
local queues, types, seen = {}, {}, {}
-- Per-batch memos: a batch mostly repeats a few (type, lane) pairs and priorities, so each
-- queue, meta string and ready score is built once per distinct value, not once per run.
local by_type, scores = {}, {}
for i, run in ipairs(runs) do
  local id, jobtype, lane, priority = run[1], run[2], run[3], run[4]
  if known[i] or seen[id] then
    skipped[#skipped + 1] = id
  else
    seen[id] = true
    local max_attempts, delay, done, envelope = run[5], run[6], run[7], run[8]
    local lanes = by_type[jobtype]
    if not lanes then
      lanes = {}
      by_type[jobtype] = lanes
      types[jobtype] = true
    end
    local q = lanes[lane]
    if not q then
      q = {jobtype = jobtype, lane = lane, items = {}, metas = {}, name = nil}
      lanes[lane] = q
    end
    local by_attempts = q.metas[priority]
    if not by_attempts then
      by_attempts = {}
      q.metas[priority] = by_attempts
    end
    local meta = by_attempts[max_attempts]
    if not meta then
      meta = priority .. '|' .. max_attempts .. '|' .. jobtype .. '|' .. lane
      by_attempts[max_attempts] = meta
    end
    local e = #envs
    envs[e + 1], envs[e + 2] = id, envelope
    metas[e + 1], metas[e + 2] = id, meta
    if done > 0 then
      atts[#atts + 1] = id
      atts[#atts + 1] = done
    end
    if delay > 0 then
      delayed[#delayed + 1] = now + delay
      delayed[#delayed + 1] = id
    else
      local score = scores[priority]
      if not score then
        score = ready_score(priority, now, age)
        scores[priority] = score
      end
      local items = q.items
      items[#items + 1] = score
      items[#items + 1] = id
      if not q.name then  -- first ready run of this lane: keyed by name, as pairs() orders
        q.name = lane_queue(prefix, jobtype, lane)
        queues[q.name] = q
      end
    end
  end
end

if #envs > 0 then
  chunked('HSET', KEYS[1], envs)
  chunked('HSET', KEYS[2], metas)
  if #atts > 0 then chunked('HSET', KEYS[6], atts) end
  if #delayed > 0 then chunked('ZADD', KEYS[3], delayed) end
  for queue, q in pairs(queues) do
    chunked('ZADD', queue, q.items)
    local lanes = prefix .. 'lanes:' .. q.jobtype
    if not redis.call('ZSCORE', lanes, q.lane) then
      redis.call('ZADD', lanes, redis.call('INCR', prefix .. 'laneseq'), q.lane)
    end
  end
  for jobtype, _ in pairs(types) do redis.call('SADD', KEYS[4], jobtype) end
  if redis.call('LLEN', KEYS[5]) == 0 then redis.call('LPUSH', KEYS[5], 1) end
end
local out = {#envs / 2}
for _, id in ipairs(skipped) do out[#out + 1] = id end
return out
