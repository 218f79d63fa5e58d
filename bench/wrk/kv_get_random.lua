-- GET random keys s0..s<KV_KEYS-1> (reads spread over a store larger than the cache).
local keys = tonumber(os.getenv("KV_KEYS") or "100000")
request = function()
  return wrk.format("GET", "/v1/kv/s" .. math.random(0, keys - 1))
end
