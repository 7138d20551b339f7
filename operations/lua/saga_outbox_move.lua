-- Moves a saga's outbox from the key of the earlier layout to its own, once: messages committed
-- before an upgrade still go out.
--
-- KEYS[1] the outbox's earlier key ('P:{S}:saga:NAME:ID:outbox')   KEYS[2] its key now
-- Returns how many messages were moved. A key of the earlier name that is not a list is
-- another saga's hash (its id ends in ':outbox'), and stays where it is.

local legacy, outbox = KEYS[1], KEYS[2]
if redis.call('TYPE', legacy)['ok'] ~= 'list' then return 0 end
local found = redis.call('TYPE', outbox)['ok']
if found ~= 'none' and found ~= 'list' then return 0 end
local entries = redis.call('LRANGE', legacy, 0, -1)
for position = #entries, 1, -1 do
  redis.call('LPUSH', outbox, entries[position])  -- older than anything committed since
end
redis.call('DEL', legacy)
return #entries
