#include "common/strings.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <ctime>

namespace edgestate {
namespace {

TEST(StringsTest, Iso8601) {
  EXPECT_EQ(FormatIso8601Millis(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(FormatIso8601Millis(1795774655123), "2026-11-27T10:17:35.123Z");
  EXPECT_EQ(FormatIso8601Millis(951782400000), "2000-02-29T00:00:00.000Z");  // Leap day.
  EXPECT_EQ(FormatIso8601Millis(-1), "1969-12-31T23:59:59.999Z");
  EXPECT_EQ(FormatIso8601Millis(INT64_MAX), "9999-12-31T23:59:59.999Z");
  EXPECT_EQ(FormatIso8601Millis(INT64_MIN), "0000-01-01T00:00:00.000Z");
  std::string s = "x";
  AppendIso8601Millis(86400000, &s);
  EXPECT_EQ(s, "x1970-01-02T00:00:00.000Z");
}

TEST(StringsTest, Iso8601ParsesWhatItFormats) {
  for (int64_t ms : {int64_t{0}, int64_t{1795774655123}, int64_t{951782400000}, int64_t{-1},
                     int64_t{253402300799999}, int64_t{-62167219200000}}) {
    EXPECT_EQ(ParseIso8601Millis(FormatIso8601Millis(ms)), ms) << ms;
  }
  for (std::string_view bad :
       {"", "2026-11-27T10:17:35.123", "2026-11-27T10:17:35.123Z ", "2026-11-27 10:17:35.123Z",
        "2026-13-01T00:00:00.000Z", "2026-02-29T00:00:00.000Z", "2026-11-27T24:00:00.000Z",
        "2026-11-27T10:60:00.000Z", "2026-11-27T10:17:60.000Z", "+026-11-27T10:17:35.123Z",
        "2026-11-27T10:17:35.12xZ"}) {
    EXPECT_EQ(ParseIso8601Millis(bad), std::nullopt) << bad;
  }
}

TEST(StringsTest, HttpDate) {
  EXPECT_EQ(FormatHttpDate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
  EXPECT_EQ(FormatHttpDate(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");  // RFC 9110's example.
  EXPECT_EQ(FormatHttpDate(1795786200), "Fri, 27 Nov 2026 13:30:00 GMT");
  EXPECT_EQ(FormatHttpDate(951782400), "Tue, 29 Feb 2000 00:00:00 GMT");
  EXPECT_EQ(FormatHttpDate(-5), "Thu, 01 Jan 1970 00:00:00 GMT");
}

TEST(StringsTest, Iso8601AgreesWithGmtime) {
  // Every day boundary and a spread of times of day over 1900..2100.
  for (int64_t ms = -2208988800000; ms < 4102444800000; ms += 86400000LL * 7 + 3723001) {
    time_t secs = static_cast<time_t>(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char expect[96];
    snprintf(expect, sizeof expect, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             static_cast<int>(ms - static_cast<int64_t>(secs) * 1000));
    ASSERT_EQ(FormatIso8601Millis(ms), expect) << ms;
  }
}

TEST(StringsTest, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals("s3cret", "s3cret"));
  EXPECT_FALSE(ConstantTimeEquals("s3cret", "s3cre"));
  EXPECT_FALSE(ConstantTimeEquals("s3cret", "s3cretX"));
  EXPECT_FALSE(ConstantTimeEquals("s3cret", "S3cret"));
  EXPECT_FALSE(ConstantTimeEquals("s3cret", ""));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

TEST(StringsTest, SplitList) {
  EXPECT_EQ(SplitList("a,b,,c"), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(SplitList("").empty());
  EXPECT_EQ(SplitList("x"), (std::vector<std::string>{"x"}));
}

TEST(StringsTest, Utf8) {
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));              // Truncated.
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // Overlong '/'.
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // Surrogate.
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // > U+10FFFF.
  EXPECT_FALSE(IsValidUtf8("\xff"));
}

}  // namespace
}  // namespace edgestate
