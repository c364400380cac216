--[[
  claim: take up to N runs across the worker's types and lease them: each moves to the in-flight
  set with a deadline, its attempt counter goes up by one, and the owner token "worker:attempt"
  is recorded for fencing. Due delayed runs are promoted first, so delayed runs and retries need
  no scheduler.

  Order: across types, the best ready score first (priority, then FIFO, or aged priority; see
  includes/ready_score.lua). Within a type, lanes (tenants, or tenant and payload key) take
  turns, round robin from where the last claim stopped, each lane giving its runs in score order:
  a lane with 100,000 runs waiting cannot starve one with 100.

  Limits are enforced here, atomically and on the Redis clock: a type or lane whose token bucket
  is empty or whose concurrency limit is reached is skipped (not blocking the others), and the
  claim reports when the next token is due.

  KEYS[1] inflight  ZSET run id -> lease deadline (ms, Redis clock)
  KEYS[2] env       HASH run id -> envelope
  KEYS[3] att       HASH run id -> attempts started
  KEYS[4] owner     HASH run id -> owner token "worker:attempt"
  KEYS[5] delayed   ZSET run id -> due time
  KEYS[6] meta      HASH run id -> "priority|max_attempts|type|lane"
  KEYS[7] wake      LIST wake tokens
  KEYS[8] limits    HASH type -> "rate|burst|concurrency|lane_rate|lane_burst|lane_concurrency"
  KEYS[9] buckets  HASH type or "type#lane" -> "tokens|updated_ms" token bucket state
  KEYS[10] active   HASH type or "type#lane" -> runs in flight
  KEYS[11] throttled HASH type -> claims that found runs waiting but no token or slot
  KEYS[12] ring     HASH type -> where the next claim starts in the type's ring of lanes
  Also, built from the prefix: q:TYPE#LANE (ready ZSETs), lanes:TYPE (ZSET lane -> ring
  position), laneseq, config (age_step_ms).

  ARGV[1] key prefix
  ARGV[2] N, most runs to take
  ARGV[3] lease length in ms
  ARGV[4] worker id
  ARGV[5] most delayed runs to promote in this call
  ARGV[6..] the job types this worker serves

  Returns: {now_ms, next_due_ms, id1, attempt1, envelope1, id2, ...}
  next_due_ms: when nothing was claimed, ms until the earliest delayed run is due or the next
  token of a throttled type or lane (-1: neither; a freed concurrency slot wakes workers).
]]
--- @include "now_ms"
--- @include "ready_score"
--- @include "lanes"
--- @include "promote_due"
--- @include "limits"
--- @include "batch"

local prefix, n, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local worker = ARGV[4]
local limits_key, buckets_key, active_key = KEYS[8], KEYS[9], KEYS[10]
local throttled_key, ring_key = KEYS[11], KEYS[12]
local now = now_ms()
promote_due(prefix, KEYS[5], KEYS[6], now, tonumber(ARGV[5]))
local deadline = now + lease

-- The tail every claim ends with: when nothing was picked, when to look again (the earliest
-- delayed run or `token_wait`); after a full batch, pass the wake-up on to an idle worker.
local function finish(out, picked, token_wait)
  if picked == 0 then
    local head = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
    if #head > 0 then out[2] = math.max(0, tonumber(head[2]) - now) end
    if token_wait >= 0 and (out[2] < 0 or token_wait < out[2]) then out[2] = token_wait end
  elseif picked == n and redis.call('LLEN', KEYS[7]) == 0 then
    -- A full batch suggests more is waiting: pass the wake-up on to another idle worker.
    redis.call('LPUSH', KEYS[7], 1)
  end
  return out
end

-- take_leases(ids, out): lease every run among `ids` that still has an envelope: its attempt
-- count goes up, it enters the in-flight set with its deadline, its owner token is recorded,
-- and id, attempt, envelope are appended to `out`. Returns how many were leased;
-- `leased(i)`, when given, is called with the index in `ids` of each one.
local function take_leases(ids, out, leased)
  local envs = chunked('HMGET', KEYS[2], ids)
  local counts = chunked('HMGET', KEYS[3], ids)
  local atts, flights, owners, tokens = {}, {}, {}, {}
  local k = 0
  for i = 1, #ids do
    local env = envs[i]
    if env then
      local id = ids[i]
      local attempt = tonumber(counts[i] or '0') + 1
      local token = tokens[attempt]
      if not token then
        token = worker .. ':' .. attempt
        tokens[attempt] = token
      end
      atts[2 * k + 1], atts[2 * k + 2] = id, attempt
      flights[2 * k + 1], flights[2 * k + 2] = deadline, id
      owners[2 * k + 1], owners[2 * k + 2] = id, token
      out[3 * k + 3], out[3 * k + 4], out[3 * k + 5] = id, attempt, env
      k = k + 1
      if leased then leased(i) end
    end
  end
  if k > 0 then
    chunked('HSET', KEYS[3], atts)
    chunked('ZADD', KEYS[1], flights)
    chunked('HSET', KEYS[4], owners)
  end
  return k
