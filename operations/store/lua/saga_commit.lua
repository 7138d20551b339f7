-- Commits a saga's new state and the messages its step publishes, if nobody committed since it
-- was loaded (optimistic concurrency: the version must still be the one read).
--
-- KEYS[1] saga hash (version, doc)   KEYS[2] its outbox list
-- KEYS[3] outbox index (zset)         KEYS[4] deadlines (zset)
-- KEYS[5] saga index (zset, by last commit time)
-- KEYS[6] saga types (set)            KEYS[7] tombstones (zset: finished sagas, scored by when
--                                               their tombstone expires)
-- KEYS[8..] the saga type's status indexes (zsets), one per status, scored by when the member
--           expires (+inf while running)
-- ARGV: expected version, document JSON, member name, now (s), wake-up time (s or ''),
--       finished ('1' or '0'), ttl for a finished saga (s), saga type, position of the new
--       status among KEYS[8..] (from 1), tombstone horizon (s, 0 for none),
--       outbox entries JSON...
-- Returns the new version, or -1 when the expected version is stale: also when a new saga
-- would take the id of one that finished within the tombstone horizon.

local saga, outbox, outbox_index, deadlines, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local types, tombstones = KEYS[6], KEYS[7]
local expected, document, member = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local now, wake, finished, ttl = ARGV[4], ARGV[5], ARGV[6] == '1', tonumber(ARGV[7])
local saga_type, status, horizon = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10])
local FIRST_ENTRY, FIRST_STATUS = 11, 8

-- Every check comes before the first write: a key of the wrong type (only possible when
-- something else wrote it) fails the commit with an error and leaves nothing behind.
local function expect(key, wanted)
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= wanted then
    return redis.error_reply('WRONGTYPE key ' .. key .. ' holds a ' .. found .. ', not a ' .. wanted)
  end
end
local refused = expect(saga, 'hash') or expect(outbox, 'list') or expect(outbox_index, 'zset')
  or expect(deadlines, 'zset') or expect(index, 'zset') or expect(types, 'set')
  or expect(tombstones, 'zset')
for position = FIRST_STATUS, #KEYS do
  refused = refused or expect(KEYS[position], 'zset')
end
if refused then return refused end

local current = tonumber(redis.call('HGET', saga, 'version') or '0')
if current ~= expected then
  return -1
end
if current == 0 then
  local buried = redis.call('ZSCORE', tombstones, member)
  if buried and tonumber(buried) > tonumber(now) then
    return -1
  end
end

local version = current + 1
redis.call('HSET', saga, 'version', version, 'doc', document)
redis.call('ZADD', index, now, member)

if #ARGV >= FIRST_ENTRY then
  for entry = FIRST_ENTRY, #ARGV do
    redis.call('RPUSH', outbox, ARGV[entry])
  end
  redis.call('ZADD', outbox_index, 'NX', now, member)
end

if wake == '' then
  redis.call('ZREM', deadlines, member)
else
  redis.call('ZADD', deadlines, wake, member)
end

-- A running saga counts until it finishes; a finished one until its hash expires.
redis.call('SADD', types, saga_type)
for position = FIRST_STATUS, #KEYS do
  if position - FIRST_STATUS + 1 == status then
    if finished then
      redis.call('ZADD', KEYS[position], tonumber(now) + ttl, member)  -- the sweep removes it
    else
      redis.call('ZADD', KEYS[position], '+inf', member)
    end
  else
    redis.call('ZREM', KEYS[position], member)
  end
end

if finished then
  redis.call('EXPIRE', saga, ttl)
  if horizon > 0 then
    -- Outlives the saga itself: a start message redelivered after the saga expired finds it.
    redis.call('ZADD', tombstones, tonumber(now) + math.max(horizon, ttl), member)
  end
else
  redis.call('PERSIST', saga)
end
return version
