-- wrk script: POST /v1/scans, every request with a QR token never sent before (tokens are one
-- use). Usage:
--   wrk -t2 -c32 -d15s --latency -s bench/wrk_scans.lua http://127.0.0.1:PORT \
--       -- INSTITUTION_TOKENS_FILE SCAN_TOKENS_FILE NTHREADS
-- INSTITUTION_TOKENS_FILE: lines "bearer_token<TAB>purpose", line n for institution n: the purpose
-- it scans for, one its kind may use (a pharmacy: pharmacy or query, docs/decisions.md).
-- SCAN_TOKENS_FILE: lines "n<TAB>qr_token": scan qr_token as institution n (same pooling area).
-- Thread k of NTHREADS takes lines k, k+NTHREADS, ... so no token is sent twice. When a thread
-- runs out it sends GET /healthz instead and counts it in "exhausted": such a run is invalid.
-- Prints "BENCH_CODES {...}" (responses by status / problem code) and "BENCH_EXHAUSTED n".
-- Counting of responses by status/code, shared with wrk_status.lua.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wrk_status.lua")

exhausted = 0
local insts = {}
local mine = {}
local i = 0

function init(args)
  for line in io.lines(args[1]) do
    local bearer, purpose = string.match(line, "^([^\t]+)\t(.+)$")
    if bearer then table.insert(insts, {bearer = bearer, purpose = purpose}) end
  end
  local n = tonumber(args[3]) or 1
  local k = 0
  for line in io.lines(args[2]) do
    if k % n == (tid or 0) then
      local idx, tok = string.match(line, "^(%d+)\t(.+)$")
      if idx then
        local inst = insts[tonumber(idx) + 1]
        table.insert(mine, wrk.format("POST", "/v1/scans",
          {["Authorization"] = "Bearer " .. inst.bearer,
           ["Content-Type"] = "application/json"},
          '{"token":"' .. tok .. '","purpose":"' .. inst.purpose .. '"}'))
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
