#include "http/server.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_set>
#include <utility>  // Before Asio: Boost 1.74's awaitable.hpp needs std::exchange.
#include <vector>

#include "common/handoff.h"
#include "common/strings.h"
#include "env/clock.h"
#include "http/errors.h"
#include "http/wire.h"
#include "net/net.h"

namespace edgestate::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

namespace {

// Concrete executor types throughout: no type-erased executor copies on the hot path.
using Executor = asio::io_context::executor_type;
using Socket = asio::basic_stream_socket<tcp, Executor>;

class Connection;

// One I/O thread and everything it owns.
//
// Timeouts are enforced by a sweep, not by a timer per operation: each connection keeps the
// deadline of the operation it waits for, on the worker's coarse clock `now_ms`, and at every
// sweep (Impl::ScheduleSweep) the worker advances the clock and closes the connections past
// their deadline. A timeout therefore fires within one sweep interval of its nominal time, and the
// request path arms no timer.
struct Worker {
  std::unordered_set<Connection*> connections;  // Touched only on this worker's thread.
  bool draining = false;                        // Touched only on this worker's thread.
  int64_t now_ms = 0;                           // Steady clock, ms; on this worker's thread.
  int64_t date_second = -1;                     // Wall-clock second `date` was made for.
  std::string date;                             // "Date: <IMF-fixdate>\r\n", per sweep.
  asio::io_context ioc{1};                      // Destroyed before `connections`.
  // Work for requests answered late (writes, held reads): their answers, and then reading the
  // next request of their connections. RunDeferred runs at most kDeferredPerTurn of these per
  // turn of the I/O loop, so a group commit answering many writes at once cannot hold the reads
  // behind all of them. Destroyed before `ioc`. On this worker's thread.
  std::deque<std::function<void()>> deferred;
  bool deferred_posted = false;  // A RunDeferred is queued on `ioc`.
  // Work other threads hand to this one (answers, releases of connections), run in order by
  // RunInbox; see PostToWorker.
  std::mutex inbox_mu;
  std::vector<std::function<void()>> inbox;  // GUARDED_BY(inbox_mu)
  bool inbox_posted = false;                 // GUARDED_BY(inbox_mu); a RunInbox is on its way.
  std::optional<asio::steady_timer> sweep;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
  std::thread thread;
};

constexpr size_t kDeferredPerTurn = 8;

// Runs at most kDeferredPerTurn of w->deferred, and queues itself behind everything the I/O
// loop has ready for the rest: each turn of the loop then serves every ready read but only a
// few late answers and their connections' next requests.
void RunDeferred(Worker* w) {
  w->deferred_posted = false;
  for (size_t i = 0; i < kDeferredPerTurn && !w->deferred.empty(); ++i) {
    std::function<void()> task = std::move(w->deferred.front());
    w->deferred.pop_front();
    task();
  }
  if (!w->deferred.empty() && !w->deferred_posted) {
    w->deferred_posted = true;
    asio::post(w->ioc, [w] { RunDeferred(w); });
  }
}

// Queues `task` on w->deferred. On w's thread.
void Defer(Worker* w, std::function<void()> task) {
  w->deferred.push_back(std::move(task));
  if (!w->deferred_posted) {
    w->deferred_posted = true;
    asio::post(w->ioc, [w] { RunDeferred(w); });
  }
}

// Runs what other threads handed to w. On w's thread.
void RunInbox(Worker* w) {
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard lock(w->inbox_mu);
    tasks.swap(w->inbox);
    w->inbox_posted = false;
  }
  for (std::function<void()>& task : tasks) task();
}

// Hands `task` to w's thread from any thread. The first hand-off after w last ran its inbox
// wakes w; later ones only queue. Within a HandoffScope (a group commit answering its batch)
// the wake-up waits for the scope's end, so one wake-up carries every answer of the batch
// to this worker instead of a context switch (and an epoll_ctl) per answer.
void PostToWorker(Worker* w, std::function<void()> task) {
  {
    std::lock_guard lock(w->inbox_mu);
    w->inbox.push_back(std::move(task));
    if (w->inbox_posted) return;
    w->inbox_posted = true;
  }
  auto wake = [w] { asio::post(w->ioc, [w] { RunInbox(w); }); };
  if (!HandoffScope::DeferWake(w, wake)) wake();
}

