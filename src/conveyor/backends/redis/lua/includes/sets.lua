-- Sorted-set writes gathered while a script works through its batch and sent at the end, one
-- ZREM and one ZADD per key (in slices, as unpack() is limited by Lua's stack), instead of one
-- command per job: what keeps the listing indexes nearly free on the hot path. Only sets the
-- script does not read again before ``flush_sets()`` may be written this way, and a member must
-- not be both added to and removed from one key between two flushes (removals go first).
--
-- Gathering costs tables, which Lua makes and grows on every call: it pays for itself from
-- about GATHER_FROM jobs. A script with a smaller batch sets ``sets_direct``, and each write is
-- sent at once.

local GATHER_FROM = 8
local sets_direct = false
local gathered = nil  -- {order = keys in first-use order, rem = key -> members, add = key ->
                      -- score, member ...}; nil until a write is gathered

local function gather(book, key)
    if gathered == nil then
        gathered = {order = {}, rem = {}, add = {}}
    end
    local list = gathered[book][key]
    if not list then
        list = {}
        gathered[book][key] = list
        if not (gathered.rem[key] and gathered.add[key]) then  -- the key's first write
            gathered.order[#gathered.order + 1] = key
        end
    end
    return list
end

local function zadd_later(key, score, member)
    if sets_direct then
        redis.call('ZADD', key, score, member)
        return
    end
    local list = gather('add', key)
    list[#list + 1] = score
    list[#list + 1] = member
end

local function zrem_later(key, member)
    if sets_direct then
        redis.call('ZREM', key, member)
        return
    end
    local list = gather('rem', key)
    list[#list + 1] = member
end

local function flush_sets()
    if gathered == nil then
        return
    end
    for _, key in ipairs(gathered.order) do
        local gone = gathered.rem[key]
        if gone then
            for i = 1, #gone, 500 do
                redis.call('ZREM', key, unpack(gone, i, math.min(i + 499, #gone)))
            end
        end
        local added = gathered.add[key]
        if added then
            for i = 1, #added, 1000 do
                redis.call('ZADD', key, unpack(added, i, math.min(i + 999, #added)))
            end
        end
    end
    gathered = nil
end
