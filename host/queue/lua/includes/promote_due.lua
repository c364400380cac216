-- promote_due(prefix, delayed_key, meta_key, now, limit): move up to `limit` runs whose
-- due time has come from the delayed set to their lane's ready queue. Returns how many moved.
-- Needs: ready_score, split_meta, push_ready.
local function promote_due(prefix, delayed_key, meta_key, now, limit)
  local due = redis.call('ZRANGEBYSCORE', delayed_key, '-inf', now, 'LIMIT', 0, limit)
  if #due == 0 then return 0 end
  local age = age_step(prefix)
  for i, id in ipairs(due) do
    local meta = redis.call('HGET', meta_key, id)
    redis.call('ZREM', delayed_key, id)
    if meta then
      local priority, _, jobtype, lane = split_meta(meta)
      push_ready(prefix, jobtype, lane, ready_score(priority, now, age), id)
    end
  end
  return #due
end
