-- PUT 1 KiB values (256 different random ones, so they compress like real data). KV_OFFSET
-- set: sequential fresh keys s<OFFSET+i> (filling a store); otherwise random keys among KV_KEYS
-- (default 100000), like redis-benchmark -r.
wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/octet-stream"
local offset = os.getenv("KV_OFFSET")
local keys = tonumber(os.getenv("KV_KEYS") or "100000")
local ttl = os.getenv("KV_TTL_MS")
local suffix = ttl and ("?ttl_ms=" .. ttl) or ""
local bodies = {}
local i = 0

init = function(args)
  for b = 1, 256 do
    local t = {}
    for c = 1, 1024 do t[c] = string.char(math.random(33, 126)) end
    bodies[b] = table.concat(t)
  end
end

request = function()
  i = i + 1
  local k = offset and (tonumber(offset) + i) or math.random(0, keys - 1)
  return wrk.format(nil, "/v1/kv/s" .. k .. suffix, nil, bodies[i % 256 + 1])
end
