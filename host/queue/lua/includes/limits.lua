-- parse_limits(text): "rate_per_s|burst|concurrency" (empty fields: no limit) -> numbers or nil.
local function parse_limits(text)
  local a = string.find(text, '|', 1, true)
  local b = string.find(text, '|', a + 1, true)
  return tonumber(string.sub(text, 1, a - 1)), tonumber(string.sub(text, a + 1, b - 1)),
    tonumber(string.sub(text, b + 1))
end

-- count_type(counts, meta): add one to counts[type] for a run whose meta hash value is `meta`.
local function count_type(counts, meta)
  if meta then
    local last = string.find(meta, '|[^|]*$')
    local jobtype = string.sub(meta, last + 1)
    counts[jobtype] = (counts[jobtype] or 0) + 1
  end
end

-- leave_active(active_key, limits_key, wake_key, counts): runs left the in-flight set; lower
-- each type's running count (never below zero) and, when a type has limits, wake an idle worker
-- because a concurrency slot just opened.
local function leave_active(active_key, limits_key, wake_key, counts)
  local wake = false
  for jobtype, c in pairs(counts) do
    if redis.call('HINCRBY', active_key, jobtype, -c) < 0 then
      redis.call('HSET', active_key, jobtype, 0)
    end
    if redis.call('HEXISTS', limits_key, jobtype) == 1 then wake = true end
  end
  if wake and redis.call('LLEN', wake_key) == 0 then redis.call('LPUSH', wake_key, 1) end
end
