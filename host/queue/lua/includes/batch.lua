-- Batched commands: one variadic call per key for a whole batch instead of one call per run.
-- Lua's unpack has a stack limit, so long lists go in chunks (of an even size, for pairs).
local CHUNK = 2000

-- chunked(cmd, key, list, head): cmd key [head] list... over chunks; concatenates table replies.
local function chunked(cmd, key, list, head)
  local size = #list
  if size > 0 and size <= CHUNK then  -- the usual batch: one call, its reply as it is
    local reply
    if head then
      reply = redis.call(cmd, key, head, unpack(list))
    else
      reply = redis.call(cmd, key, unpack(list))
    end
    if type(reply) == 'table' then return reply end
    return {}
  end
  local out = {}
  for i = 1, #list, CHUNK do
    local reply
    if head then
      reply = redis.call(cmd, key, head, unpack(list, i, math.min(i + CHUNK - 1, #list)))
    else
      reply = redis.call(cmd, key, unpack(list, i, math.min(i + CHUNK - 1, #list)))
    end
    if type(reply) == 'table' then
      for _, v in ipairs(reply) do out[#out + 1] = v end
    end
  end
  return out
end

-- owned(owner_key, items): split [id, token, ...] items into those whose lease the caller still
-- holds (owner token matches) and the ids fenced off. Returns good items, good ids, fenced ids.
local function owned(owner_key, items)
  local ids = {}
  for i, item in ipairs(items) do ids[i] = item[1] end
  local owners = #ids > 0 and chunked('HMGET', owner_key, ids) or {}
  local good, good_ids, fenced = {}, {}, {}
  for i, item in ipairs(items) do
    if owners[i] == item[2] then
      good[#good + 1] = item
      good_ids[#good_ids + 1] = item[1]
    else
      fenced[#fenced + 1] = item[1]
    end
  end
  return good, good_ids, fenced
end

-- count_leaving(inflight_key, meta_key, ids, counts): count, per type and lane, the runs among
-- `ids` that are in flight now (a dying run's late ack must not free a slot twice). Counted per
-- meta string first (a batch repeats a few), so each distinct meta is split only once.
local function count_leaving(inflight_key, meta_key, ids, counts)
  if #ids == 0 then return end
  local scores = chunked('ZMSCORE', inflight_key, ids)
  local metas = chunked('HMGET', meta_key, ids)
  local per_meta, order = {}, {}
  for i = 1, #ids do
    local meta = metas[i]
    if scores[i] and meta then
      local c = per_meta[meta]
      if c then
        per_meta[meta] = c + 1
      else
        per_meta[meta] = 1
        order[#order + 1] = meta
      end
    end
  end
  for _, meta in ipairs(order) do count_type(counts, meta, per_meta[meta]) end
end
