-- Lanes: each job type's ready runs are split into lanes (by tenant, or by tenant and a payload
-- field), one ZSET each, so claims can serve lanes in turn: a lane with 100,000 runs waiting
-- cannot starve one with 100. prefix..'lanes:'..type is a ZSET lane -> ring position.

-- lane_queue(prefix, jobtype, lane): the ready ZSET of one lane.
local function lane_queue(prefix, jobtype, lane)
  return prefix .. 'q:' .. jobtype .. '#' .. lane
end

-- push_ready(prefix, jobtype, lane, score, id): make a run ready in its lane, and put the lane
-- on its type's ring (at the end) if it was not there.
local function push_ready(prefix, jobtype, lane, score, id)
  redis.call('ZADD', lane_queue(prefix, jobtype, lane), score, id)
  local lanes = prefix .. 'lanes:' .. jobtype
  if not redis.call('ZSCORE', lanes, lane) then
    redis.call('ZADD', lanes, redis.call('INCR', prefix .. 'laneseq'), lane)
  end
end
