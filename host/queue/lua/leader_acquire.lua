--[[
  leader_acquire: take the scheduler leader lease if nobody holds it, and hand out a fencing
  epoch one higher than any before. The epoch comes from INCR; `floor` (the highest epoch
  PostgreSQL has recorded) lifts the counter when Redis lost it (restart without persistence),
  so a new leader's epoch always beats every older leader's in PostgreSQL's check.

  KEYS[1] leader    STRING owner id of the current leader, expiring after the lease (PX)
  KEYS[2] epoch     STRING counter of leader epochs

  ARGV[1] owner id (random per acquisition)
  ARGV[2] lease length in ms
  ARGV[3] floor: the highest epoch PostgreSQL has seen (0 if none)

  Returns: {epoch, 0} when acquired; {0, remaining lease ms of the holder} otherwise
]]
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local epoch = redis.call('INCR', KEYS[2])
  local floor = tonumber(ARGV[3])
  if epoch <= floor then
    epoch = floor + 1
    redis.call('SET', KEYS[2], epoch)
  end
  return {epoch, 0}
end
return {0, redis.call('PTTL', KEYS[1])}
