-- Applies one message to one operation, atomically (contract §3).
--
-- KEYS[1] record hash      KEYS[2] the message's user's index
-- KEYS[3] global index     KEYS[4] change stream   KEYS[5] owners (zset)
-- ARGV[1]: one JSON array (one argument packs and parses faster than thirteen):
--   [operation id, state, name, user id, code, reason, message name, now (ISO 8601),
--    now (ms), sent at (ms, or ''), ttl (s), stream max length, most history entries]
-- ARGV[2]: the field that says the message id was seen ('' when the message has none)
-- ARGV[3]: the user id's stored form ('' when there is none)
-- ARGV[4]: the operation id's stored form, its member in the indexes (as its key names it)
-- (made by operations/store/layout.py and keys.py, which describe the hash and the keys)
-- Returns {outcome, snapshot JSON or false, stream entry id or false}
-- with outcome one of applied, duplicate, stale.
--
-- The record's fields have one-letter names: u owner (its stored form), n name, s state,
-- c code and r reason (only when set), v version, b created at (ms since the epoch), t updated
-- at (ms after b: a small integer takes fewer bytes).
-- The message ids already applied or judged live in the record hash itself, one field each:
-- they expire with the record and cost no key of their own. The value is the version the
-- message made, or empty when it changed nothing.
-- The history lives in the record hash too, one short field per part of each entry, named by
-- the version and a letter (none of the record's field names starts with a digit):
--   <v> (the version alone, which a listpack stores as a small integer) message name
--   and only when present or different (an entry's state is the record's for the newest
--   entry, and pending for every other: a change to any other state is final):
--   <v>n display name (not for the newest entry, whose name is the record's, nor when it is
--        the message name)   <v>c code   <v>r reason   <v>t sent at (ms)
--   <v>a applied at (ms; not for version 1, whose time is createdAt, nor for the newest
--        entry, whose time is updatedAt)
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
local seen, user_packed, member = ARGV[2], ARGV[3], ARGV[4]
local op_id, state, name, user_id = args[1], args[2], args[3], args[4]
local code, reason, message = args[5], args[6], args[7]
local now_iso, now_ms, sent_at = args[8], args[9], args[10]
local ttl, max_length, max_history = tonumber(args[11]), tonumber(args[12]), tonumber(args[13])

local function nullable(value)
  if value == nil or value == false or value == '' then return cjson.null end
  return value
end

-- An id's stored form back to its text: 16 bytes are a GUID's; a zero byte comes before a
-- text of 16 bytes.
local function unpack_id(data)
  if #data == 16 then
    local hex = string.gsub(data, '.', function(c) return string.format('%02x', string.byte(c)) end)
    return string.sub(hex, 1, 8) .. '-' .. string.sub(hex, 9, 12) .. '-' .. string.sub(hex, 13, 16)
      .. '-' .. string.sub(hex, 17, 20) .. '-' .. string.sub(hex, 21)
  end
  if string.byte(data, 1) == 0 then return string.sub(data, 2) end
  return data
end

-- A time in ms since the epoch as RFC 3339 with milliseconds (days to a date: H. Hinnant's
-- civil_from_days), as operations.timestamps.rfc3339 writes it.
local function iso(ms)
  local today = tonumber(now_ms)
  if math.floor(ms / 86400000) == math.floor(today / 86400000) then
    local clock = ms % 86400000  -- the same day as now: only the time of day is new
    return string.format('%s%02d:%02d:%02d.%03dZ', string.sub(now_iso, 1, 11),
      math.floor(clock / 3600000), math.floor(clock % 3600000 / 60000),
      math.floor(clock % 60000 / 1000), clock % 1000)
  end
  local seconds = math.floor(ms / 1000)
  local days = math.floor(seconds / 86400)
  local clock = seconds - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', year, month, day,
    math.floor(clock / 3600), math.floor(clock % 3600 / 60), clock % 60, ms - seconds * 1000)
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
local current = redis.call('HMGET', record, 'u', 'n', 's', 'b', 'v', 't')
local current_state, current_name = current[3], current[2]

