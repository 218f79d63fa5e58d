// `edgestate demo`: the article's eight regions on one machine. Starts one `edgestate serve`
// process per region, connects their replication links through the WAN emulator (one proxy
// per directed link, delayed by the RTT model), prints one line per region, and runs until
// SIGINT or SIGTERM, when it stops every process it started and exits 0.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace edgestate::demo {

struct DemoOptions {
  std::string edgestate_binary;  // The `edgestate` executable to start for each region.
  uint16_t base_port = 8080;     // Region i of `regions` serves clients on base_port + i.
  std::string data_dir = "./demo-data";
  std::vector<std::string> regions = {"iad", "sjc", "lhr", "fra", "nrt", "syd", "gru", "jnb"};
  std::string rtt_file;  // Empty: the model shipped in tools/netem/ (compiled in).
  int64_t replication_interval_ms = 100;
  double jitter_ms = 0;
  uint16_t control_port = 0;  // 0: base_port + 100.
  std::string listen = "127.0.0.1";
  // Extra arguments for every region's `edgestate serve` (validated by serve itself).
  std::vector<std::string> node_args;
  // Region -> wall-clock offset in ms for that region's node (EDGESTATE_CLOCK_OFFSET_MS): a
  // node with a skewed clock, for the clock check and the staleness bound.
  std::map<std::string, int64_t> clock_offsets_ms;
  // The strong voters (docs/strong.md) every node is started with. nullopt: lhr,fra,iad when
  // all three run, else none. Empty: none.
  std::optional<std::vector<std::string>> strong_voters;
};

// The voter list the demo passes to its nodes (see DemoOptions::strong_voters).
std::vector<std::string> DemoVoters(const DemoOptions& options);

// Validates the options (InvalidArgument: unknown region, bad model, port overflow).
Status ValidateDemoOptions(const DemoOptions& options);

// Runs until SIGINT/SIGTERM. REQUIRES: called from main before any other thread is started.
// Unavailable when a region's process or the emulator cannot start (everything started is
// stopped again).
Status RunDemo(const DemoOptions& options);

// `edgestate wan`: the WAN emulator alone, for placing other systems (for example the
// article's designs) behind the same emulated links. One link per ordered pair of `regions`;
// the link from A to B forwards to B's target.
struct WanOptions {
  std::vector<std::string> regions;
  std::vector<std::pair<std::string, std::string>> targets;  // region -> "host:port"
  std::string rtt_file;                                      // Empty: the shipped model.
  double jitter_ms = 0;
  uint16_t control_port = 0;  // 0: pick a free port.
};

// Prints "link FROM TO 127.0.0.1:PORT" per link and the control URL, then runs until
// SIGINT/SIGTERM. InvalidArgument for bad options. REQUIRES: called from main before any
// other thread is started.
Status RunWan(const WanOptions& options);

}  // namespace edgestate::demo
