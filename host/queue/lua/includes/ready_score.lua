-- ready_score(priority, seq): a ready-queue score ordering by priority (higher first), then FIFO.
-- Priorities are bounded to [-1000, 1000] and seq wraps at 2^40, so the score is an exact double.
local function ready_score(priority, seq)
  return (1000 - tonumber(priority)) * 1099511627776 + (seq % 1099511627776)
end

-- split_meta(meta): "priority|max_attempts|type" -> priority, max_attempts, type.
local function split_meta(meta)
  local a = string.find(meta, '|', 1, true)
  local b = string.find(meta, '|', a + 1, true)
  return tonumber(string.sub(meta, 1, a - 1)), tonumber(string.sub(meta, a + 1, b - 1)),
    string.sub(meta, b + 1)
end
