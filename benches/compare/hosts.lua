-- wrk script: one Host per request, taken in turn from a file of names
-- (one per line; the file is shuffled once when it is written, so taking the
-- names in order is a random draw without wrk spending CPU on an RNG).
--
--   wrk -s benches/compare/hosts.lua http://127.0.0.1:18080/ -- HOSTS.txt
--
-- The requests are formatted once in init(), so request() costs a table index.
-- Headers given with -H (e.g. "Connection: close") are kept.
local reqs = {}
local n, i = 0, 0

function init(args)
    local path = args[1] or error("usage: wrk -s hosts.lua URL -- HOSTS.txt")
    local f = assert(io.open(path, "r"))
    for name in f:lines() do
        if name ~= "" then
            local h = {}
            for k, v in pairs(wrk.headers) do h[k] = v end
            h["Host"] = name
            n = n + 1
            reqs[n] = wrk.format(nil, nil, h)
        end
    end
    f:close()
    assert(n > 0, "no names in " .. path)
    -- each thread starts at a different offset
    i = (math.floor(tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0) % n)
end

function request()
    i = i + 1
    if i > n then i = 1 end
    return reqs[i]
end
