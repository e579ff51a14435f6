-- Keeps a minted PAT and indexes it under its user.
-- KEYS[1] the PAT's key, KEYS[2] the user's index
-- ARGV[1] the record (JSON), ARGV[2] its TTL (ms), ARGV[3] its index member
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
-- The index lives as long as the longest-lived record in it.
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
