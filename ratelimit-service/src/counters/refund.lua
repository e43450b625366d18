-- Gives back hits a request took from counters on one Redis Cluster slot
-- when a counter on another slot refused it (see redis.rs). KEYS and ARGV
-- as in decide.lua, for one request; hits are the hits taken, leased ones
-- included. Window counters are only decremented while still in the window
-- the hits were counted in; buckets get their tokens back, capped.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  local base = (i - 1) * 8
  local alg = tonumber(ARGV[base + 1])
  local requests = tonumber(ARGV[base + 2])
  local period = tonumber(ARGV[base + 3])
  local burst = tonumber(ARGV[base + 4])
  local hits = tonumber(ARGV[base + 5])
  if alg == 2 then
    local capacity = math.max(burst, 1)
    local tokens = tonumber(redis.call('HGET', KEYS[i], 't') or '')
    if tokens then
      redis.call('HSET', KEYS[i], 't', string.format('%.6f', math.min(capacity, tokens + hits)))
    end
  else
    local window = now - (now % period)
    local s = redis.call('HMGET', KEYS[i], 'w', 'c')
    if s[1] and s[2] and tonumber(s[1]) == window then
      redis.call('HSET', KEYS[i], 'c', string.format('%d', math.max(tonumber(s[2]) - hits, 0)))
    end
  end
end
return {}
