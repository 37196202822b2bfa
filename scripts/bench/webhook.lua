-- wrk script of webhook.sh: POSTs a small JSON body with a bearer token
-- (when one is given) and a unique X-Idempotency-Key per request, counts
-- 200 answers per thread, and prints one machine-readable RESULT line.
--
-- wrk -s webhook.lua URL -- TOKEN TAG   (TOKEN may be "-" for none)

local threads = {}

function setup(thread)
    thread:set("tid", #threads + 1)
    table.insert(threads, thread)
end

function init(args)
    token = args[1] or "-"
    tag = args[2] or "bench"
    seq = 0
    ok = 0
    duplicate = 0
    other = 0
end

function request()
    seq = seq + 1
    local headers = {
        ["Content-Type"] = "application/json",
        ["X-Idempotency-Key"] = tag .. "-" .. tid .. "-" .. seq,
    }
    if token ~= "-" then
        headers["Authorization"] = "Bearer " .. token
    end
    local body = '{"seq":' .. seq .. ',"thread":' .. tid .. ',"kind":"bench","severity":3}'
    return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
    if status == 200 then
        ok = ok + 1
        if body:find('"duplicate"', 1, true) then
            duplicate = duplicate + 1
        end
    else
        other = other + 1
    end
end

function done(summary, latency, requests)
    local ok_total, duplicate_total, other_total = 0, 0, 0
    for _, t in ipairs(threads) do
        ok_total = ok_total + t:get("ok")
        duplicate_total = duplicate_total + t:get("duplicate")
        other_total = other_total + t:get("other")
    end
    local e = summary.errors
    io.write(string.format(
        "RESULT requests=%d seconds=%.3f rps=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f ok=%d duplicate=%d other=%d " ..
        "socket_errors=%d\n",
        summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
        ok_total, duplicate_total, other_total,
        e.connect + e.read + e.write + e.timeout))
end
