-- POST and count 200 responses across wrk's threads: the acknowledged increments.
wrk.method = "POST"
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  acked = 0
  failed = 0
end
function response(status, headers, body)
  if status == 200 then
    acked = acked + 1
  else
    failed = failed + 1
  end
end
function done(summary, latency, requests)
  local a, f = 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("acked")
    f = f + t:get("failed")
  end
  io.write(string.format("ACKED %d FAILED %d\n", a, f))
end
