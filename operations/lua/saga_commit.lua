-- Commits a saga's new state and the messages its step publishes, if nobody committed since it
-- was loaded (optimistic concurrency: the version must still be the one read).
--
-- KEYS[1] saga hash (version, doc)   KEYS[2] its outbox list
-- KEYS[3] outbox index (zset)         KEYS[4] deadlines (zset)
-- KEYS[5] saga index (zset, by last commit time)
-- ARGV: expected version, document JSON, member name, now (s), deadline (s or ''),
--       finished ('1' or '0'), ttl for a finished saga (s), outbox entries JSON...
-- Returns the new version, or -1 when the expected version is stale.

local saga, outbox, outbox_index, deadlines, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local expected, document, member = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local now, deadline, finished, ttl = ARGV[4], ARGV[5], ARGV[6] == '1', tonumber(ARGV[7])

local current = tonumber(redis.call('HGET', saga, 'version') or '0')
if current ~= expected then
  return -1
end

local version = current + 1
redis.call('HSET', saga, 'version', version, 'doc', document)
redis.call('ZADD', index, now, member)

if #ARGV > 7 then
  for index = 8, #ARGV do
    redis.call('RPUSH', outbox, ARGV[index])
  end
  redis.call('ZADD', outbox_index, 'NX', now, member)
end

if finished or deadline == '' then
  redis.call('ZREM', deadlines, member)
else
  redis.call('ZADD', deadlines, deadline, member)
end

if finished then
  redis.call('EXPIRE', saga, ttl)
else
  redis.call('PERSIST', saga)
end
return version
