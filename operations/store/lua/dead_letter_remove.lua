-- Removes one dead letter (redriven or discarded). Its id stays in the seen set.
-- KEYS: letters, index, groups, group-of
-- ARGV: prefix, id
local letters, index, groups, group_of = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, id = ARGV[1], ARGV[2]
if redis.call('HEXISTS', letters, id) == 0 then
  return 0
end
local g = redis.call('HGET', group_of, id)
redis.call('HDEL', letters, id)
redis.call('ZREM', index, id)
redis.call('HDEL', group_of, id)
if g then
  local members = prefix .. ':group:' .. g
  redis.call('ZREM', members, id)
  if redis.call('ZCARD', members) == 0 then
    redis.call('HDEL', groups, g)
  end
end
return 1
