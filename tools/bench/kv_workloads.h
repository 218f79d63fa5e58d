// edgebench's key workloads (docs/edgebench.md): sessions and the geo cache, on /v1/kv and
// /v1/cache, beside the counter workload of runner.h.
//
// session: each VU logs in (PUT of its own session key with a TTL), makes requests (GET, some
// touches that slide the TTL, some updates), logs out (DELETE) and checks one read after it.
// Every answer is checked against what the VU itself did (it is the key's only writer): a read
// after its own acknowledged delete, a value older than its own acknowledged write, a read
// served past the key's expiry, or its live session missing are violations. A session one of
// whose writes got no answer at all (it may still be applied later) is not checked further.
//
// cache: edgebench serves the origin itself (Config::origin_listen, counted per key and per
// region from each request's Via header); VUs GET Zipf-distributed keys through /v1/cache. It
// reports hit ratios, origin requests per key per region, and then times purges: a key cached
// in every region gets a new version at the origin and is purged at one region; the time until
// each region serves the new version is the purge's propagation. A body of the wrong key, or
// an old version served again after a region had the new one, is a violation.
//
// Both print a report, write Config::json_file when set, and return the exit code: 0, 1 when
// the run could not happen, 4 on a violation. Single-threaded (one io_context).
#pragma once

#include "bench/runner.h"

namespace edgestate::bench {

int RunSessionWorkload(Config config);
int RunCacheWorkload(Config config);

}  // namespace edgestate::bench