if seen ~= '' and redis.call('HEXISTS', record, seen) == 1 then
  return {'duplicate', false, false}
end

if current_state then
  local stale = current_state ~= 'pending' or (state == 'pending' and name == current_name)
  if stale then
    if seen ~= '' then
      redis.call('HSET', record, seen, '')  -- seen, and expires with the record
    end
    return {'stale', false, false}
  end
end

local refused = expect(index, 'zset') or expect(stream, 'stream') or expect(owners, 'zset')
if refused then return refused end

local previous_packed = current[1] or ''
local owner, owner_packed = user_id, user_packed
if previous_packed ~= '' and previous_packed ~= user_packed then
  owner, owner_packed = unpack_id(previous_packed), previous_packed
end
-- Whoever sent the message, the owner's index must live as long as the operation does.
local users = string.sub(index, 1, -6) .. 'user:'
if owner ~= user_id then owner_index = users .. owner end
refused = expect(owner_index, 'zset')
if refused then return refused end
local moved = current_state and previous_packed ~= owner_packed
local previous_owner = moved and unpack_id(previous_packed) or ''
if moved then
  refused = expect(users .. previous_owner, 'zset')
  if refused then return refused end
end
local created_ms, created_at, updated_ms, rank = now_ms, now_iso, nil, nil
if current_state then
  created_ms = tonumber(current[4])
  updated_ms = created_ms + tonumber(current[6])
  created_at = iso(created_ms)
  rank = redis.call('ZSCORE', index, member)
end
local terminal = state ~= 'pending'
local version = (tonumber(current[5]) or 0) + 1

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
-- which the key names; the code and reason only when set (a record that has them is final).
-- Then this change's history entry, and its message id seen (the version links the two).
-- Its state, time and name are the record's (and version 1's time its createdAt): the entry
-- before it, no longer the newest, gets its own time and name (its state is pending).
local fields = {'u', owner_packed, 'n', name, 's', state, 'v', version,
  'b', string.format('%d', created_ms), 't', now_ms - created_ms, tostring(version), message}
local n = #fields
local function add(field, value)
  n = n + 2
  fields[n - 1], fields[n] = field, value
end
if terminal and code ~= '' then add('c', code) end
if terminal and reason ~= '' then add('r', reason) end
if version > 1 then
  if version > 2 then add((version - 1) .. 'a', string.format('%d', updated_ms)) end
  -- Its display name, when it is not that entry's message name.
  local before = redis.call('HGET', record, tostring(version - 1))
  if before and before ~= current_name then add((version - 1) .. 'n', current_name) end
end
if terminal and code ~= '' then add(version .. 'c', code) end
if terminal and reason ~= '' then add(version .. 'r', reason) end
if sent_at ~= '' then add(version .. 't', string.format('%d', sent_at)) end
if seen ~= '' then add(seen, version) end
redis.call('HSET', record, unpack(fields))
-- Only the newest max_history entries are kept (each change adds one, so one goes).
local dropped = version - max_history
if dropped >= 1 then
  redis.call('HDEL', record, tostring(dropped), dropped .. 'a', dropped .. 'n', dropped .. 'c',
    dropped .. 'r', dropped .. 't')
end

redis.call('EXPIRE', record, ttl)

-- The owners' indexes, and the owners zset, live twice as long as their newest operation: the
-- sweep finds expired operations through them, so they must still be there when it comes.
redis.call('ZADD', owner_index, rank, member)
redis.call('EXPIRE', owner_index, 2 * ttl)
if moved then
  redis.call('ZREM', users .. previous_owner, member)
end
redis.call('ZADD', index, rank, member)
redis.call('EXPIRE', index, ttl)
redis.call('ZADD', owners, 'LT', tonumber(ms) + ttl * 1000, owner)
redis.call('EXPIRE', owners, 2 * ttl)

return {'applied', snapshot, entry}
