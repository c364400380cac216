--[[
  leader_renew: extend the leader lease, only for its owner (compare-and-extend). A leader whose
  lease expired and was taken by another gets 0 and must stop acting at once.

  KEYS[1] leader    STRING owner id of the current leader

  ARGV[1] owner id
  ARGV[2] lease length in ms, from now

  Returns: 1 when extended, 0 when the caller no longer holds the lease
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
