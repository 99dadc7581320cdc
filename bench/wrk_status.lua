-- wrk script for plain GET benchmarks (e.g. /healthz): counts responses by status (and by the
-- problem+json `code` for non-2xx) and prints them as one JSON line, "BENCH_CODES {...}".
-- Usage: wrk -t2 -c32 -d15s --latency -s bench/wrk_status.lua http://127.0.0.1:PORT/healthz
-- The other wrk_*.lua scripts load this one for the counting and add `init`/`request`
-- (and optionally `after_done(threads)`).
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

codes = {}

function response(status, headers, body)
  local key = tostring(status)
  if status >= 300 and body then
    local c = string.match(body, '"code"%s*:%s*"([%w_]+)"')
    if c then key = key .. ":" .. c end
  end
  codes[key] = (codes[key] or 0) + 1
end

function done(summary, latency, requests)
  local agg = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("codes") or {}) do agg[k] = (agg[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(agg) do table.insert(parts, string.format('"%s":%d', k, v)) end
  io.write("BENCH_CODES {" .. table.concat(parts, ",") .. "}\n")
  if after_done then after_done(threads) end
end
