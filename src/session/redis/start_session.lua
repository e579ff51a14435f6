-- Keeps a session started from a PAT, only if that PAT is still there:
-- claimed (single use, and then spent: "!used" is left until it would have
-- expired, so that a replay is known for what it is) or unclaimed
-- (reusable). A revocation that ran since the PAT was taken deleted it: no
-- session then.
-- KEYS[1] the session's key, KEYS[2] the PAT's key, KEYS[3] the user's index
-- ARGV[1] the session (JSON), ARGV[2] its TTL (ms), ARGV[3] "1" for single
-- use, ARGV[4] the session's index member, ARGV[5] the PAT's index member,
-- ARGV[6] the index's TTL (ms): the session's lifetime cap
local pat = redis.call('GET', KEYS[2])
if not pat then
  return 0
end
local claimed = string.sub(pat, 1, 1) == '!'
if pat == '!used' then
  return 0
end
if ARGV[3] == '1' then
  if not claimed then
    return 0
  end
  redis.call('SET', KEYS[2], '!used', 'KEEPTTL')
  redis.call('SREM', KEYS[3], ARGV[5])
elseif claimed then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[4])
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[6]) then
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
end
return 1
