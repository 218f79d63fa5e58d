-- PUT 1 KiB values. KV_OFFSET set: sequential fresh keys s<OFFSET+i> (filling a store);
-- otherwise random keys among KV_KEYS (default 100000), like redis-benchmark -r.
wrk.method = "PUT"
wrk.body = string.rep("v", 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
local offset = os.getenv("KV_OFFSET")
local keys = tonumber(os.getenv("KV_KEYS") or "100000")
local ttl = os.getenv("KV_TTL_MS")
local suffix = ttl and ("?ttl_ms=" .. ttl) or ""
local i = 0
request = function()
  i = i + 1
  local k = offset and (tonumber(offset) + i) or math.random(0, keys - 1)
  return wrk.format(nil, "/v1/kv/s" .. k .. suffix)
end
