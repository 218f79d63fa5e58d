// A TOML configuration file (`edgestate serve --config FILE`): resolving it must give a
// validated configuration or a clear InvalidArgument, never crash. The input is written to one
// scratch file per process.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "server/config.h"

namespace {

// Never destroyed, so the exit handler that removes the file can still read it.
const std::string& ConfigPath() {
  static const std::string* path = [] {
    auto* p = new std::string((std::filesystem::temp_directory_path() /
                               ("edgestate-config-fuzz-" + std::to_string(getpid()) + ".toml"))
                                  .string());
    std::atexit([] { std::filesystem::remove(ConfigPath()); });
    return p;
  }();
  return *path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    std::ofstream f(ConfigPath(), std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  edgestate::server::ServeFlags flags;
  flags.config_file = ConfigPath();
  auto cfg = edgestate::server::ResolveServeConfig(
      flags, [](const char*) -> std::optional<std::string> { return std::nullopt; });
  if (!cfg.ok() && cfg.status().code() != edgestate::StatusCode::kInvalidArgument) {
    std::fprintf(stderr, "config: not InvalidArgument: %s\n", cfg.status().ToString().c_str());
    std::abort();
  }
  return 0;
}
