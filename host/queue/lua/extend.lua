--[[
  extend: push back the lease deadline of runs a worker is still running (its heartbeat).
  Only runs the caller still owns are extended; the others are returned as lost, so the worker
  knows another attempt may have started and its own result will be fenced off.

  KEYS[1] inflight  ZSET run id -> lease deadline
  KEYS[2] owner     HASH run id -> owner token

  ARGV[1] lease length in ms, from now
  ARGV[2..] pairs: run id, owner token

  Returns: {lost_id...}
]]
--- @include "now_ms"

local deadline = now_ms() + tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', KEYS[2], id) == token then
    redis.call('ZADD', KEYS[1], 'XX', deadline, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
