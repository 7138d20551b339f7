-- Removes from one index the operation ids whose record no longer exists, atomically: an
-- operation created again between a reader's look and this script stays listed.
--
-- KEYS[1] an index (zset) of one shard
-- ARGV[1] the shard's key prefix ('P:{S}'), ARGV[2..] operation ids as the index holds them
-- Returns how many were removed.

local index, tag = KEYS[1], ARGV[1]
local removed = 0
for position = 2, #ARGV do
  if redis.call('EXISTS', tag .. ':op:' .. ARGV[position]) == 0 then
    removed = removed + redis.call('ZREM', index, ARGV[position])
  end
end
return removed
