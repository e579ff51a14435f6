-- wrk script for bench/run's store figures: MODE=pairs mints a PAT and
-- exchanges it, over and over (each exchange leaves a live session);
-- MODE=mint only mints (each leaves a live PAT). Emails cycle over USERS
-- users, as a portal's do. Prints "pairs N" or "mints N" at the end.
-- SESSION_EXPIRY (minutes) and PAT_EXPIRY (seconds) go into each mint body
-- when set (bench/soak keeps the store's records short-lived with them).
local token = os.getenv("EMBEDGATE_TOKEN")
local app = os.getenv("EMBEDGATE_APP")
local mode = os.getenv("MODE") or "pairs"
local users = tonumber(os.getenv("USERS") or "1000")
local expiries = ""
if os.getenv("SESSION_EXPIRY") then
  expiries = expiries .. ',"sessionExpiry":' .. os.getenv("SESSION_EXPIRY")
end
if os.getenv("PAT_EXPIRY") then
  expiries = expiries .. ',"patExpiry":' .. os.getenv("PAT_EXPIRY")
end
local queue = {}
local n = 0
done_pairs = 0
done_mints = 0

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function request()
  if mode == "pairs" and #queue > 0 then
    local pat = table.remove(queue)
    return wrk.format("GET", "/embed-apps/" .. app .. "?personal-access-token=" .. pat)
  end
  n = n + 1
  local body = '{"email":"user' .. (n % users) .. '@example.com","appId":"' .. app .. '"' .. expiries .. '}'
  return wrk.format("POST", "/api/ext/users/personal-access-token",
    { ["Authorization"] = "Basic " .. token, ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  if status == 201 then
    done_mints = done_mints + 1
    if mode == "pairs" then
      table.insert(queue, body:match('"personalAccessToken":"([^"]+)"'))
    end
  elseif status == 303 then
    done_pairs = done_pairs + 1
  end
end

function done(summary, latency, requests)
  local pairs_, mints = 0, 0
  for _, thread in ipairs(threads) do
    pairs_ = pairs_ + thread:get("done_pairs")
    mints = mints + thread:get("done_mints")
  end
  io.write(string.format("pairs %d\nmints %d\n", pairs_, mints))
end
