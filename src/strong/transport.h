// Transport: request/response messages between regions, for the strong layer, without it
// depending on replication (the Replicator implements it over the authenticated peer links).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "common/status.h"

namespace edgestate::strong {

class Transport {
 public:
  virtual ~Transport() = default;
  // `sent` is false when the request certainly never left (no established link to the
  // region, or the peer is too old to take calls): retrying it elsewhere cannot apply it twice.
  using ReplyCallback = std::function<void(StatusOr<std::string> reply, bool sent)>;
  using Reply = std::function<void(std::string payload)>;
  // (calling region, payload, reply). `reply` may be called once, from any thread, later.
  using Handler = std::function<void(const std::string& from, std::string payload, Reply reply)>;

  // Sends `payload` to `region`. `done` is called at most once, from any thread: with the reply,
  // or Unavailable when the link is down or closes before the reply; a call racing the
  // transport's shutdown may get no answer at all. No timeout of its own: the caller bounds its
  // wait. Thread-safe; never blocks.
  virtual void Call(const std::string& region, std::string payload, ReplyCallback done) = 0;
  // Receives the calls of every peer. Set once, before the transport starts.
  virtual void SetCallHandler(Handler handler) = 0;
  // The smallest round trip measured to `region` while its link is established and the peer is
  // heard from; nullopt when the link is down, the peer has been silent for a while (a stopped
  // process), or the region is not a peer. Thread-safe.
  virtual std::optional<int64_t> LinkRttUs(const std::string& region) const = 0;
};

}  // namespace edgestate::strong
