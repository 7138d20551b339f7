-- Keeps one dead letter, once, and holds the kept ones within their bounds, oldest dropped first.
-- See operations/deadletters/store.py for the keys.
-- KEYS: letters, index, groups, group-of, seen
-- ARGV: prefix, id ('' to only apply the bounds), document, at (ms), group key, group JSON,
--       max count, oldest kept (ms), now (ms)
local letters, index, groups, group_of, seen = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, id, document = ARGV[1], ARGV[2], ARGV[3]
local at, gkey, group = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local max_count, oldest, now = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])

-- Checks before writes: a key of the wrong type (written by something else) fails the script
-- and changes nothing.
local expected = {{letters, 'hash'}, {index, 'zset'}, {groups, 'hash'}, {group_of, 'hash'},
  {seen, 'zset'}}
if id ~= '' then table.insert(expected, {prefix .. ':group:' .. gkey, 'zset'}) end
for _, key in ipairs(expected) do
  local found = redis.call('TYPE', key[1])['ok']
  if found ~= 'none' and found ~= key[2] then
    return redis.error_reply('WRONGTYPE key ' .. key[1] .. ' holds a ' .. found .. ', not a ' .. key[2])
  end
end

local function drop(victim)
  local g = redis.call('HGET', group_of, victim)
  redis.call('HDEL', letters, victim)
  redis.call('ZREM', index, victim)
  redis.call('HDEL', group_of, victim)
  if g then
    local members = prefix .. ':group:' .. g
    redis.call('ZREM', members, victim)
    if redis.call('ZCARD', members) == 0 then
      redis.call('HDEL', groups, g)
    end
  end
end

-- 1: kept; 0: kept before (a redelivery); 2: older than the age bound, not kept
local kept = 0
if id ~= '' then
  if redis.call('HEXISTS', letters, id) == 1 or redis.call('ZSCORE', seen, id) then
    kept = 0
  elseif at < oldest then
    kept = 2
    redis.call('ZADD', seen, now, id)
  else
    redis.call('HSET', letters, id, document)
    redis.call('ZADD', index, at, id)
    redis.call('HSET', group_of, id, gkey)
    redis.call('ZADD', prefix .. ':group:' .. gkey, at, id)
    redis.call('HSET', groups, gkey, group)
    redis.call('ZADD', seen, now, id)
    kept = 1
  end
end

local aged = redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. oldest)
for _, victim in ipairs(aged) do
  drop(victim)
end
local over = {}
local excess = redis.call('ZCARD', index) - max_count
if excess > 0 then
  over = redis.call('ZRANGE', index, 0, excess - 1)
  for _, victim in ipairs(over) do
    drop(victim)
  end
end
-- The ids seen stay as long as a letter may: a redelivery after that is kept again.
redis.call('ZREMRANGEBYSCORE', seen, '-inf', '(' .. oldest)
local extra_seen = redis.call('ZCARD', seen) - 2 * max_count
if extra_seen > 0 then
  redis.call('ZREMRANGEBYRANK', seen, 0, extra_seen - 1)
end

local reply = {kept, #aged, #over}
for _, victim in ipairs(aged) do table.insert(reply, victim) end
for _, victim in ipairs(over) do table.insert(reply, victim) end
return reply