// Advances the worker's coarse clocks: `now_ms` for deadlines and the Date header line (which
// is therefore at most one sweep interval behind the wall clock).
void TickClocks(Worker* w) {
  w->now_ms = RealClock()->MonotonicNanos() / 1'000'000;
  int64_t second = RealClock()->NowUnixMillis() / 1000;
  if (second != w->date_second) {
    w->date_second = second;
    w->date = "Date: " + FormatHttpDate(second) + "\r\n";
  }
}

// HTTP/1.1 requests with "Expect: 100-continue" (the only expectation defined).
bool ExpectsContinue(const bhttp::request<bhttp::string_body>& req) {
  if (req.version() < 11) return false;
  auto it = req.find(bhttp::field::expect);
  return it != req.end() && beast::iequals(it->value(), "100-continue");
}

bool IsHttpParseError(const beast::error_code& ec) {
  return ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category();
}

}  // namespace

struct HttpServer::Impl {
  Impl(HttpServerOptions o, Handler* h, HttpMetrics* m)
      : options(std::move(o)), handler(h), metrics(m) {}

  void DoAccept();
  void RejectOverloaded(Socket& socket, bool tls);
  void ScheduleSweep(Worker* w);

  const HttpServerOptions options;
  Handler* const handler;
  HttpMetrics* const metrics;
  std::atomic<size_t> active{0};
  std::atomic<bool> shut_down{false};
  std::mutex tls_mu;
  std::shared_ptr<ssl::context> tls;  // GUARDED_BY(tls_mu); for connections accepted next.
  std::vector<std::unique_ptr<Worker>> workers;
  std::optional<tcp::acceptor> acceptor;  // Lives on workers[0].
  std::optional<Socket> pending;          // The socket the current async_accept fills.
  std::optional<asio::steady_timer> accept_retry;
  size_t next_worker = 0;
  uint16_t bound_port = 0;
};

namespace {

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  static constexpr size_t kMaxReadBytes = 64 * 1024;     // One read's most.
  static constexpr size_t kNextHeaderRoom = 1024;        // Read beyond a body's end, if sent.
  static constexpr size_t kKeptBufferBytes = 16 * 1024;  // Kept between requests.

  Connection(Socket&& socket, std::shared_ptr<ssl::context> tls, Worker* worker,
             HttpServer::Impl* server)
      : socket_(std::move(socket)),
        tls_context_(std::move(tls)),
        worker_(worker),
        server_(server),
        buffer_(server->options.max_header_bytes + server->options.max_body_bytes + 8192) {
    if (tls_context_) tls_.emplace(socket_, *tls_context_);
    defer_ = [this] {
      deferred_ = true;
      auto ref = std::make_shared<Ref>(shared_from_this());
      return Responder([ref](Response r) {
        const std::shared_ptr<Connection>& self = ref->conn;
        PostToWorker(self->worker_, [self, r = std::move(r)]() mutable {
          Defer(self->worker_, [self, r = std::move(r)]() mutable { self->Send(std::move(r)); });
        });
      });
    };
  }

  ~Connection() {
    worker_->connections.erase(this);
    server_->active.fetch_sub(1, std::memory_order_relaxed);
  }

  // On the worker's thread.
  void Start() {
    worker_->connections.insert(this);
    if (worker_->draining) return Close();
    if (!tls_) return DoRead();
    state_ = State::kHandshaking;
    deadline_ms_ = worker_->now_ms + server_->options.request_timeout.count();
    tls_->async_handshake(ssl::stream_base::server,
                          [self = shared_from_this()](beast::error_code ec) {
                            if (ec || self->state_ == State::kClosing) return self->Close();
                            self->DoRead();
                          });
  }

