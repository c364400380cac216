-- now_ms(): the Redis server's clock in milliseconds, so every process agrees on lease and due
-- times whatever its own clock says.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
