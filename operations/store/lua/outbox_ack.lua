-- Removes published entries from a saga's outbox, and the saga from the outbox index once its
-- outbox is empty.
--
-- KEYS[1] outbox list   KEYS[2] outbox index (zset)
-- ARGV: member name, published entries JSON...

local outbox, outbox_index, member = KEYS[1], KEYS[2], ARGV[1]
-- Checks before writes: a key of the wrong type fails the script and changes nothing.
for _, key in ipairs({{outbox, 'list'}, {outbox_index, 'zset'}}) do
  local found = redis.call('TYPE', key[1])['ok']
  if found ~= 'none' and found ~= key[2] then
    return redis.error_reply('WRONGTYPE key ' .. key[1] .. ' holds a ' .. found .. ', not a ' .. key[2])
  end
end
for index = 2, #ARGV do
  redis.call('LREM', outbox, 1, ARGV[index])
end
if redis.call('LLEN', outbox) == 0 then
  redis.call('ZREM', outbox_index, member)
end
return redis.call('LLEN', outbox)
