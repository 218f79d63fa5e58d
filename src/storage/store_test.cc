#include "storage/store.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "common/test_dir.h"

namespace edgestate::storage {
namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = FreshTestDir(); }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

crdt::PnCounter Counter(int64_t v) {
  crdt::PnCounter c;
  EXPECT_TRUE(c.Add("iad", v, 123).ok());
  return c;
}

TEST_F(StoreTest, CodecRoundTrips) {
  crdt::PnCounter c = Counter(5);
  ASSERT_TRUE(c.Add("lhr", -9, 456).ok());
  StatusOr<crdt::PnCounter> back = DecodeCounter(EncodeCounter(c));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, c);
  EXPECT_EQ(back->Value(), -4);
}

TEST_F(StoreTest, DecodeRejectsGarbageWithoutCrashing) {
  std::mt19937 rng(7);
  int rejected = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string junk(rng() % 64, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng());
    if (!DecodeCounter(junk).ok()) ++rejected;
  }
  EXPECT_GT(rejected, 0);
  EXPECT_FALSE(DecodeCounter("\xff\xff\xff").ok());
}

TEST_F(StoreTest, WritesSurviveReopen) {
  {
    auto store = Store::Open(dir_.string());
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    rocksdb::WriteBatch wb;
    wb.Put(CounterKey("a"), EncodeCounter(Counter(1)));
    wb.Put(CounterKey("b"), EncodeCounter(Counter(2)));
    wb.Put(MetaKey("probe"), "x");
    ASSERT_TRUE((*store)->Write(&wb, /*sync=*/true).ok());
  }
  auto store = Store::Open(dir_.string());
  ASSERT_TRUE(store.ok());
  std::vector<std::pair<std::string, int64_t>> seen;
  Status st = (*store)->ForEachCounter([&](std::string_view name, std::string_view bytes) {
    auto c = DecodeCounter(bytes);
    if (!c.ok()) return c.status();
    seen.emplace_back(std::string(name), c->Value());
    return Status::Ok();
  });
  ASSERT_TRUE(st.ok());
  ASSERT_EQ(seen.size(), 2u);  // Meta keys are not counters.
  EXPECT_EQ(seen[0], (std::pair<std::string, int64_t>{"a", 1}));
  EXPECT_EQ(seen[1], (std::pair<std::string, int64_t>{"b", 2}));
  EXPECT_EQ((*store)->GetCounter("zzz").status().code(), StatusCode::kNotFound);
}

TEST_F(StoreTest, SecondOpenOfSameDirIsRefused) {
  auto a = Store::Open(dir_.string());
  ASSERT_TRUE(a.ok());
  auto b = Store::Open(dir_.string());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kUnavailable);
}

TEST_F(StoreTest, UnusableDirectoryIsAnError) {
  std::filesystem::create_directories(dir_);
  std::filesystem::path file = dir_ / "file";
  { std::ofstream(file) << "x"; }
  auto s = Store::Open((file / "sub").string());
  ASSERT_FALSE(s.ok());
}

}  // namespace
}  // namespace edgestate::storage
