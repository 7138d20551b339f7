-- Removes published entries from a saga's outbox, and the saga from the outbox index once its
-- outbox is empty.
--
-- KEYS[1] outbox list   KEYS[2] outbox index (zset)
-- ARGV: member name, published entries JSON...

local outbox, outbox_index, member = KEYS[1], KEYS[2], ARGV[1]
for index = 2, #ARGV do
  redis.call('LREM', outbox, 1, ARGV[index])
end
if redis.call('LLEN', outbox) == 0 then
  redis.call('ZREM', outbox_index, member)
end
return redis.call('LLEN', outbox)