  // Shutdown: close the connection if it waits for a request that has not started arriving;
  // otherwise the response in progress goes out with "Connection: close".
  void BeginDrain() {
    if (state_ == State::kHandshaking) return Close();
    if (state_ == State::kReading && parser_ && !parser_->got_some() && buffer_.size() == 0) {
      Close();
    }
  }

  // Called by the worker's sweep: closes the connection when the operation it waits for (a
  // request arriving, a response leaving, a lingering close) has outlived its deadline.
  void CloseIfExpired(int64_t now_ms) {
    if (state_ != State::kHandling && now_ms >= deadline_ms_) Close();
  }

 private:
  enum class State { kHandshaking, kReading, kHandling, kWriting, kClosing };

  // A Responder's reference to its connection. Responders are copied and destroyed on any
  // thread (the writer, the consistency gate, the strong layer); the last reference to a
  // connection must be dropped on its worker's thread, where ~Connection leaves the worker's
  // set that the sweep walks. So a Ref released elsewhere hands its reference back there.
  struct Ref {
    explicit Ref(std::shared_ptr<Connection> c) : conn(std::move(c)) {}
    Ref(const Ref&) = delete;
    Ref& operator=(const Ref&) = delete;
    ~Ref() {
      Worker* w = conn->worker_;
      if (!conn->socket_.get_executor().running_in_this_thread()) {
        PostToWorker(w, [c = std::move(conn)] {});
      }
    }
    std::shared_ptr<Connection> conn;
  };

  // Reads and writes go through TLS when the connection has it.
  template <class Buffers, class Handler>
  void AsyncReadSome(const Buffers& buffers, Handler&& handler) {
    if (tls_) return tls_->async_read_some(buffers, std::forward<Handler>(handler));
    socket_.async_read_some(buffers, std::forward<Handler>(handler));
  }
  template <class Buffers, class Handler>
  void AsyncWrite(const Buffers& buffers, Handler&& handler) {
    if (tls_) return asio::async_write(*tls_, buffers, std::forward<Handler>(handler));
    asio::async_write(socket_, buffers, std::forward<Handler>(handler));
  }

  // Starts reading the next request. Bytes of it may already be buffered (pipelining).
  void DoRead() {
    state_ = State::kReading;
    // A large request's buffer is not kept for the connection's idle life.
    if (buffer_.size() == 0 && buffer_.capacity() > kKeptBufferBytes) buffer_.shrink_to_fit();
    parser_.emplace();
    continue_sent_ = false;
    parser_->eager(true);
    parser_->header_limit(static_cast<std::uint32_t>(server_->options.max_header_bytes));
    parser_->body_limit(server_->options.max_body_bytes);
    deadline_ms_ = worker_->now_ms + server_->options.request_timeout.count();
    ParseBuffered();
  }

  // Feeds the buffered bytes to the parser; handles the request when it is complete, reads
  // more otherwise.
  void ParseBuffered() {
    while (buffer_.size() > 0 && !parser_->is_done()) {
      beast::error_code ec;
      size_t used = parser_->put(buffer_.data(), ec);
      buffer_.consume(used);
      if (ec == bhttp::error::need_more) break;
      if (ec) return OnReadError(ec);
      if (used == 0) break;
    }
    if (parser_->is_done()) return OnRequest();
    if (parser_->is_header_done() && !continue_sent_ && ExpectsContinue(parser_->get())) {
      // The client waits for this before sending the body (RFC 9110 10.1.1). A body over the
      // limit was already refused by the parser, with 413.
      continue_sent_ = true;
      static constexpr std::string_view k100 = "HTTP/1.1 100 Continue\r\n\r\n";
      AsyncWrite(asio::buffer(k100.data(), k100.size()),
                 [self = shared_from_this()](beast::error_code ec, std::size_t) {
                   if (ec || self->state_ == State::kClosing) return self->Close();
                   self->ParseBuffered();
                 });
      return;
    }
    if (buffer_.size() == buffer_.max_size()) {
      return OnReadError(bhttp::error::buffer_overflow);
    }
    AsyncReadSome(buffer_.prepare(NextReadSize()),
                  beast::bind_front_handler(&Connection::OnRead, shared_from_this()));
  }

