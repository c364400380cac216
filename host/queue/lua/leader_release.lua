--[[
  leader_release: give the leader lease up on shutdown, only for its owner (compare-and-delete),
  so a follower takes over at once instead of waiting for the lease to expire.

  KEYS[1] leader    STRING owner id of the current leader

  ARGV[1] owner id

  Returns: 1 when released, 0 when the caller did not hold the lease
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
