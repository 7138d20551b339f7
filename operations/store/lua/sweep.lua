-- Removes expired operations from their shard's indexes (see apply.lua for the owners zset).
--
-- KEYS[1] owners (zset)   KEYS[2] global index (zset)
-- ARGV[1] the shard's key prefix ('P:{S}'), ARGV[2] at most about this many operations removed
-- per call, ARGV[3] the operations' time to live (s)
-- Returns {operations removed, 1 when there may be more to sweep now, else 0}.
--
-- An owner is due when the score the apply script or the last sweep gave it has passed. Its
-- index is read from the oldest entry up to those created a time to live ago (an operation
-- cannot expire earlier; the rank is its creation time in ms * 1000); each whose record is gone
-- (its key is the shard's prefix, ':op:' and the member, the id's stored form)
-- leaves the owner's index and the global index. The owner is then scored by the soonest of: the
-- expiry of each of those still living (updated since), and the creation of the first younger
-- one plus the time to live; an owner whose index is empty leaves the owners zset.

local owners, index = KEYS[1], KEYS[2]
local tag, batch, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]) * 1000
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local removed, more = 0, 0
local PAGE = 100

-- Ranks up to this one belong to operations created a time to live ago or more.
local oldest = string.format('%d', (now - ttl) * 1000 + 999)
local due_owners = redis.call('ZRANGE', owners, '-inf', now, 'BYSCORE', 'LIMIT', 0, batch)
for _, owner in ipairs(due_owners) do
  if removed >= batch then
    more = 1
    break
  end
  local owner_index = tag .. ':user:' .. owner
  if redis.call('TYPE', owner_index)['ok'] ~= 'zset' then
    redis.call('ZREM', owners, owner)  -- expired whole, or not ours
  else
    local next_look, offset, finished = nil, 0, true
    while true do
      local ids = redis.call('ZRANGE', owner_index, '-inf', oldest, 'BYSCORE', 'LIMIT', offset, PAGE)
      for _, op_id in ipairs(ids) do
        local left = redis.call('PTTL', tag .. ':op:' .. op_id)
        if left == -2 then
          redis.call('ZREM', owner_index, op_id)
          redis.call('ZREM', index, op_id)
          removed = removed + 1
        else
          if left == -1 then left = 60000 end  -- no expiry: looked at again later
          if not next_look or now + left < next_look then next_look = now + left end
          offset = offset + 1
        end
      end
      if #ids < PAGE then break end
      if removed >= batch then
        finished, more = false, 1  -- stays due: the next call goes on
        break
      end
    end
    if finished then
      local younger = redis.call('ZRANGE', owner_index, '(' .. oldest, '+inf', 'BYSCORE',
        'LIMIT', 0, 1, 'WITHSCORES')
      if younger[2] then
        local due_at = math.floor(tonumber(younger[2]) / 1000) + ttl
        if not next_look or due_at < next_look then next_look = due_at end
      end
      if next_look then
        redis.call('ZADD', owners, next_look, owner)
      else
        redis.call('ZREM', owners, owner)
      end
    end
  end
end
if #due_owners == batch then more = 1 end
return {removed, more}
