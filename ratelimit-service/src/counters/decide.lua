-- Rate-limit decisions for one or more requests, each atomic: a request's
-- counters are all decided, and written only if none that may block is
-- over its limit; requests are decided one after another, in order.
-- KEYS: the counters, a request's consecutive. ARGV, eight per key:
-- algorithm (0 fixed window, 1 sliding window, 2 token bucket), requests,
-- period_ms, burst, hits, shadow (1: counts, never blocks), lease (how many
-- more hits of the counter the caller would like to take now and spend
-- itself; 0 for none), request (the same for the counters of one request).
-- Time comes from Redis (TIME), so gateways with skewed clocks agree, and
-- every key has a TTL (set when a window counter starts a window, and on
-- every token bucket write). Returns five integers per key: allowed (0/1),
-- remaining, reset_ms, limit, leased. Mirrors src/algorithm.rs; a lease is
-- at most an eighth of what the window (or the bucket) has left after this
-- request, and only granted if the whole request is admitted (see
-- src/store/lease.rs).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local results = {}
local first = 1
while first <= #KEYS do
  local last = first
  while last < #KEYS and ARGV[last * 8 + 8] == ARGV[first * 8] do last = last + 1 end
  local writes, ttls = {}, {}
  local admitted = true
  for k = first, last do
    local base = (k - 1) * 8
    local alg = tonumber(ARGV[base + 1])
    local requests = tonumber(ARGV[base + 2])
    local period = tonumber(ARGV[base + 3])
    local burst = tonumber(ARGV[base + 4])
    local hits = tonumber(ARGV[base + 5])
    local shadow = ARGV[base + 6] == '1'
    local lease = tonumber(ARGV[base + 7])
    local allowed, remaining, reset, limit, state, ttl
    local leased = 0
    if alg == 2 then
      local capacity = math.max(burst, 1)
      local rate = requests / math.max(period, 1)
      local s = redis.call('HMGET', KEYS[k], 't', 'a')
      local tokens = capacity
      if s[1] and s[2] then
        tokens = math.min(capacity, tonumber(s[1]) + math.max(now - tonumber(s[2]), 0) * rate)
      end
      allowed = tokens >= hits
      local left = tokens
      if allowed then
        leased = math.min(lease, math.floor((tokens - hits) / 8))
        left = tokens - hits - leased
        reset = math.ceil((capacity - left) / rate)
      else
        reset = math.ceil((hits - tokens) / rate)
      end
      remaining = math.floor(left)
      limit = capacity
      state = {'t', string.format('%.6f', left), 'a', string.format('%d', now)}
      ttl = math.floor(period * capacity / math.max(requests, 1)) + 1000
    else
      local window = now - (now % period)
      local s = redis.call('HMGET', KEYS[k], 'w', 'c', 'p')
      local current, previous = 0, 0
      local same_window = false
      if s[1] and s[2] and s[3] then
        local w = tonumber(s[1])
        if w == window then
          same_window = true
          current = tonumber(s[2])
          previous = tonumber(s[3])
        elseif w + period == window then
          previous = tonumber(s[2])
        end
      end
      local used
      if alg == 1 then
        local estimated = previous * ((period - (now - window)) / period) + current
        allowed = estimated + hits <= requests
        used = estimated
        if allowed then
          leased = math.min(lease, math.floor((requests - estimated - hits) / 8))
          used = estimated + hits + leased
        end
        remaining = math.max(math.floor(requests - used), 0)
        ttl = 2 * period
      else
        allowed = current + hits <= requests
        used = current
        if allowed then
          leased = math.min(lease, math.floor((requests - current - hits) / 8))
          used = current + hits + leased
        end
        remaining = math.max(requests - used, 0)
        ttl = period
      end
      reset = window + period - now
      limit = requests
      if same_window then
        -- The key got its TTL with this window's first write, and HSET
        -- keeps it: only the count changes.
        state = {'c', string.format('%d', current + hits + leased)}
        ttl = nil
      else
        state = {'w', string.format('%d', window), 'c', string.format('%d', current + hits + leased),
                 'p', string.format('%d', previous)}
      end
    end
    if not allowed and not shadow then admitted = false end
    writes[k] = state
    ttls[k] = ttl
    local r = (k - 1) * 5
    results[r + 1] = allowed and 1 or 0
    results[r + 2] = remaining
    results[r + 3] = reset
    results[r + 4] = limit
    results[r + 5] = leased
  end
  if admitted then
    for k = first, last do
      redis.call('HSET', KEYS[k], unpack(writes[k]))
      if ttls[k] then redis.call('PEXPIRE', KEYS[k], ttls[k]) end
    end
  else
    -- Nothing is written: no lease either.
    for k = first, last do results[k * 5] = 0 end
  end
  first = last + 1
end
return results