  // How many bytes the next read asks for: Beast's read_size (the buffer's spare capacity, at
  // least 512 bytes, so an idle connection holds a small buffer); once a header has announced
  // a body, the rest of it and room for the next request's header, so that a request is read
  // in one or two calls instead of one per 512 bytes (the buffer grows to fit, and DoRead
  // shrinks it back after a large request). At most kMaxReadBytes, never past the buffer's
  // limit.
  size_t NextReadSize() const {
    size_t want = beast::read_size(buffer_, kMaxReadBytes);
    if (parser_->is_header_done()) {
      if (boost::optional<uint64_t> rest = parser_->content_length_remaining()) {
        const size_t room = std::min(kMaxReadBytes, buffer_.max_size() - buffer_.size());
        want =
            std::max(want, static_cast<size_t>(std::min<uint64_t>(*rest + kNextHeaderRoom, room)));
      }
    }
    return want;
  }

  void OnRead(beast::error_code ec, std::size_t n) {
    if (state_ == State::kClosing) return;
    if (ec == asio::error::eof || ec == ssl::error::stream_truncated) {
      // A client may half-close after its request; anything else is a truncated request or a
      // clean end between requests.
      return OnReadError(parser_->got_some() ? bhttp::error::partial_message
                                             : bhttp::error::end_of_stream);
    }
    if (ec) return Close();
    buffer_.commit(n);
    if (late_) {
      // A connection whose last request was answered late (a writer) waits its turn to have
      // this one parsed and handled, as it waited to be read (Worker::deferred).
      return Defer(worker_, [self = shared_from_this()] {
        self->late_ = false;  // Once per request: the rest of a large one is read at once.
        if (self->state_ != State::kClosing) self->ParseBuffered();
      });
    }
    ParseBuffered();
  }

  void OnRequest() {
    state_ = State::kHandling;
    started_ = std::chrono::steady_clock::now();
    const auto& req = parser_->get();
    keep_alive_ = req.keep_alive();
    version_ = req.version();
    std::optional<Response> response = server_->handler->Handle(RequestFrom(req), defer_);
    if (response) Send(std::move(*response));
  }

  void OnReadError(const beast::error_code& ec) {
    if (ec == bhttp::error::header_limit) {
      return SendError(431, "request headers exceed the limit");
    }
    if (ec == bhttp::error::body_limit || ec == bhttp::error::buffer_overflow) {
      return SendError(413, fmt::format("request body exceeds the limit of {} bytes",
                                        server_->options.max_body_bytes));
    }
    if (IsHttpParseError(ec) && ec != bhttp::error::end_of_stream &&
        ec != bhttp::error::partial_message) {
      return SendError(400, "malformed HTTP request: " + ec.message());
    }
    Close();  // End of stream or a truncated request.
  }

  void SendError(unsigned status, const std::string& message) {
    keep_alive_ = false;
    version_ = 11;
    started_ = std::chrono::steady_clock::now();
    Response r;
    r.status = status;
    r.body = ErrorBody(ErrorCodeFor(status), message);
    Send(std::move(r));
  }

  void Send(Response r) {
    if (state_ == State::kClosing || state_ == State::kWriting) return;
    server_->metrics->Record(
        r.route, r.status,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count());
    response_keep_alive_ = keep_alive_ && !worker_->draining && r.status < 500 && r.status != 400 &&
                           r.status != 413 && r.status != 431;
    SerializeResponse(r, version_, response_keep_alive_, worker_->date, &out_);
    state_ = State::kWriting;
    deadline_ms_ = worker_->now_ms + server_->options.write_timeout.count();
    AsyncWrite(asio::buffer(out_),
               beast::bind_front_handler(&Connection::OnWrite, shared_from_this()));
  }

