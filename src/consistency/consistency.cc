#include "consistency/consistency.h"

#include <charconv>
#include <string>

namespace edgestate::consistency {
namespace {

constexpr std::string_view kAllowed = "local, bounded, session or strong";

std::string_view Trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return {};
  size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

StatusOr<int64_t> ParseMillis(std::string_view v) {
  int64_t m = -1;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), m);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size() || m < 0 ||
      m > kMaxStalenessLimitMs) {
    return Status::InvalidArgument(
        "max_staleness_ms must be an integer number of milliseconds in 0.." +
        std::to_string(kMaxStalenessLimitMs));
  }
  return m;
}

// What one source (the query, or the header) says: a level and an M, each optional.
struct Named {
  std::optional<Level> level;
  std::optional<int64_t> max_staleness_ms;
};

// Stores a parsed value in *slot; a second, different value for the same name is an error.
template <typename T>
Status SetOnce(std::optional<T>* slot, StatusOr<T> parsed, std::string_view name) {
  if (!parsed.ok()) return parsed.status();
  if (*slot && **slot != *parsed) {
    return Status::InvalidArgument(std::string(name) + " is given twice with different values");
  }
  *slot = *parsed;
  return Status::Ok();
}

Status Set(std::optional<Level>* slot, std::string_view value) {
  return SetOnce(slot, ParseLevel(value), "consistency");
}

Status SetMillis(std::optional<int64_t>* slot, std::string_view value) {
  return SetOnce(slot, ParseMillis(value), "max_staleness_ms");
}

StatusOr<Named> FromQuery(std::string_view target) {
  Named n;
  size_t q = target.find('?');
  if (q == std::string_view::npos) return n;
  std::string_view query = target.substr(q + 1);
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    size_t eq = pair.find('=');
    std::string_view key = pair.substr(0, eq);
    std::string_view value =
        eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    if (key == "consistency") {
      if (Status s = Set(&n.level, value); !s.ok()) return s;
    } else if (key == "max_staleness_ms") {
      if (Status s = SetMillis(&n.max_staleness_ms, value); !s.ok()) return s;
    }  // Other parameters belong to someone else.
  }
  return n;
}

StatusOr<Named> FromHeader(std::string_view header) {
  Named n;
  if (Trim(header).empty()) return n;
  size_t semi = header.find(';');
  if (Status s = Set(&n.level, Trim(header.substr(0, semi))); !s.ok()) return s;
  while (semi != std::string_view::npos) {
    header = header.substr(semi + 1);
    semi = header.find(';');
    std::string_view param = Trim(header.substr(0, semi));
    size_t eq = param.find('=');
    if (eq == std::string_view::npos || Trim(param.substr(0, eq)) != "max_staleness_ms") {
      return Status::InvalidArgument(
          "Edgestate-Consistency takes one parameter, max_staleness_ms=M (with bounded)");
    }
    if (Status s = SetMillis(&n.max_staleness_ms, Trim(param.substr(eq + 1))); !s.ok()) return s;
  }
  return n;
}

}  // namespace

std::string_view LevelName(Level level) {
  switch (level) {
    case Level::kLocal:
      return "local";
    case Level::kBounded:
      return "bounded";
    case Level::kSession:
      return "session";
    case Level::kStrong:
      return "strong";
  }
  return "local";
}

StatusOr<Level> ParseLevel(std::string_view name) {
  for (Level l : {Level::kLocal, Level::kBounded, Level::kSession, Level::kStrong}) {
    if (name == LevelName(l)) return l;
  }
  std::string shown(name.substr(0, 64));
  for (char& c : shown) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  }
  return Status::InvalidArgument("unknown consistency level \"" + shown +
                                 "\"; allowed: " + std::string(kAllowed));
}

StatusOr<Requested> ParseRequested(std::string_view target, std::string_view header,
                                   Level default_level) {
  auto q = FromQuery(target);
  if (!q.ok()) return q.status();
  auto h = FromHeader(header);
  if (!h.ok()) return h.status();
  if (q->level && h->level && *q->level != *h->level) {
    return Status::InvalidArgument(
        "the consistency query parameter and the Edgestate-Consistency header disagree");
  }
  if (q->max_staleness_ms && h->max_staleness_ms && *q->max_staleness_ms != *h->max_staleness_ms) {
    return Status::InvalidArgument("max_staleness_ms is given twice with different values");
  }
  Requested r;
  std::optional<Level> named = q->level ? q->level : h->level;
  r.level = named.value_or(default_level);
  std::optional<int64_t> m = q->max_staleness_ms ? q->max_staleness_ms : h->max_staleness_ms;
  if (r.level == Level::kBounded) {
    if (!m) {
      return Status::InvalidArgument(
          "consistency=bounded needs max_staleness_ms=M (milliseconds, 0.." +
          std::to_string(kMaxStalenessLimitMs) + ")");
    }
    r.max_staleness_ms = m;
  } else if (m) {
    return Status::InvalidArgument("max_staleness_ms goes only with consistency=bounded");
  }
  return r;
}

}  // namespace edgestate::consistency
