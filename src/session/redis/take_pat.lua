-- Hands out a PAT scoped to an app; with single use, claims it in the same
-- step (a claimed record starts with "!"; a used one is "!used"), so no
-- other exchange gets it.
-- KEYS[1] the PAT's key
-- ARGV[1] the app id, ARGV[2] "1" for single use
-- Returns { "ok", record } or { why not: "unknown", "used", "wrong_app", "" }.
local record = redis.call('GET', KEYS[1])
if not record then
  return { 'unknown', '' }
end
if string.sub(record, 1, 1) == '!' then
  return { 'used', '' }
end
if cjson.decode(record)['app_id'] ~= ARGV[1] then
  return { 'wrong_app', '' }
end
if ARGV[2] == '1' then
  redis.call('SET', KEYS[1], '!' .. record, 'KEEPTTL')
end
return { 'ok', record }
