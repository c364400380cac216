--[[
  cancel: take cancelled runs out of the queue. A run waiting in its ready queue or the delayed
  set is removed with everything Redis holds for it. A run in flight is left to its worker: the
  caller has already marked it cancelled in PostgreSQL, so the worker's finish is fenced there
  (a final state is never overwritten) and its ack then removes it from Redis.

  KEYS[1] env       HASH run id -> envelope
  KEYS[2] meta      HASH run id -> "priority|max_attempts|type|lane"
  KEYS[3] att       HASH run id -> attempts started
  KEYS[4] owner     HASH run id -> owner token
  KEYS[5] delayed   ZSET run id -> due time
  KEYS[6] inflight  ZSET run id -> lease deadline
  KEYS[7] progress  HASH run id -> last progress report

  ARGV[1] key prefix, for the ready queue of each lane
  ARGV[2..] run ids

  Returns: one code per run id, in order: 1 removed, 0 in flight (left to its worker),
  -1 not known to Redis
]]
--- @include "ready_score"
--- @include "lanes"

local prefix = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local meta = redis.call('HGET', KEYS[2], id)
  local code = -1
  if meta then
    local _, _, jobtype, lane = split_meta(meta)
    -- An emptied lane stays on its type's ring until a claim finds it empty and drops it.
    local waiting = redis.call('ZREM', lane_queue(prefix, jobtype, lane), id)
      + redis.call('ZREM', KEYS[5], id)
    if waiting > 0 then
      redis.call('HDEL', KEYS[1], id)
      redis.call('HDEL', KEYS[2], id)
      redis.call('HDEL', KEYS[3], id)
      redis.call('HDEL', KEYS[4], id)
      redis.call('HDEL', KEYS[7], id)
      code = 1
    elseif redis.call('ZSCORE', KEYS[6], id) then
      code = 0
    end
  end
  out[#out + 1] = code
end
return out
