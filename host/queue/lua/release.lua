--[[
  release: hand leased runs back unstarted (prefetched when a worker stops, or interrupted by a
  shutdown past its grace period). The attempt count is undone, so the hand-back costs no
  attempt, and each run goes to the front of its lane's ready queue (it was chosen first before).
  Fenced: only the current lease owner can release.

  KEYS[1] inflight  ZSET run id -> lease deadline
  KEYS[2] owner     HASH run id -> owner token
  KEYS[3] meta      HASH run id -> "priority|max_attempts|type|lane"
  KEYS[4] att       HASH run id -> attempts started
  KEYS[5] wake      LIST wake tokens
  KEYS[6] progress  HASH run id -> last progress report
  KEYS[7] active    HASH type -> runs in flight
  KEYS[8] limits    HASH type -> limits

  ARGV[1] key prefix
  ARGV[2] JSON array of [run id, owner token]

  Returns: {released, fenced_id...}

  Reads prefix..'config' (age_step_ms) for the ready score: see includes/ready_score.lua.
]]
--- @include "now_ms"
--- @include "ready_score"
--- @include "lanes"
--- @include "limits"

local prefix = ARGV[1]
local now, age = now_ms(), age_step(prefix)
local released = 0
local fenced = {}
local counts = {}
for _, item in ipairs(cjson.decode(ARGV[2])) do
  local id, token = item[1], item[2]
  local meta = redis.call('HGET', KEYS[3], id)
  if meta and redis.call('HGET', KEYS[2], id) == token then
    local priority, _, jobtype, lane = split_meta(meta)
    if redis.call('ZREM', KEYS[1], id) == 1 then count_type(counts, meta) end
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[6], id)
    redis.call('HINCRBY', KEYS[4], id, -1)
    local score = ready_score(priority, now, age)
    local head = redis.call('ZRANGE', lane_queue(prefix, jobtype, lane), 0, 0, 'WITHSCORES')
    if #head > 0 then score = math.min(score, tonumber(head[2]) - 1) end
    push_ready(prefix, jobtype, lane, score, id)
    released = released + 1
  else
    fenced[#fenced + 1] = id
  end
end
leave_active(KEYS[7], KEYS[8], KEYS[5], counts)
if released > 0 and redis.call('LLEN', KEYS[5]) == 0 then
  redis.call('LPUSH', KEYS[5], 1)
end
local out = {released}
for _, id in ipairs(fenced) do out[#out + 1] = id end
return out
