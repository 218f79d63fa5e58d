// OriginClient: fetches cache misses from the origin server (--cache-origin URL), one request
// per key at a time (single flight), with a deadline and a size limit (docs/cache.md).
//
// Fetch(key) GETs base URL + "/" + percent-encoded key over HTTP/1.1 (with a Via header naming
// the region), one connection per fetch. Results: OK with the response (status 200 only);
// NotFound when the origin answered 404; DeadlineExceeded when it did not answer completely
// within the timeout; Unavailable when it could not be reached, answered another status, sent
// more than max_body_bytes or malformed HTTP; Aborted: read the cache again (below).
//
// Single flight: every caller asking for a key while a fetch of it is in flight joins that
// fetch and gets its result; a slow origin holds only the callers waiting for its keys. A
// successful fetch stays open until its first caller calls Release (it stored the fill, or
// decided not to): callers arriving meanwhile are held, then get Aborted. For a short while
// after a stored fill's Release, a new Fetch of that key also gets Aborted at once (its caller
// missed just before the fill landed), unless it is a re-fetch after such a read. So a key is
// fetched once per region while its fill is being written. A purge (Invalidate) detaches the
// flights of the keys it covers: misses after it never join a fetch that began before it.
//
// Thread-safety: Fetch may be called from any thread; callbacks run on the client's own I/O
// thread and must not block. The destructor fails every fetch still in flight (Unavailable)
// and joins the thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/metrics.h"
#include "common/status.h"

namespace edgestate::http {

struct OriginResponse {
  std::string body;
  std::string content_type;   // Empty when the origin sent none.
  std::string cache_control;  // The Cache-Control header, or empty.
  uint64_t flight = 0;        // The fetch that produced it: what its first caller Releases.
};

struct OriginOptions {
  std::string url;  // "http://host[:port][/base]".
  // Named in each request's Via header ("1.1 edgestate-REGION"), so an origin can tell the
  // regions apart; empty: "1.1 edgestate".
  std::string region;
  std::chrono::milliseconds timeout{5000};
  size_t max_body_bytes = 1 << 20;
};

struct OriginUrl {
  std::string host;
  std::string port = "80";
  std::string base_path;  // Without a trailing slash; may be empty.
};
// Parses an origin URL. InvalidArgument for anything but http://host[:port][/path] (https is
// not supported yet: put a local proxy in front of an https origin).
StatusOr<OriginUrl> ParseOriginUrl(std::string_view url);

// Whether and for how long a fetched response is cached, from its Cache-Control: no-store or
// private: not stored; else s-maxage, then max-age (seconds; 0 is not stored; capped at the
// 30-day TTL limit); else `default_ttl_ms`.
struct CachePolicy {
  bool store = false;
  int64_t ttl_ms = 0;
};
CachePolicy PolicyFor(std::string_view cache_control, int64_t default_ttl_ms);

// Percent-encodes everything but unreserved characters (RFC 3986), and the dots of "." and
// "..", so a key is never a dot segment of the origin's path.
std::string PercentEncode(std::string_view s);

class OriginClient {
 public:
  // `first` is true for the one caller whose miss started the fetch (it stores the fill).
  using Callback = std::function<void(const StatusOr<OriginResponse>&, bool first)>;

  // InvalidArgument for a bad URL. `metrics` must outlive the client.
  static StatusOr<std::unique_ptr<OriginClient>> Create(OriginOptions options,
                                                        MetricsRegistry* metrics);
  ~OriginClient();

  // `refetch`: the caller read the cache again after an Aborted and missed (the fill was
  // refused or purged): fetch, whatever was stored lately.
  void Fetch(std::string key, bool refetch, Callback done);
  // Ends a flight after an OK result (OriginResponse::flight): the caller that got first=true
  // calls it exactly once, after storing the fill (`stored`) or deciding not to. Callers held
  // since get Aborted.
  void Release(uint64_t flight, bool stored);
  // A purge of `pattern` ("=key" or "*prefix", as purge records name it) is being applied:
  // fetches of the keys it covers take no new callers, so a miss after the purge fetches afresh
  // instead of joining a fetch that began before it. Call before the purge becomes visible.
  void Invalidate(std::string pattern);

 private:
  struct Impl;
  explicit OriginClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace edgestate::http
