--[[
  promote: move delayed runs whose time has come to their ready queues. Claims do this too, so
  this script is for a scheduler that wants due runs visible as queued while workers are busy.

  KEYS[1] delayed   ZSET run id -> due time (ms, Redis clock)
  KEYS[2] meta      HASH run id -> "priority|max_attempts|type|lane"
  KEYS[3] wake      LIST wake tokens

  ARGV[1] key prefix
  ARGV[2] most runs to move in this call

  Returns: number of runs promoted

  Reads prefix..'config' (age_step_ms) for the ready score: see includes/ready_score.lua.
]]
--- @include "now_ms"
--- @include "ready_score"
--- @include "lanes"
--- @include "promote_due"

local moved = promote_due(ARGV[1], KEYS[1], KEYS[2], now_ms(), tonumber(ARGV[2]))
if moved > 0 and redis.call('LLEN', KEYS[3]) == 0 then
  redis.call('LPUSH', KEYS[3], 1)
end
return moved
