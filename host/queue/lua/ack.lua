--[[
  ack: forget finished runs (succeeded or dead) once PostgreSQL has recorded them.
  Fenced: a run is only removed when the caller still owns its lease (owner token matches), so a
  worker whose lease expired and whose run was claimed again cannot remove the new attempt.

  KEYS[1] inflight  ZSET run id -> lease deadline
  KEYS[2] env       HASH run id -> envelope
  KEYS[3] meta      HASH run id -> "priority|max_attempts|type|lane"
  KEYS[4] att       HASH run id -> attempts started
  KEYS[5] owner     HASH run id -> owner token
  KEYS[6] progress  HASH run id -> last progress report
  KEYS[7] active    HASH type -> runs in flight
  KEYS[8] limits    HASH type -> limits (a limited type wakes a worker when a slot opens)
  KEYS[9] wake      LIST wake tokens

  ARGV pairs: run id, owner token

  Returns: {acked, fenced_id...}
]]
--- @include "ready_score"
--- @include "limits"

local acked = 0
local fenced = {}
local counts = {}
for i = 1, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', KEYS[5], id) == token then
    if redis.call('ZREM', KEYS[1], id) == 1 then count_type(counts, redis.call('HGET', KEYS[3], id)) end
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
    redis.call('HDEL', KEYS[5], id)
    redis.call('HDEL', KEYS[6], id)
    acked = acked + 1
  else
    fenced[#fenced + 1] = id
  end
end
leave_active(KEYS[7], KEYS[8], KEYS[9], counts)
local out = {acked}
for _, id in ipairs(fenced) do out[#out + 1] = id end
return out