  void OnWrite(beast::error_code ec, std::size_t) {
    if (ec || state_ == State::kClosing) return Close();
    if (!response_keep_alive_) return LingeringClose();
    late_ = deferred_;
    if (deferred_) {
      // Answered late: most likely a writer, whose next request waits its turn (Worker::
      // deferred) so that a flood of writes cannot delay the reads.
      deferred_ = false;
      state_ = State::kReading;
      deadline_ms_ = worker_->now_ms + server_->options.request_timeout.count();
      Defer(worker_, [self = shared_from_this()] {
        if (self->state_ == State::kClosing) return;
        if (self->worker_->draining) return self->Close();
        self->DoRead();
      });
      return;
    }
    DoRead();
  }

  // Half-closes, then discards what the client still sends (bounded in bytes and time) so the
  // response is not destroyed by a reset when unread request bytes remain.
  // With TLS: sends close_notify and reads (dropping them) the client's records until its own
  // close_notify or an error; the linger time bounds the wait.
  void LingeringClose() {
    state_ = State::kClosing;
    deadline_ms_ = worker_->now_ms + kLingerMs;
    if (tls_) {
      return tls_->async_shutdown(
          [self = shared_from_this()](beast::error_code) { self->Close(); });
    }
    beast::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    drain_ = std::make_unique<std::array<char, 4096>>();
    DrainSome();
  }

  void DrainSome() {
    socket_.async_read_some(asio::buffer(*drain_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->drained_ += n;
                              if (ec || self->drained_ > (1u << 20)) return self->Close();
                              self->DrainSome();
                            });
  }

  void Close() {
    state_ = State::kClosing;
    beast::error_code ignored;
    socket_.close(ignored);
  }

  static constexpr int64_t kLingerMs = 2000;

  Socket socket_;
  const std::shared_ptr<ssl::context> tls_context_;  // Null: plain HTTP.
  std::optional<ssl::stream<Socket&>> tls_;          // Over socket_, with tls_context_.
  Worker* const worker_;
  HttpServer::Impl* const server_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::string out_;  // The serialized response being written.
  bool response_keep_alive_ = true;
  std::function<Responder()> defer_;
  std::unique_ptr<std::array<char, 4096>> drain_;
  size_t drained_ = 0;
  State state_ = State::kReading;
  bool keep_alive_ = true;
  bool continue_sent_ = false;  // "100 Continue" already sent for the current request.
  bool deferred_ = false;       // The current request's answer was deferred (defer_).
  bool late_ = false;           // The previous request's answer was deferred.
  unsigned version_ = 11;
  int64_t deadline_ms_ = 0;  // On the worker's coarse clock; see Worker::now_ms.
  std::chrono::steady_clock::time_point started_;
};

}  // namespace

void HttpServer::Impl::RejectOverloaded(Socket& socket, bool tls) {
  static const std::string kResponse = [] {
    std::string body = ErrorBody("unavailable", "too many connections");
    return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
           "Connection: close\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
  }();
  beast::error_code ec;
  socket.non_blocking(true, ec);
  // A TLS client could not read a plain answer, and a handshake would cost what the limit
  // protects: it just sees the connection close.
  if (!tls) socket.write_some(asio::buffer(kResponse), ec);  // Best effort; never blocks.
  socket.shutdown(tcp::socket::shutdown_both, ec);
  socket.close(ec);
  metrics->Record(Route::kNone, 503, 0);
}

void HttpServer::Impl::ScheduleSweep(Worker* w) {
  auto interval = std::clamp(std::min(options.request_timeout, options.write_timeout) / 10,
                             std::chrono::milliseconds(5), std::chrono::milliseconds(250));
  w->sweep->expires_after(interval);
  w->sweep->async_wait([this, w](beast::error_code ec) {
    if (ec) return;
    TickClocks(w);
    // Close() only closes the socket; no connection is destroyed during this loop.
    for (Connection* c : w->connections) c->CloseIfExpired(w->now_ms);
    ScheduleSweep(w);
  });
}

