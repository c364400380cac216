-- parse_limits(text): "rate|burst|concurrency|lane_rate|lane_burst|lane_concurrency" (an empty
-- field: no limit; rates per second) -> six numbers or nils.
local function parse_limits(text)
  local out, start = {}, 1
  for i = 1, 6 do
    local bar = string.find(text, '|', start, true)
    local field = string.sub(text, start, (bar or 0) - 1)
    out[i] = tonumber(field)
    if not bar then break end
    start = bar + 1
  end
  return out[1], out[2], out[3], out[4], out[5], out[6]
end

-- bucket_tokens(buckets_key, field, rate, burst, now): refill a token bucket to `now`; returns
-- the tokens available and, when below one, ms until the next whole token.
local function bucket_tokens(buckets_key, field, rate, burst, now)
  burst = burst or math.max(1, rate)
  local tokens, updated = burst, now
  local state = redis.call('HGET', buckets_key, field)
  if state then
    local bar = string.find(state, '|', 1, true)
    tokens = tonumber(string.sub(state, 1, bar - 1))
    updated = tonumber(string.sub(state, bar + 1))
  end
  tokens = math.min(burst, tokens + math.max(0, now - updated) * rate / 1000)
  local wait = -1
  if tokens < 1 then wait = math.ceil((1 - tokens) * 1000 / rate) end
  return tokens, wait
end

-- count_type(counts, meta, k): `k` (default 1) more runs of this type (and of its lane,
-- "type#lane") leaving flight, for runs whose meta hash value is `meta`.
local function count_type(counts, meta, k)
  if meta then
    k = k or 1
    local _, _, jobtype, lane = split_meta(meta)
    counts[jobtype] = (counts[jobtype] or 0) + k
    local field = jobtype .. '#' .. lane
    counts[field] = (counts[field] or 0) + k
  end
end

-- leave_active(active_key, limits_key, wake_key, counts): runs left the in-flight set; lower
-- the running counts (per type always, per lane where a lane limit keeps one; never below
-- zero) and, when a type has limits, wake an idle worker because a slot just opened.
local function leave_active(active_key, limits_key, wake_key, counts)
  local wake = false
  for field, c in pairs(counts) do
    if not string.find(field, '#', 1, true) then
      if redis.call('HINCRBY', active_key, field, -c) < 0 then
        redis.call('HSET', active_key, field, 0)
      end
      if redis.call('HEXISTS', limits_key, field) == 1 then wake = true end
    elseif redis.call('HEXISTS', active_key, field) == 1 then
      if redis.call('HINCRBY', active_key, field, -c) <= 0 then
        redis.call('HDEL', active_key, field)
      end
    end
  end
  if wake and redis.call('LLEN', wake_key) == 0 then redis.call('LPUSH', wake_key, 1) end
end
