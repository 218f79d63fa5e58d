// Small string utilities shared by the layers above. All functions are pure and thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace edgestate {

// "2026-11-27T10:17:35.123Z" for a Unix time in milliseconds (UTC). Times outside the years
// 0000..9999 are clamped to the nearest end of that range. Thread-safe; takes no lock (unlike
// gmtime_r) and does not allocate beyond `out`'s growth.
std::string FormatIso8601Millis(int64_t unix_ms);
void AppendIso8601Millis(int64_t unix_ms, std::string* out);
// The inverse: exactly the form above ("YYYY-MM-DDTHH:MM:SS.mmmZ", a valid calendar date);
// nullopt for anything else.
std::optional<int64_t> ParseIso8601Millis(std::string_view s);

// The IMF-fixdate of RFC 9110 for an HTTP Date header: "Fri, 27 Nov 2026 13:45:00 GMT".
// Clamped to the years 1970..9999.
std::string FormatHttpDate(int64_t unix_seconds);

// Compares `candidate` with `secret` in time that depends only on secret.size(), so response
// timing does not reveal how long a matching prefix an attacker has guessed.
bool ConstantTimeEquals(std::string_view secret, std::string_view candidate);

// Splits "a,b,,c" at `sep` into {"a", "b", "c"} (empty items dropped).
std::vector<std::string> SplitList(std::string_view s, char sep = ',');

// True when `s` is well-formed UTF-8 (no overlongs, no surrogates, at most U+10FFFF).
bool IsValidUtf8(std::string_view s);

}  // namespace edgestate
