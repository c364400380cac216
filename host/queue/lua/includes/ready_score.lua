-- age_step(prefix): ms of waiting worth one priority level (0: strict priority), from the
-- namespace's config hash, which workers write at start from JOBHOST_PRIORITY_AGEING_S.
local function age_step(prefix)
  return tonumber(redis.call('HGET', prefix .. 'config', 'age_step_ms') or '0')
end

-- ready_score(priority, seq, now, age): a ready-queue score, lowest claimed first.
-- Strict (age 0): by priority (higher first), then FIFO. Priorities are bounded to
-- [-1000, 1000] and seq wraps at 2^40, so the score is an exact double.
-- Ageing (age > 0): the enqueue time, moved `age` ms earlier per priority level, so a run of
-- priority p overtakes one of priority p + 1 after waiting `age` ms longer: a steady stream of
-- high-priority work delays lower priorities by a bounded time instead of forever.
local function ready_score(priority, seq, now, age)
  if age > 0 then return now - tonumber(priority) * age end
  return (1000 - tonumber(priority)) * 1099511627776 + (seq % 1099511627776)
end

-- split_meta(meta): "priority|max_attempts|type|lane" -> priority, max_attempts, type, lane.
-- Type names hold no '|'; a lane may hold anything, so it comes last.
local function split_meta(meta)
  local a = string.find(meta, '|', 1, true)
  local b = string.find(meta, '|', a + 1, true)
  local c = string.find(meta, '|', b + 1, true)
  return tonumber(string.sub(meta, 1, a - 1)), tonumber(string.sub(meta, a + 1, b - 1)),
    string.sub(meta, b + 1, c - 1), string.sub(meta, c + 1)
end
