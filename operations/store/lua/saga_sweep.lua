-- Removes finished sagas whose hash has expired from their shard's saga index and status
-- indexes, and tombstones past their horizon.
--
-- KEYS[1] saga index (zset)   KEYS[2] tombstones (zset)
-- KEYS[3..] the finished status indexes of the shard's saga types (zsets, scored by expiry)
-- ARGV[1] the shard's key prefix ('P:{S}'), ARGV[2] now (s), ARGV[3] at most this many members
-- per status index
-- Returns {sagas removed, tombstones removed, members looked at}.
--
-- A member whose hash still lives (scored on another process's clock) is scored again by the
-- hash's own time to live; one whose hash no longer expires (it started again) only leaves the
-- status index.

local index, tombstones = KEYS[1], KEYS[2]
local tag, now, batch = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local removed, looked = 0, 0
for position = 3, #KEYS do
  local due = redis.call('ZRANGE', KEYS[position], '-inf', now, 'BYSCORE', 'LIMIT', 0, batch)
  looked = looked + #due
  for _, member in ipairs(due) do
    local left = redis.call('PTTL', tag .. ':saga:' .. member)
    if left > 0 then
      redis.call('ZADD', KEYS[position], now + left / 1000, member)
    else
      redis.call('ZREM', KEYS[position], member)
      if left == -2 then
        redis.call('ZREM', index, member)
        removed = removed + 1
      end
    end
  end
end
local buried = redis.call('ZREMRANGEBYSCORE', tombstones, '-inf', now)
return {removed, buried, looked}
