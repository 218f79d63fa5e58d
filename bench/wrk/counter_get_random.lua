-- GET random counters counter-0..counter-<COUNTERS-1> (bench/startup_bench.py).
local counters = tonumber(os.getenv("COUNTERS") or "1")
request = function()
  return wrk.format("GET", "/v1/counters/counter-" .. math.random(0, counters - 1))
end
