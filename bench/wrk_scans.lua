-- wrk script: POST /v1/scans, every request with a QR token never sent before (tokens are one
-- use). Usage:
--   wrk -t2 -c32 -d15s --latency -s bench/wrk_scans.lua http://127.0.0.1:PORT \
--       -- INSTITUTION_TOKENS_FILE SCAN_TOKENS_FILE NTHREADS [PURPOSE]
-- INSTITUTION_TOKENS_FILE: one institution bearer token per line (line n is institution n).
-- SCAN_TOKENS_FILE: lines "n<TAB>qr_token": scan qr_token as institution n (same pooling area).
-- Thread k of NTHREADS takes lines k, k+NTHREADS, ... so no token is sent twice. When a thread
-- runs out it sends GET /healthz instead and counts it in "exhausted": such a run is invalid.
-- Prints "BENCH_CODES {...}" (responses by status / problem code) and "BENCH_EXHAUSTED n".
-- Counting of responses by status/code, shared with wrk_status.lua.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wrk_status.lua")

exhausted = 0
local insts = {}
local mine = {}
local purpose = "registration"
local i = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then table.insert(insts, line) end
  end
  local n = tonumber(args[3]) or 1
  local k = 0
  for line in io.lines(args[2]) do
    if k % n == (tid or 0) then
      local idx, tok = string.match(line, "^(%d+)\t(.+)$")
      if idx then
        table.insert(mine, wrk.format("POST", "/v1/scans",
          {["Authorization"] = "Bearer " .. insts[tonumber(idx) + 1],
           ["Content-Type"] = "application/json"},
          '{"token":"' .. tok .. '","purpose":"' .. (args[4] or purpose) .. '"}'))
      end
    end
    k = k + 1
  end
end

function request()
  i = i + 1
  if i > #mine then
    exhausted = exhausted + 1
    return wrk.format("GET", "/healthz")
  end
  local req = mine[i]
  mine[i] = false  -- never again
  return req
end

function after_done(threads)
  local ex = 0
  for _, t in ipairs(threads) do ex = ex + (t:get("exhausted") or 0) end
  io.write("BENCH_EXHAUSTED " .. ex .. "\n")
end
