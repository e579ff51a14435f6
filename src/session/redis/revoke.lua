-- Ends a user's sessions and PATs (of one app, or all) found through the
-- user's index, and tells every replica which sessions ended.
-- KEYS[1] the user's index
-- ARGV[1] the key prefix, ARGV[2] the app id or "" for every app,
-- ARGV[3] the channel of ended sessions, ARGV[4] the revoking replica
-- Returns { PATs deleted, { hex hashes of sessions deleted }, { their apps } }.
local ended = {}
local apps = {}
local tokens = 0
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local kind, hex, app = string.match(member, '^(%a+):(%x+):(.*)$')
  if kind and (ARGV[2] == '' or app == ARGV[2]) then
    local deleted = redis.call('DEL', ARGV[1] .. kind .. ':' .. hex)
    redis.call('SREM', KEYS[1], member)
    if deleted == 1 then
      if kind == 'session' then
        table.insert(ended, hex)
        table.insert(apps, app)
      else
        tokens = tokens + 1
      end
    end
  end
end
if #ended > 0 then
  redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' ' .. table.concat(ended, ' '))
end
return { tokens, ended, apps }
