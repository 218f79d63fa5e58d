// WanEmulator: a user-space wide-area network for one machine (kernel netem is not available
// here). Every directed link (from -> to) is a TCP proxy: a connection that region `from`
// opens to the link's port is relayed to `to`'s target address, and every chunk is held for
// the link's one-way delay (half the model's round trip) in each direction, plus optional
// jitter that never reorders bytes (release times never decrease).
//
// Cut(from, to) makes the link a black hole, like a partition: bytes in flight and new
// connection attempts are held (not delivered, not reset) until Heal, which releases them.
// Isolate(r) cuts every link into and out of r. Bytes are counted per link.
//
// Threading: one I/O thread owns all sockets. Every public method is thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace edgestate::netem {

struct LinkSpec {
  std::string from;
  std::string to;
  double one_way_ms = 0;
  double jitter_ms = 0;      // Uniform extra delay in [0, jitter_ms], order preserved.
  uint16_t listen_port = 0;  // 0: pick a free port.
  std::string target_host = "127.0.0.1";
  uint16_t target_port = 0;  // May be set later with SetTarget (before traffic flows).
};

struct LinkStats {
  std::string from, to;
  uint16_t port = 0;
  bool cut = false;
  double one_way_ms = 0;
  uint64_t bytes_forward = 0;   // from -> to
  uint64_t bytes_backward = 0;  // to -> from, on connections opened by `from`
  uint64_t connections = 0;     // accepted so far
  uint64_t open_connections = 0;
  // How late chunks left compared with their intended release time (read time + one-way
  // delay + jitter), over the last 4096 chunks: the emulator's own error. 0 when no traffic.
  double late_p50_ms = 0;
  double late_p99_ms = 0;
  uint64_t late_samples = 0;
};

class WanEmulator {
 public:
  explicit WanEmulator(std::string listen_host = "127.0.0.1");
  ~WanEmulator();  // Stop().

  // Binds the link's listener. InvalidArgument for a duplicate link, Unavailable when the port
  // cannot be bound. Links may be added before or after Start.
  Status AddLink(const LinkSpec& spec);
  Status SetTarget(const std::string& from, const std::string& to, const std::string& host,
                   uint16_t port);
  // The port a node of `from` connects to in order to reach `to`; 0 when there is no such link.
  uint16_t LinkPort(const std::string& from, const std::string& to) const;

  Status Start();
  void Stop();

  // NotFound for an unknown link or region.
  Status Cut(const std::string& from, const std::string& to);
  Status Heal(const std::string& from, const std::string& to);
  Status Isolate(const std::string& region);
  Status Rejoin(const std::string& region);

  std::vector<LinkStats> Stats() const;

  struct Impl;

 private:
  // Applies `op` to every link into or out of `region`; NotFound when there is none.
  Status ForEachLinkOf(const std::string& region,
                       Status (WanEmulator::*op)(const std::string&, const std::string&));

  std::shared_ptr<Impl> impl_;
};

// Builds the full mesh for `regions` from `model`: one link per ordered pair, one-way delay
// rtt/2. REQUIRES: every region is in the model.
class RttModel;
Status AddMesh(WanEmulator* wan, const RttModel& model, const std::vector<std::string>& regions,
               double jitter_ms);

}  // namespace edgestate::netem
