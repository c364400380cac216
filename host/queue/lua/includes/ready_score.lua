-- STRICT_STEP: with ageing off, one priority level is worth 2^40 ms (about 35 years) of waiting:
-- strict priority in practice, on the same scale as ageing, so switching modes keeps old and new
-- runs comparable. Scores stay exact doubles: |priority| <= 1000, so |score| < 2^51.
local STRICT_STEP = 1099511627776

-- age_step(prefix): ms of waiting worth one priority level, from the namespace's config hash
-- (workers write it at start from JOBHOST_PRIORITY_AGEING_S; 0 or absent: strict priority).
local function age_step(prefix)
  local age = tonumber(redis.call('HGET', prefix .. 'config', 'age_step_ms') or '0')
  if age <= 0 then return STRICT_STEP end
  return age
end

-- ready_score(priority, now, age): a ready-queue score, lowest claimed first: the time the run
-- became ready, moved `age` ms earlier per priority level. Equal priorities go FIFO (ties in
-- one millisecond by run id: UUIDv7, time-ordered). With ageing, a run of priority p overtakes
-- one of priority p + 1 that became ready `age` ms after it: a steady stream of higher-priority
-- work delays lower priorities by a bounded time instead of forever.
local function ready_score(priority, now, age)
  return now - tonumber(priority) * age
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
