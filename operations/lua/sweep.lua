-- Removes expired operations from their shard's indexes (see apply.lua for the expiries zset).
--
-- KEYS[1] expiries (zset)   KEYS[2] global index (zset)
-- ARGV[1] the shard's key prefix ('P:{S}'), ARGV[2] at most this many members per call
-- Returns {operations removed, members looked at}: fewer looked at than asked means the shard
-- has nothing more to sweep now.
--
-- A member whose record still lives (its expiry was scored on another clock) is scored again
-- by the record's own time to live; one whose record has no expiry is looked at again later.

local expiries, index = KEYS[1], KEYS[2]
local tag, batch = ARGV[1], tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local due = redis.call('ZRANGE', expiries, '-inf', now, 'BYSCORE', 'LIMIT', 0, batch)
local removed = 0
for _, member in ipairs(due) do
  local length, rest = string.match(member, '^(%d+):(.*)$')
  length = tonumber(length)
  local owner, op_id = string.sub(rest, 1, length), string.sub(rest, length + 1)
  local left = redis.call('PTTL', tag .. ':op:' .. op_id)
  if left > 0 then
    redis.call('ZADD', expiries, now + left, member)
  elseif left == -1 then
    redis.call('ZADD', expiries, now + 60000, member)
  else
    redis.call('ZREM', index, op_id)
    -- An owner's index of another type (written by hand) is left alone, not a failed sweep.
    local owner_index = tag .. ':user:' .. owner
    if owner ~= '' and redis.call('TYPE', owner_index)['ok'] == 'zset' then
      redis.call('ZREM', owner_index, op_id)
    end
    redis.call('ZREM', expiries, member)
    removed = removed + 1
  end
end
return {removed, #due}
