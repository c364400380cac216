--[[
  hook_bucket: take one token from an inbound webhook trigger's token bucket, on the Redis clock,
  so every API process shares one bucket per trigger. Uses the same refill as the claim's type
  buckets (includes/limits.lua bucket_tokens) and the same "tokens|updated_ms" state.

  KEYS[1] hook buckets  HASH trigger id -> "tokens|updated_ms"
  ARGV[1] trigger id
  ARGV[2] rate, tokens per second (> 0)
  ARGV[3] burst, the bucket's size (>= 1)

  Returns: {granted (1 or 0), ms until a token is available when not granted (else 0)}
]]
--- @include "now_ms"
--- @include "limits"

local field, rate, burst = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local tokens, wait = bucket_tokens(KEYS[1], field, rate, burst, now)
if tokens >= 1 then
  redis.call('HSET', KEYS[1], field, (tokens - 1) .. '|' .. now)
  return {1, 0}
end
redis.call('HSET', KEYS[1], field, tokens .. '|' .. now)
return {0, wait}
