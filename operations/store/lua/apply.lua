-- Applies one message to one operation, atomically (contract §3).
--
-- KEYS[1] record hash      KEYS[2] the message's user's index
-- KEYS[3] global index     KEYS[4] change stream   KEYS[5] owners (zset)
-- ARGV[1]: one JSON array (one argument packs and parses faster than thirteen):
--   [operation id, message id, state, name, user id, code, reason, message name,
--    now (ISO 8601), sent at (ISO 8601 or ''), ttl (s), stream max length, most history entries]
-- Returns {outcome, snapshot JSON or false, stream entry id or false}
-- with outcome one of applied, duplicate, stale.
--
-- The message ids already applied or judged live in the record hash itself, as fields
-- 'm:<message id>': they expire with the record and cost no key of their own. The value is the
-- version the message made, or empty when it changed nothing.
-- The history lives in the record hash too, one short field per part of each entry, named by
-- the version and a letter (none of the record's field names starts with a digit):
--   <v>s state   <v>m message name   and only when present or different:
--   <v>n display name (not for the newest entry, whose name is the record's, nor when it is
--        the message name)   <v>c code   <v>r reason   <v>t sent at
--   <v>a applied at (not for version 1, whose time is createdAt, nor for the newest entry,
--        whose time is updatedAt)
-- Short values keep the hash in Redis's compact encoding (a listpack); a history list of its
-- own would cost a key, and its entries would repeat the message id.
-- Every operation is in its owner's index, 'user:<owner>', or in 'user:' while it has none.
-- The owners zset names each owner with an index, scored by when the sweep (sweep.lua) must
-- look at that index next (ms, the stream's clock): no later than its newest operation expires.
--
-- Every read and check comes before the first write: a key of the wrong type (only possible
-- when something else wrote it) fails the script with an error and leaves nothing behind.

local record, owner_index, index, stream, owners = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local args = cjson.decode(ARGV[1])
local op_id, msg_id, state, name, user_id = args[1], args[2], args[3], args[4], args[5]
local code, reason, message = args[6], args[7], args[8]
local now_iso, sent_at = args[9], args[10]
local ttl, max_length, max_history = tonumber(args[11]), tonumber(args[12]), tonumber(args[13])

local function nullable(value)
  if value == nil or value == false or value == '' then return cjson.null end
  return value
end

local function expect(key, wanted)
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= wanted then
    return redis.error_reply('WRONGTYPE key ' .. key .. ' holds a ' .. found .. ', not a ' .. wanted)
  end
end

-- HMGET fails on a record of another type before anything is written; the other keys are
-- checked once the message is known to change the record (duplicates and stale ones touch
-- only the record).
local current = redis.call('HMGET', record,
  'state', 'name', 'userId', 'createdAt', 'rank', 'version', 'updatedAt')
local current_state, current_name = current[1], current[2]

if msg_id ~= '' and redis.call('HEXISTS', record, 'm:' .. msg_id) == 1 then
  return {'duplicate', false, false}
end

if current_state then
  local stale = current_state ~= 'pending' or (state == 'pending' and name == current_name)
  if stale then
    if msg_id ~= '' then
      redis.call('HSET', record, 'm:' .. msg_id, '')  -- seen, and expires with the record
    end
    return {'stale', false, false}
  end
end

local refused = expect(index, 'zset') or expect(stream, 'stream') or expect(owners, 'zset')
if refused then return refused end

local previous_owner = current[3] or ''
local owner = previous_owner
if owner == '' then owner = user_id end
-- Whoever sent the message, the owner's index must live as long as the operation does.
local users = string.sub(index, 1, -6) .. 'user:'
if owner ~= user_id then owner_index = users .. owner end
refused = expect(owner_index, 'zset')
if refused then return refused end
local moved = current_state and previous_owner ~= owner
if moved then
  refused = expect(users .. previous_owner, 'zset')
  if refused then return refused end
end
local created_at, rank = current[4], current[5]
if not current_state then created_at = now_iso end
local terminal = state ~= 'pending'
local version = (tonumber(current[6]) or 0) + 1

-- The snapshot's keys are records.Operation's fields, in its order (tests/test_records.py).
local snapshot = cjson.encode({
  id = op_id, userId = nullable(owner), name = name, state = state,
  code = terminal and nullable(code) or cjson.null,
  reason = terminal and nullable(reason) or cjson.null,
  version = version, createdAt = created_at, updatedAt = now_iso,
})

-- Writes from here on.
local entry = redis.call('XADD', stream, 'MAXLEN', '~', max_length, '*',
  'op', snapshot, 'id', op_id, 'user', owner, 'state', state)
local ms, seq = string.match(entry, '^(%d+)-(%d+)$')
if not rank then
  -- Newest-first order for the indexes: the creating entry's id, ms * 1000 + sequence, fits a double.
  rank = string.format('%d', tonumber(ms) * 1000 + math.min(tonumber(seq), 999))
end
-- The record's fields in the order of records.Operation (as the snapshot above) but the id,
-- which the key names, then the rank.
redis.call('HSET', record,
  'userId', owner, 'name', name, 'state', state,
  'code', terminal and code or '', 'reason', terminal and reason or '',
  'version', version, 'createdAt', created_at, 'updatedAt', now_iso, 'rank', rank)

-- This change's history entry, and its message id seen (the version links the two).
-- Its time is the record's updatedAt (and version 1's its createdAt): the entry before it,
-- no longer the newest, gets its own.
local entry_fields = {version .. 's', state, version .. 'm', message}
local function add(field, value)
  entry_fields[#entry_fields + 1] = version .. field
  entry_fields[#entry_fields + 1] = value
end
if version > 2 and current[7] then
  entry_fields[#entry_fields + 1] = (version - 1) .. 'a'
  entry_fields[#entry_fields + 1] = current[7]
end
-- Its display name is the record's name. The entry before, no longer the newest, gets its own
-- when it is not that entry's message name.
if version > 1 then
  local before = redis.call('HGET', record, (version - 1) .. 'm')
  if before and before ~= current_name then
    entry_fields[#entry_fields + 1] = (version - 1) .. 'n'
    entry_fields[#entry_fields + 1] = current_name
  end
end
if terminal and code ~= '' then add('c', code) end
if terminal and reason ~= '' then add('r', reason) end
if sent_at ~= '' then add('t', sent_at) end
if msg_id ~= '' then
  entry_fields[#entry_fields + 1] = 'm:' .. msg_id
  entry_fields[#entry_fields + 1] = version
end
redis.call('HSET', record, unpack(entry_fields))
-- Only the newest max_history entries are kept (each change adds one, so one goes).
local dropped = version - max_history
if dropped >= 1 then
  redis.call('HDEL', record, dropped .. 's', dropped .. 'm', dropped .. 'a', dropped .. 'n',
    dropped .. 'c', dropped .. 'r', dropped .. 't')
end

redis.call('EXPIRE', record, ttl)

-- The owners' indexes, and the owners zset, live twice as long as their newest operation: the
-- sweep finds expired operations through them, so they must still be there when it comes.
redis.call('ZADD', owner_index, rank, op_id)
redis.call('EXPIRE', owner_index, 2 * ttl)
if moved then
  redis.call('ZREM', users .. previous_owner, op_id)
end
redis.call('ZADD', index, rank, op_id)
redis.call('EXPIRE', index, ttl)
redis.call('ZADD', owners, 'LT', tonumber(ms) + ttl * 1000, owner)
redis.call('EXPIRE', owners, 2 * ttl)

return {'applied', snapshot, entry}
