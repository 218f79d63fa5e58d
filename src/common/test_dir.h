// Test support: a scratch directory per test. Include from *_test.cc files only.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace edgestate {

// An empty directory under the system's temporary directory, named after the running test and
// this process (so parallel test binaries never share one). Any leftover of an earlier run is
// removed first. The caller removes it (std::filesystem::remove_all) when done.
inline std::filesystem::path FreshTestDir() {
  const ::testing::TestInfo* t = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("edgestate-" + std::string(t->test_suite_name()) +
                                                "." + t->name() + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace edgestate
