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
--       the shard's key prefix ('P:{S}'), the business-key values (JSON array), the overdue
--       index of the step it waits for ('' for none) and when it becomes overdue there (s),
--       outbox entries JSON...
--
-- Besides 'version' and 'doc' the hash keeps 'k' (the business-key values indexed), 'o' (the
-- overdue index holding it) and 'sent' (the last step's outbox, for a retry of the waiting step).
-- Each value's index P:{S}:saga-key:VALUE is scored by when the member expires (+inf while it
-- runs), trimmed of expired members at each write, and expires with its last member.
-- Returns the new version, or -1 when the expected version is stale: also when a new saga
-- would take the id of one that finished within the tombstone horizon.

local saga, outbox, outbox_index, deadlines, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local types, tombstones = KEYS[6], KEYS[7]
local expected, document, member = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local now, wake, finished, ttl = ARGV[4], ARGV[5], ARGV[6] == '1', tonumber(ARGV[7])
local saga_type, status, horizon = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10])
local tag, key_values, overdue_index, overdue_at = ARGV[11], cjson.decode(ARGV[12]), ARGV[13], ARGV[14]
local FIRST_ENTRY, FIRST_STATUS = 15, 8

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
for _, value in ipairs(key_values) do
  refused = refused or expect(tag .. ':saga-key:' .. value, 'zset')
end
if overdue_index ~= '' then refused = refused or expect(overdue_index, 'zset') end
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
local was_indexed = redis.call('HMGET', saga, 'k', 'o')
redis.call('HSET', saga, 'version', version, 'doc', document)
redis.call('ZADD', index, now, member)

if #ARGV >= FIRST_ENTRY then
  for entry = FIRST_ENTRY, #ARGV do
    redis.call('RPUSH', outbox, ARGV[entry])
  end
  redis.call('ZADD', outbox_index, 'NX', now, member)
  redis.call('HSET', saga, 'sent', '[' .. table.concat(ARGV, ',', FIRST_ENTRY, #ARGV) .. ']')
end

-- Business keys: leave the values it no longer holds, join (or re-score in) those it does.
local holds = {}
for _, value in ipairs(key_values) do holds[value] = true end
if was_indexed[1] then
  for _, value in ipairs(cjson.decode(was_indexed[1])) do
    if not holds[value] then redis.call('ZREM', tag .. ':saga-key:' .. value, member) end
  end
end
local until_score = finished and (tonumber(now) + ttl) or '+inf'
for _, value in ipairs(key_values) do
  local key = tag .. ':saga-key:' .. value
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. now)
  redis.call('ZADD', key, until_score, member)
  if redis.call('ZCOUNT', key, '+inf', '+inf') > 0 then
    redis.call('PERSIST', key)
  else
    local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    redis.call('EXPIREAT', key, math.ceil(tonumber(last[2])) + 1)
  end
end
redis.call('HSET', saga, 'k', ARGV[12])

-- Overdue: in the index of the step it waits for, unless finished or without an objective. One
-- still overdue at the same step keeps its told (negated) score.
local was_overdue = was_indexed[2]
if was_overdue and was_overdue ~= overdue_index then redis.call('ZREM', was_overdue, member) end
if overdue_index ~= '' and not finished then
  local told = redis.call('ZSCORE', overdue_index, member)
  if not (told and tonumber(told) == -tonumber(overdue_at)) then
    redis.call('ZADD', overdue_index, overdue_at, member)
  end
  redis.call('HSET', saga, 'o', overdue_index)
else
  redis.call('HDEL', saga, 'o')
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
