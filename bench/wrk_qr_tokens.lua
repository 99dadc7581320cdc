-- wrk script: POST /v1/me/qr-tokens, round-robin over holder access tokens.
-- Usage: wrk -t2 -c32 -d15s --latency -s bench/wrk_qr_tokens.lua http://127.0.0.1:PORT \
--          -- HOLDER_TOKENS_FILE '{"image":"svg"}'
-- HOLDER_TOKENS_FILE has one holder access token (JWT) per line; the second argument is the
-- JSON body (default "{}"). Each thread starts at a different offset in the list.
-- Prints "BENCH_CODES {...}": responses counted by status (and problem `code` for non-2xx).
-- Counting of responses by status/code, shared with wrk_status.lua.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wrk_status.lua")

local holders = {}
local body = "{}"
local i = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then table.insert(holders, line) end
  end
  if #holders == 0 then error("no holder tokens in " .. tostring(args[1])) end
  if args[2] and #args[2] > 0 then body = args[2] end
  i = (tid or 0) * 7  -- spread the threads over the holders
end

function request()
  i = i + 1
  local token = holders[(i % #holders) + 1]
  return wrk.format("POST", "/v1/me/qr-tokens",
    {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}, body)
end