end

-- Fast path for the common case: one type asked, no limits for it, one lane on its ring. Then
-- the general path below reduces to taking the lane's head in rank order, with no candidate
-- tables, merge or per-run bookkeeping; the replies and every key end exactly as it leaves them
-- (the ring position is 0, an emptied lane leaves the ring). tests/test_claim_fast_path.py runs
-- both paths on copies of the same state. ONE_LANE_FAST_PATH: the tests turn it off.
local ONE_LANE_FAST_PATH = true
local function claim_one_lane(jobtype)
  if redis.call('HGET', limits_key, jobtype) then return nil end
  local lanes_key = prefix .. 'lanes:' .. jobtype
  local names = redis.call('ZRANGE', lanes_key, 0, 1)
  if #names ~= 1 then return nil end
  local lane = names[1]
  redis.call('HSET', ring_key, jobtype, 0)
  local queue = lane_queue(prefix, jobtype, lane)
  local ids = redis.call('ZRANGE', queue, 0, n - 1)
  local out = {now, -1}
  if #ids == 0 then
    redis.call('ZREM', lanes_key, lane)  -- emptied elsewhere: off the ring
    return finish(out, 0, -1)
  end
  redis.call('ZREMRANGEBYRANK', queue, 0, #ids - 1)
  if #ids < n or redis.call('EXISTS', queue) == 0 then redis.call('ZREM', lanes_key, lane) end
  local k = take_leases(ids, out)
  if k > 0 then redis.call('HINCRBY', active_key, jobtype, k) end
  return finish(out, #ids, -1)
end
if ONE_LANE_FAST_PATH and #ARGV == 6 and n >= 1 then
  local out = claim_one_lane(ARGV[6])
  if out then return out end
end

local token_wait = -1
local function note_wait(wait)
  if wait >= 0 and (token_wait < 0 or wait < token_wait) then token_wait = wait end
end

local function active(field)
  return tonumber(redis.call('HGET', active_key, field) or '0')
end

-- Merging several types needs each candidate's score; one type gives its own order as it is,
-- so its lane heads are read without scores (STRIDE: list entries per run in a head).
local merging = #ARGV > 6
local STRIDE = merging and 2 or 1

-- head_of(queue, from, to): ranks from..to of a lane's queue, with scores when merging.
local function head_of(queue, from, to)
  if merging then return redis.call('ZRANGE', queue, from, to, 'WITHSCORES') end
  return redis.call('ZRANGE', queue, from, to)
end

-- gather(jobtype): what this type may give now, in the order it should give it: candidates as
-- parallel lists (scores only when merging types), token buckets to write back, the lanes
-- that gave runs.
-- Returns {ids = {id...}, lanes_of = {lane...}, scores = {score...}, tokens = type bucket
-- tokens or nil, lane_tokens = {lane -> tokens}, fields = {lane -> "type#lane"},
-- lanes = {lane -> queue key}, lane_conc}
local function gather(jobtype)
  local got = {ids = {}, lanes_of = {}, scores = {}, tokens = nil, lane_tokens = {}, fields = {},
    lanes = {}, lane_conc = nil}
  local allow, throttled = n, false
  local lrate, lburst, lconc
  local limits = redis.call('HGET', limits_key, jobtype)
  if limits then
    local rate, burst, conc
    rate, burst, conc, lrate, lburst, lconc = parse_limits(limits)
    if conc then allow = math.min(allow, math.max(0, conc - active(jobtype))) end
    if rate then
      local tokens, wait = bucket_tokens(buckets_key, jobtype, rate, burst, now)
      got.tokens = tokens
      allow = math.min(allow, math.floor(tokens))
      note_wait(wait)
    end
    got.lane_conc = lconc
  end
  local lanes_key = prefix .. 'lanes:' .. jobtype
  local count = redis.call('ZCARD', lanes_key)
  if count == 0 then return got end
  if allow == 0 then
    redis.call('HINCRBY', throttled_key, jobtype, 1)
    return got
  end
  -- Visit at most one lane per run allowed, starting where the last claim stopped.
  local visit = math.min(count, allow)
  local start = tonumber(redis.call('HGET', ring_key, jobtype) or '0') % count
  local names = redis.call('ZRANGE', lanes_key, start, start + visit - 1)
  if #names < visit then
    for _, name in ipairs(redis.call('ZRANGE', lanes_key, 0, visit - #names - 1)) do
      names[#names + 1] = name
    end
  end
  redis.call('HSET', ring_key, jobtype, (start + visit) % count)
  local quantum = math.ceil(allow / visit)
  local lists = {}
  for _, lane in ipairs(names) do
    local field = jobtype .. '#' .. lane
    got.fields[lane] = field
    local cap = allow
    if lrate then
      local tokens, wait = bucket_tokens(buckets_key, field, lrate, lburst, now)
      got.lane_tokens[lane] = tokens
      cap = math.min(cap, math.floor(tokens))
      note_wait(wait)
    end
    if lconc then cap = math.min(cap, math.max(0, lconc - active(field))) end
    local queue = lane_queue(prefix, jobtype, lane)
    if cap > 0 then
      local head = head_of(queue, 0, math.min(cap, quantum) - 1)
      if #head == 0 then
        redis.call('ZREM', lanes_key, lane)  -- emptied elsewhere: off the ring
      else
        lists[#lists + 1] = {lane = lane, queue = queue, head = head, cap = cap}
        got.lanes[lane] = queue
      end
    elseif redis.call('ZCARD', queue) > 0 then
      throttled = true
    end
  end
  -- Interleave the lanes one run at a time, up to what the type allows.
  local ids, lanes_of, scores = got.ids, got.lanes_of, got.scores
  local k, depth = 0, 1
  while k < allow do
    local progressed = false
    local i = STRIDE * (depth - 1) + 1
    for _, l in ipairs(lists) do
      local id = l.head[i]
      if id and k < allow then
        k = k + 1
        ids[k], lanes_of[k] = id, l.lane
        if merging then scores[k] = tonumber(l.head[i + 1]) end
        progressed = true
      end
    end
    if not progressed then break end
    depth = depth + 1
  end
  -- Lanes with more than their quantum fill what the others left.
  for _, l in ipairs(lists) do
    if k >= allow then break end
    local taken = #l.head / STRIDE
    if taken == quantum and l.cap > quantum then
      local more = math.min(l.cap - quantum, allow - k)
      local extra = head_of(l.queue, quantum, quantum + more - 1)
      for i = 1, #extra, STRIDE do
        k = k + 1
        ids[k], lanes_of[k] = extra[i], l.lane
        if merging then scores[k] = tonumber(extra[i + 1]) end
      end
    end
  end
  if throttled and k == 0 then redis.call('HINCRBY', throttled_key, jobtype, 1) end
  return got
end

-- Gather every type, then merge them by score, keeping each type's own order.
local types, gathered = {}, {}
for i = 6, #ARGV do
  types[#types + 1] = ARGV[i]
  gathered[#types] = gather(ARGV[i])
end
-- The picked runs as parallel lists: id, type index, lane.
local picked, picked_type, picked_lane = {}, {}, {}
if not merging then
  picked, picked_lane = gathered[1].ids, gathered[1].lanes_of  -- at most n already
  for i = 1, #picked do picked_type[i] = 1 end
else
  local pos = {}
  for t = 1, #types do pos[t] = 1 end
  local k = 0
  while k < n do
    local best, best_score = nil, nil
    for t = 1, #types do
      local score = gathered[t].scores[pos[t]]
      if score and (best_score == nil or score < best_score) then best, best_score = t, score end
    end
    if not best then break end
    local g, at = gathered[best], pos[best]
    k = k + 1
    picked[k], picked_type[k], picked_lane[k] = g.ids[at], best, g.lanes_of[at]
    pos[best] = at + 1
  end
end

-- Remove the picked runs from their lanes: each lane gave a prefix of its queue by rank.
local per_lane = {}
for i = 1, #picked do
  local key = gathered[picked_type[i]].lanes[picked_lane[i]]
  per_lane[key] = (per_lane[key] or 0) + 1
end
for t = 1, #types do
  for lane, queue in pairs(gathered[t].lanes) do
    local k = per_lane[queue]
    if k then
      redis.call('ZREMRANGEBYRANK', queue, 0, k - 1)
      if redis.call('ZCARD', queue) == 0 then
        redis.call('ZREM', prefix .. 'lanes:' .. types[t], lane)
      end
    end
  end
end

-- Lease them, and count tokens and slots spent per type and lane (type names hold no '#', so
-- type -> lane -> count is the same tally as one keyed by "type#lane").
local out = {now, -1}
local spent, spent_lane = {}, {}
if #picked > 0 then
  take_leases(picked, out, function(i)
    local jobtype, lane = types[picked_type[i]], picked_lane[i]
    spent[jobtype] = (spent[jobtype] or 0) + 1
    local by_lane = spent_lane[jobtype]
    if not by_lane then
      by_lane = {}
      spent_lane[jobtype] = by_lane
    end
    by_lane[lane] = (by_lane[lane] or 0) + 1
  end)
end
for t = 1, #types do
  local g, jobtype = gathered[t], types[t]
  local by_lane = spent_lane[jobtype] or {}
  if g.tokens then
    redis.call('HSET', buckets_key, jobtype, (g.tokens - (spent[jobtype] or 0)) .. '|' .. now)
  end
  for lane, tokens in pairs(g.lane_tokens) do
    redis.call('HSET', buckets_key, g.fields[lane], (tokens - (by_lane[lane] or 0)) .. '|' .. now)
  end
  if spent[jobtype] then redis.call('HINCRBY', active_key, jobtype, spent[jobtype]) end
  if g.lane_conc then
    for lane, _ in pairs(g.lanes) do
      if by_lane[lane] then redis.call('HINCRBY', active_key, g.fields[lane], by_lane[lane]) end
    end
  end
end

return finish(out, #picked, token_wait)