void HttpServer::Impl::DoAccept() {
  Worker* w = workers[next_worker++ % workers.size()].get();
  pending.emplace(w->ioc.get_executor());
  acceptor->async_accept(*pending, [this, w](beast::error_code ec) {
    if (ec == asio::error::operation_aborted || !acceptor->is_open()) return;
    Socket socket = std::move(*pending);
    if (ec) {
      // EMFILE and friends: back off instead of spinning.
      spdlog::warn("accept failed: {}", ec.message());
      accept_retry->expires_after(std::chrono::milliseconds(50));
      accept_retry->async_wait([this](beast::error_code e) {
        if (!e) DoAccept();
      });
      return;
    }
    std::shared_ptr<ssl::context> context;
    {
      std::lock_guard lock(tls_mu);
      context = tls;
    }
    if (active.load(std::memory_order_relaxed) >= options.max_connections) {
      RejectOverloaded(socket, context != nullptr);
    } else {
      active.fetch_add(1, std::memory_order_relaxed);
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      asio::post(w->ioc, [this, w, s = std::move(socket), c = std::move(context)]() mutable {
        std::make_shared<Connection>(std::move(s), std::move(c), w, this)->Start();
      });
    }
    DoAccept();
  });
}

HttpServer::HttpServer(HttpServerOptions options, Handler* handler, HttpMetrics* metrics)
    : impl_(std::make_unique<Impl>(std::move(options), handler, metrics)) {
  impl_->tls = impl_->options.tls;
}

HttpServer::~HttpServer() {
  Shutdown();
  // Worker destruction destroys each io_context, and with it any queued handlers and the
  // connections they own.
  impl_->acceptor.reset();
  impl_->accept_retry.reset();
  impl_->workers.clear();
}

Status HttpServer::Start() {
  Impl& s = *impl_;
  int n = std::max(1, s.options.threads);
  for (int i = 0; i < n; ++i) s.workers.push_back(std::make_unique<Worker>());
  s.acceptor.emplace(s.workers[0]->ioc);
  s.accept_retry.emplace(s.workers[0]->ioc);
  auto port = net::Listen(*s.acceptor, s.options.listen_address, s.options.port, "HTTP");
  if (!port.ok()) return port.status();
  s.bound_port = *port;
  s.DoAccept();
  for (size_t i = 0; i < s.workers.size(); ++i) {
    Worker* w = s.workers[i].get();
    TickClocks(w);
    w->sweep.emplace(w->ioc);
    s.ScheduleSweep(w);
    w->guard.emplace(w->ioc.get_executor());
    w->thread = std::thread(
        [w, name = fmt::format("{}-{}", s.options.thread_name, i)] { net::RunLoop(w->ioc, name); });
  }
  return Status::Ok();
}

uint16_t HttpServer::port() const { return impl_->bound_port; }

size_t HttpServer::active_connections() const { return impl_->active.load(); }

void HttpServer::ReplaceTls(std::shared_ptr<ssl::context> tls) {
  std::lock_guard lock(impl_->tls_mu);
  impl_->tls = std::move(tls);
}

void HttpServer::Shutdown() {
  Impl& s = *impl_;
  if (s.shut_down.exchange(true) || s.workers.empty() || !s.workers[0]->thread.joinable()) return;
  asio::post(s.workers[0]->ioc, [&s] {
    beast::error_code ignored;
    s.acceptor->close(ignored);
    s.accept_retry->cancel();
  });
  for (auto& w : s.workers) {
    asio::post(w->ioc, [w = w.get()] {
      w->draining = true;
      std::vector<Connection*> snapshot(w->connections.begin(), w->connections.end());
      // Close() only closes the socket; each connection lives until its pending handler runs.
      for (Connection* c : snapshot) c->BeginDrain();
    });
  }
  auto deadline = std::chrono::steady_clock::now() + s.options.drain_timeout;
  while (s.active.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (s.active.load() > 0) {
    spdlog::warn("{} connections still open after the drain timeout; closing them",
                 s.active.load());
  }
  for (auto& w : s.workers) {
    w->guard.reset();
    w->ioc.stop();
  }
  for (auto& w : s.workers) {
    if (w->thread.joinable()) w->thread.join();
  }
}

}  // namespace edgestate::http
