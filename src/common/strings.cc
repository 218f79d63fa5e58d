#include "common/strings.h"

#include <fmt/compile.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <iterator>

namespace edgestate {

void AppendIso8601Millis(int64_t unix_ms, std::string* out) {
  namespace chrono = std::chrono;
  // 0000-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z: four-digit years, and no overflow in
  // the calendar arithmetic for any int64 input.
  constexpr int64_t kMin = -62167219200000;
  constexpr int64_t kMax = 253402300799999;
  const chrono::sys_time<chrono::milliseconds> t{
      chrono::milliseconds(std::clamp(unix_ms, kMin, kMax))};
  const auto day = chrono::floor<chrono::days>(t);
  const chrono::year_month_day ymd{day};
  const chrono::hh_mm_ss hms{t - day};
  fmt::format_to(std::back_inserter(*out),
                 FMT_COMPILE("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z"),
                 static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                 static_cast<unsigned>(ymd.day()), hms.hours().count(), hms.minutes().count(),
                 hms.seconds().count(), hms.subseconds().count());
}

std::string FormatHttpDate(int64_t unix_seconds) {
  namespace chrono = std::chrono;
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  constexpr int64_t kMin = 0;             // 1970-01-01T00:00:00Z
  constexpr int64_t kMax = 253402300799;  // 9999-12-31T23:59:59Z
  const chrono::sys_seconds t{chrono::seconds(std::clamp(unix_seconds, kMin, kMax))};
  const auto day = chrono::floor<chrono::days>(t);
  const chrono::year_month_day ymd{day};
  const chrono::hh_mm_ss hms{t - day};
  return fmt::format(FMT_COMPILE("{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT"),
                     kDays[chrono::weekday(day).c_encoding()], static_cast<unsigned>(ymd.day()),
                     kMonths[static_cast<unsigned>(ymd.month()) - 1], static_cast<int>(ymd.year()),
                     hms.hours().count(), hms.minutes().count(), hms.seconds().count());
}

std::optional<int64_t> ParseIso8601Millis(std::string_view s) {
  namespace chrono = std::chrono;
  // Positions of the digits of "YYYY-MM-DDTHH:MM:SS.mmmZ" and the separators between them.
  constexpr std::string_view kShape = "dddd-dd-ddTdd:dd:dd.dddZ";
  if (s.size() != kShape.size()) return std::nullopt;
  for (size_t i = 0; i < s.size(); ++i) {
    const bool digit = s[i] >= '0' && s[i] <= '9';
    if (kShape[i] == 'd' ? !digit : s[i] != kShape[i]) return std::nullopt;
  }
  auto num = [s](size_t at, size_t len) {
    int v = 0;
    for (size_t i = at; i < at + len; ++i) v = v * 10 + (s[i] - '0');
    return v;
  };
  const chrono::year_month_day ymd{chrono::year(num(0, 4)),
                                   chrono::month(static_cast<unsigned>(num(5, 2))),
                                   chrono::day(static_cast<unsigned>(num(8, 2)))};
  const int h = num(11, 2), m = num(14, 2), sec = num(17, 2);
  if (!ymd.ok() || h > 23 || m > 59 || sec > 59) return std::nullopt;
  const auto day = chrono::sys_days(ymd).time_since_epoch();
  return chrono::duration_cast<chrono::milliseconds>(day).count() +
         ((int64_t{h} * 60 + m) * 60 + sec) * 1000 + num(20, 3);
}

std::string FormatIso8601Millis(int64_t unix_ms) {
  std::string out;
  AppendIso8601Millis(unix_ms, &out);
  return out;
}

bool ConstantTimeEquals(std::string_view secret, std::string_view candidate) {
  volatile unsigned char diff = secret.size() == candidate.size() ? 0 : 1;
  for (size_t i = 0; i < secret.size(); ++i) {
    unsigned char c = i < candidate.size() ? static_cast<unsigned char>(candidate[i]) : 0;
    diff = diff | (static_cast<unsigned char>(secret[i]) ^ c);
  }
  return diff == 0;
}

std::vector<std::string> SplitList(std::string_view s, char sep) {
  std::vector<std::string> out;
  while (!s.empty()) {
    size_t at = s.find(sep);
    if (at != 0) out.emplace_back(s.substr(0, at));
    s = at == std::string_view::npos ? std::string_view() : s.substr(at + 1);
  }
  return out;
}

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) {
      return false;  // Overlong.
    }
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

}  // namespace edgestate
