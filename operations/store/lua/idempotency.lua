-- One Idempotency-Key's reservation (operations/sagas/idempotency.py): a hash holding owner,
-- fingerprint, operationId, resourceId and state, "reserved" while its start message is being
-- published, then "started".
--
-- KEYS[1] the reservation (hash)
-- ARGV[1] 'reserve', ARGV[2] owner, ARGV[3] fingerprint, ARGV[4] operation id,
--         ARGV[5] resource id, ARGV[6] lease (ms):
--         reserves the key if nobody holds it and returns {1}; else {0, fingerprint,
--         operationId, resourceId, state} of the one held
-- ARGV[1] 'confirm', ARGV[2] owner, ARGV[3] time to keep it (ms): if still the owner's, marks
--         it started and keeps it that long; returns 1, or 0 when it is not the owner's
-- ARGV[1] 'release', ARGV[2] owner: if still the owner's, deletes it; returns 1 or 0

local key, action, owner = KEYS[1], ARGV[1], ARGV[2]
local found = redis.call('TYPE', key)['ok']
if found ~= 'none' and found ~= 'hash' then
  return redis.error_reply('WRONGTYPE key ' .. key .. ' holds a ' .. found .. ', not a hash')
end
if action == 'reserve' then
  if found == 'none' then
    redis.call('HSET', key, 'owner', owner, 'fingerprint', ARGV[3], 'operationId', ARGV[4],
      'resourceId', ARGV[5], 'state', 'reserved')
    redis.call('PEXPIRE', key, ARGV[6])
    return {1}
  end
  local held = redis.call('HMGET', key, 'fingerprint', 'operationId', 'resourceId', 'state')
  return {0, held[1] or '', held[2] or '', held[3] or '', held[4] or ''}
end
if redis.call('HGET', key, 'owner') ~= owner then
  return 0
end
if action == 'confirm' then
  redis.call('HSET', key, 'state', 'started')
  redis.call('PEXPIRE', key, ARGV[3])
elseif action == 'release' then
  redis.call('DEL', key)
else
  return redis.error_reply('unknown action ' .. tostring(action))
end
return 1
