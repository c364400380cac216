--[[
  ack: forget finished runs (succeeded or dead) once PostgreSQL has recorded them.
  Fenced: a run is only removed when the caller still owns its lease (owner token matches), so a
  worker whose lease expired and whose run was claimed again cannot remove the new attempt.
  One variadic command per key for the whole batch.

  KEYS[1] inflight  ZSET run id -> lease deadline
  KEYS[2] env       HASH run id -> envelope
  KEYS[3] meta      HASH run id -> "priority|max_attempts|type|lane"
  KEYS[4] att       HASH run id -> attempts started
  KEYS[5] owner     HASH run id -> owner token
  KEYS[6] progress  HASH run id -> last progress report
  KEYS[7] active    HASH type -> runs in flight
  KEYS[8] limits    HASH type -> limits (a limited type wakes a worker when a slot opens)
  KEYS[9] wake      LIST wake tokens

  ARGV[1] JSON array of [run id, owner token]

  Returns: {acked, fenced_id...}
]]
--- @include "ready_score"
--- @include "limits"
--- @include "batch"

local _, ids, fenced = owned(KEYS[5], cjson.decode(ARGV[1]))
if #ids > 0 then
  local counts = {}
  count_leaving(KEYS[1], KEYS[3], ids, counts)
  chunked('ZREM', KEYS[1], ids)
  for k = 2, 6 do chunked('HDEL', KEYS[k], ids) end
  leave_active(KEYS[7], KEYS[8], KEYS[9], counts)
end
local out = {#ids}
for _, id in ipairs(fenced) do out[#out + 1] = id end
return out
