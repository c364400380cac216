--[[
  extend: push back the lease deadline of runs a worker is still running (its heartbeat).
  Only runs the caller still owns are extended; the others are returned as lost, so the worker
  knows another attempt may have started and its own result will be fenced off.

  KEYS[1] inflight  ZSET run id -> lease deadline
  KEYS[2] owner     HASH run id -> owner token

  ARGV[1] lease length in ms, from now
  ARGV[2] JSON array of [run id, owner token]

  Returns: {lost_id...}
]]
--- @include "now_ms"
--- @include "ready_score"
--- @include "limits"
--- @include "batch"

local deadline = now_ms() + tonumber(ARGV[1])
local _, ids, lost = owned(KEYS[2], cjson.decode(ARGV[2]))
local pairs_ = {}
for _, id in ipairs(ids) do
  pairs_[#pairs_ + 1] = deadline
  pairs_[#pairs_ + 1] = id
end
if #pairs_ > 0 then chunked('ZADD', KEYS[1], pairs_, 'XX') end
return lost
