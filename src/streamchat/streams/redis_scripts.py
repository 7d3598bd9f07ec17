"""The Lua scripts behind the Redis log's writes: each checks the lease and writes in one atomic step.

Keys, in this order where a script takes them: the events stream `sc:s:<id>`, the meta hash
`sc:m:<id>` (owner, state, the continuation record, `final`), the lease `sc:l:<id>` (the holder's
token, expiring after the lease time) and the tokens `sc:t:<id>` (the ids of every step logged,
each followed by a comma). A writer may write while the lease is its own or has expired and no
other process has claimed it; a claim succeeds only on an expired lease of a stream not closed.
"""

# ARGV: token, lease ms, retention s, max events, final ("1"/"0"), token ids ("1,2,"), then the
# events as (name, data) pairs, name "" for the default. Returns the next event number, or -1 when
# another process holds the lease, -2 when the stream is closed.
APPEND_STEP = """
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[1] then return -1 end
if redis.call('HGET', KEYS[2], 'state') == 'closed' then return -2 end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
local seq = 0
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 then seq = tonumber(string.match(top[1][1], '^0%-(%d+)$')) end
for i = 7, #ARGV, 2 do
  seq = seq + 1
  if ARGV[i] == '' then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '0-' .. seq, 'd', ARGV[i + 1])
  else
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '0-' .. seq, 'd', ARGV[i + 1], 'e', ARGV[i])
  end
end
if ARGV[6] ~= '' then redis.call('APPEND', KEYS[4], ARGV[6]) end
if ARGV[5] == '1' then redis.call('HSET', KEYS[2], 'final', '1') end
for i = 1, 4 do
  if i ~= 3 then redis.call('EXPIRE', KEYS[i], ARGV[3]) end
end
return seq
"""

# KEYS: lease, meta. ARGV: token, lease ms. 1 when the lease is (again) this process's.
RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'state') ~= 'open' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: lease, meta. ARGV: token, lease ms. 1 for the one process that takes the stream over.
CLAIM = """
if redis.call('HGET', KEYS[2], 'state') ~= 'open' then return 0 end
if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 1 end
return 0
"""

# KEYS: lease. ARGV: token.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: events, meta, lease, tokens. ARGV: token, retention s. Marks the stream closed, adds the
# closing sentinel `1-0` (after every event: a blocked reader wakes and knows) and ends the lease.
CLOSE = """
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'state') ~= 'closed' then
  redis.call('HSET', KEYS[2], 'state', 'closed')
  redis.call('XADD', KEYS[1], '1-0', 'closed', '1')
end
redis.call('DEL', KEYS[3])
for i = 1, 4 do
  if i ~= 3 then redis.call('EXPIRE', KEYS[i], ARGV[2]) end
end
return 1
"""
