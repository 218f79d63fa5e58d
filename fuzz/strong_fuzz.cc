// Strong-consistency messages from a peer (what arrives in a Call frame after the TLS and HMAC
// handshakes): the first byte picks the calling region (a fellow voter, a non-voter, or an
// unknown one), the rest is a strong Request, handled by the StrongService of the fuzz world's
// node "iad", the leading voter of iad, lhr, fra. The other two voters are in-process acceptors
// that answer every prepare and accept (OnPrepare/OnAccept), so forwarded operations on counters
// and keys run whole rounds: the change functions, conditional key writes, and storing chosen
// values. Checks: every request is answered within 10 s, and every answer parses as a Reply.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "fuzz_world.h"
#include "strong/caspaxos.h"
#include "strong/strong_service.h"

namespace edgestate::fuzz {
namespace {

// Voters lhr and fra answer at once from memory; every other region is unreachable.
class Acceptors : public strong::Transport {
 public:
  void Call(const std::string& region, std::string payload, ReplyCallback done) override {
    if (region != "lhr" && region != "fra") return done(Status::Unavailable("no link"), false);
    strong::pb::Request req;
    if (!req.ParseFromString(payload)) return done(Status::Unavailable("malformed"), true);
    std::lock_guard lock(mu_);
    bool changed = false;
    strong::pb::Reply r;
    if (req.has_prepare()) {
      r = strong::OnPrepare(&records_[region + "/" + req.prepare().key()], req.prepare().ballot(),
                            &changed);
    } else if (req.has_accept()) {
      const strong::pb::Accept& a = req.accept();
      r = strong::OnAccept(&records_[region + "/" + a.key()], a.ballot(), a.value(), a.next(),
                           &changed);
    } else {
      return done(Status::Unavailable("not an acceptor request"), true);
    }
    if (records_.size() > 4096) records_.clear();  // Bounded: a fresh start is a new history.
    done(r.SerializeAsString(), true);
  }
  void SetCallHandler(Handler h) override { handler = std::move(h); }
  std::optional<int64_t> LinkRttUs(const std::string& region) const override {
    if (region == "lhr") return 1000;
    if (region == "fra") return 2000;
    return std::nullopt;
  }

  Handler handler;

 private:
  std::mutex mu_;
  std::map<std::string, strong::pb::AcceptorRecord> records_;
};

struct StrongWorld {
  Acceptors transport;
  std::unique_ptr<strong::StrongService> service;
};

StrongWorld* the_strong_world = nullptr;

// Closed at exit before the World it runs on (its exit handler is registered later).
StrongWorld& GetStrongWorld() {
  if (the_strong_world == nullptr) {
    World& w = GetWorld();
    auto* s = new StrongWorld();
    strong::StrongOptions o;
    o.region = "iad";
    o.voters = {"iad", "lhr", "fra"};
    o.timeout = std::chrono::milliseconds(200);
    auto service =
        strong::StrongService::Open(o, w.store.get(), w.keyspace.get(), &s->transport, &w.metrics);
    if (!service.ok()) {
      std::fprintf(stderr, "strong fuzz world: %s\n", service.status().ToString().c_str());
      std::abort();
    }
    s->service = std::move(service).value();
    the_strong_world = s;
    std::atexit([] {
      delete the_strong_world;
      the_strong_world = nullptr;
    });
  }
  return *the_strong_world;
}

}  // namespace
}  // namespace edgestate::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  edgestate::fuzz::StrongWorld& sw = edgestate::fuzz::GetStrongWorld();
  static const char* const kFrom[] = {"lhr", "fra", "syd", "iad"};
  std::string from = kFrom[data[0] % 4];
  std::string payload(reinterpret_cast<const char*>(data + 1), size - 1);
  auto answered = std::make_shared<std::promise<std::string>>();
  auto once = std::make_shared<std::once_flag>();
  sw.transport.handler(from, std::move(payload), [answered, once](std::string reply) {
    std::call_once(*once, [&] { answered->set_value(std::move(reply)); });
  });
  auto fut = answered->get_future();
  if (fut.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    std::fprintf(stderr, "a strong request was not answered within 10 s\n");
    std::abort();
  }
  edgestate::strong::pb::Reply reply;
  if (!reply.ParseFromString(fut.get())) {
    std::fprintf(stderr, "a strong answer does not parse\n");
    std::abort();
  }
  return 0;
}
