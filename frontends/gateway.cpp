// The only translation unit that includes Boost.Beast.
//
// Beast's asynchronous model, in the shape of its advanced server example: a Listener per port
// accepts (close-on-exec, counted against ConnectionLimits), an HttpSession reads requests with a
// first-byte (idle) deadline, a header deadline and a body deadline, and a WebsocketSession takes
// over a /gym upgrade with Beast's ping-based idle timeout. Every session lives on a strand of one
// io_context run by a few threads. The dialects block on the farm, so a request's handle() runs on
// the BlockingPool and its reply is posted back to the session's strand: one request at a time
// per connection, in order, and an idle connection holds no thread.
#include "frontends/gateway.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "frontends/blocking_pool.hpp"
#include "frontends/connection_limits.hpp"
#include "frontends/dashboard.hpp"
#include "frontends/inline_step.hpp"
#include "frontends/instance_owners.hpp"
#include "frontends/metrics.hpp"
#include "frontends/png.hpp"
#include "frontends/pyjson.hpp"
#include "protocol/frames.hpp"
#include "protocol/log.hpp"

namespace gymfarm::frontends {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

constexpr std::size_t kHeaderLimit = std::size_t{16} * 1024;
constexpr std::size_t kFirstRead = 4096;                      // bytes asked for while waiting for a request to start
constexpr std::size_t kWsReadChunk = std::size_t{64} * 1024;  // the most one WebSocket read takes of a message
constexpr int kAcceptBatch = 64;                              // accepts per wake-up before other handlers get a turn
constexpr std::size_t kFdMargin = 1024;  // descriptors beyond the connections: broker, workers, ZeroMQ
constexpr auto kAcceptPause = std::chrono::milliseconds(50);  // out of descriptors: try again after this
constexpr auto kStopWait = std::chrono::seconds(10);
constexpr auto kLogEvery = std::chrono::seconds(10);         // refused connections: one log line at most this often
constexpr auto kFramePace = std::chrono::milliseconds(200);  // the dashboard's frames: one per connection per this

// Main: Gymie, gym-http-api and Gymie-Server's text; Gymnasium: gymnasium-http-api; GymServer:
// gym-server's API at /v1/ and its artifacts elsewhere; GymServerFiles: its artifacts alone.
// Metrics: /metrics, /healthz and /readyz alone (--metrics-port).
enum class Kind { Main, Gymnasium, GymServer, GymServerFiles, Metrics };
constexpr std::size_t kKinds = 5;
constexpr const char* kKindNames[kKinds] = {"gymie_gym_http_api", "gymnasium_http_api", "gym_server",
                                            "gym_server_files", "metrics"};

// What a connection refused at accept gets before the close (one non-blocking send, best effort).
constexpr std::string_view kRefusedReply =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
    "Content-Length: 35\r\n\r\n{\"message\":\"too many connections\"}\n";
static_assert(std::string_view("{\"message\":\"too many connections\"}\n").size() == 35);

class Connection {
 public:
  virtual ~Connection() = default;
  virtual void end() = 0;  // any thread: close the socket on the connection's strand
};

struct Core;

// The farm, as any pool thread reaches it: each pool thread has its own client::Client (a Client
// is not thread-safe), made at its first call, dropped when the thread ends.
class PoolCaller final : public client::Caller {
 public:
  explicit PoolCaller(Core& core) : core_(core) {}
  client::Value call(std::string_view verb, std::string_view instance, const client::Value& body) override;
  client::Client& farm();  // this thread's

 private:
  Core& core_;
};

thread_local std::unique_ptr<client::Client> t_farm;
thread_local const Core* t_farm_owner = nullptr;

struct Core {
  explicit Core(GatewayOptions o)
      : opt(std::move(o)),
        limits(ConnectionLimitOptions{opt.max_connections, opt.max_connections_per_client}),
        streams(ConnectionLimitOptions{opt.max_dashboard_streams, opt.max_dashboard_streams_per_client}),
        pool(BlockingPoolOptions{opt.max_blocking_threads, std::chrono::seconds(30),
                                 [] {
                                   t_farm.reset();
                                   t_farm_owner = nullptr;
                                 }}),
        caller(*this) {}

  GatewayOptions opt;
  ConnectionLimits limits;
  ConnectionLimits streams;  // the dashboard's frame streams, in all and per remote address
  RestRegistry rest_registry;
  GymServerRegistry gym_server_registry;
  GymieInstances gymie_instances;              // what Gymie connections made: seeds, owners
  std::atomic<uint64_t> gymie_connections{0};  // numbers the connections in the dashboard's owners
  FrameCache frames;  // the dashboard's frames: one render per instance per interval, whatever the viewers
  std::array<std::atomic<std::size_t>, kKinds> open_by_kind{};  // open connections per frontend (/metrics)
  BlockingPool pool;
  PoolCaller caller;
  std::atomic<bool> stopping{false};
  std::atomic<std::size_t> in_flight{0};  // requests running now, on the pool or the I/O threads
  InlineCounts inline_counts;

  // A step may run on an I/O thread while the gateway has no more requests in flight than I/O
  // threads: a busy gateway's requests go to the pool, where they run side by side.
  bool may_inline() const { return in_flight.load(std::memory_order_relaxed) < opt.io_threads; }

  std::mutex mu;
  std::condition_variable none_live;
  std::unordered_map<uint64_t, std::weak_ptr<Connection>> live;
  uint64_t next_id = 1;

  asio::io_context io;  // last: destroyed first, with the handlers (and sessions) it still holds

  // The instances' slabs, shared by every pool thread's client: any thread serves any instance.
  std::shared_ptr<client::SlabRegistry> slabs = client::make_slab_registry();

  std::unique_ptr<client::Client> connect_farm() const {
    client::ClientOptions co;
    co.slabs = slabs;
    co.timeout = opt.client_timeout;
    co.name = "gymfarm-gateway";
    co.token = opt.access.token;
    co.context = opt.broker_context;
    co.spin = opt.spin;
    return std::make_unique<client::Client>(opt.broker_endpoint, co);
  }

  // What only the gateway knows, for /metrics and the dashboard: its open connections per frontend
  // (the ports it serves), and the instances in its dialects' tables with their owners.
  std::vector<std::pair<std::string, std::size_t>> connection_counts() const {
    std::vector<std::pair<std::string, std::size_t>> out;
    const int ports[kKinds] = {opt.port, opt.gymnasium_port, opt.gym_server_port, opt.gym_server_files_port,
                               opt.metrics_port};
    for (std::size_t k = 0; k < kKinds; ++k) {
      if (ports[k] >= 0) out.emplace_back(kKindNames[k], open_by_kind[k].load());
    }
    return out;
  }
  std::map<std::string, GatewayInstance> own_instances() {
    std::map<std::string, GatewayInstance> out;
    rest_registry.for_each([&](const std::string&, const RestEntry& e) {
      out[e.instance] = {"rest", "REST (any client with the token)"};
    });
    gym_server_registry.for_each([&](const std::string&, const GymServerEntry& e) {
      out[e.instance] = {"gym_server", "gym-server (any client with the token)"};
    });
    for (auto& [id, owner] : gymie_instances.owners()) out[id] = {"gymie", std::move(owner)};
    return out;
  }

  uint64_t track(std::weak_ptr<Connection> c) {
    std::lock_guard lock(mu);
    const uint64_t id = next_id++;
    live.emplace(id, std::move(c));
    return id;
  }
  void retrack(uint64_t id, std::weak_ptr<Connection> c) {
    std::lock_guard lock(mu);
    live[id] = std::move(c);
  }
  void untrack(uint64_t id) {
    std::lock_guard lock(mu);
    live.erase(id);
    if (live.empty()) none_live.notify_all();
  }
  void end_all() {
    std::vector<std::shared_ptr<Connection>> all;
    {
      std::lock_guard lock(mu);
      for (auto& [id, w] : live)
        if (auto c = w.lock()) all.push_back(std::move(c));
    }
    for (auto& c : all) c->end();
  }
};

client::Client& PoolCaller::farm() {
  if (!t_farm || t_farm_owner != &core_) {
    t_farm.reset();
    t_farm = core_.connect_farm();  // throws ClientError when the farm does not answer
    t_farm_owner = &core_;
  }
  return *t_farm;
}

client::Value PoolCaller::call(std::string_view verb, std::string_view instance, const client::Value& body) {
  return farm().call(verb, instance, body);
}

// The farm for a request on a pool thread: the pool's, or, for a step the I/O thread left in its
// slab, an AdoptingCaller that finishes it (inline_step.hpp).
class PoolRequest {
 public:
  PoolRequest(PoolCaller& pool, std::shared_ptr<client::SlabCall> pending) {
    if (pending) adopt_.emplace([&pool]() -> client::Client& { return pool.farm(); }, pool, std::move(pending));
  }
  client::Caller* via() { return adopt_ ? &*adopt_ : nullptr; }

 private:
  std::optional<AdoptingCaller> adopt_;
};

// One admitted connection's place in the limits and in the live set; moves from the HTTP session
// to the WebSocket session at an upgrade.
class Slot {
 public:
  Slot() = default;
  Slot(Core& core, std::string client, Kind kind) : core_(&core), client_(std::move(client)), kind_(kind) {
    ++core_->open_by_kind[static_cast<std::size_t>(kind_)];
  }
  Slot(Slot&& o) noexcept
      : core_(std::exchange(o.core_, nullptr)), client_(std::move(o.client_)), kind_(o.kind_), id_(o.id_) {}
  Slot& operator=(Slot&&) = delete;
  ~Slot() {
    if (!core_) return;
    --core_->open_by_kind[static_cast<std::size_t>(kind_)];
    core_->limits.release(client_);
    if (id_) core_->untrack(id_);
  }
  void track(std::weak_ptr<Connection> c) {
    if (id_) core_->retrack(id_, std::move(c));
    else id_ = core_->track(std::move(c));
  }
  const std::string& client() const { return client_; }

 private:
  Core* core_ = nullptr;
  std::string client_;
  Kind kind_ = Kind::Main;
  uint64_t id_ = 0;
};

std::string path_of(beast::string_view target) {
  const auto q = target.find('?');
  return std::string(q == beast::string_view::npos ? target : target.substr(0, q));
}

std::string_view sv(beast::string_view s) { return {s.data(), s.size()}; }

std::string json_message(std::string_view text) {
  std::string out = "{\"message\":";
  write_json_string(out, text);
  out += "}\n";
  return out;
}

bool is_http_parse_error(const beast::error_code& ec) {
  static const auto& category = http::make_error_code(http::error::bad_method).category();
  return ec.category() == category && ec != http::error::end_of_stream && ec != http::error::partial_message;
}

// ---------------------------------------------------------------------------------------------

class WebsocketSession : public Connection, public std::enable_shared_from_this<WebsocketSession> {
 public:
  WebsocketSession(Core& core, beast::tcp_stream&& stream, Slot&& slot)
      : core_(core), ws_(std::move(stream)), slot_(std::move(slot)) {}

  void run(const http::request<http::string_body>& req) {
    slot_.track(weak_from_this());
    beast::get_lowest_layer(ws_).expires_never();  // the websocket stream keeps its own timeouts
    ws_.set_option(timeouts(true));
    ws_.read_message_max(0);  // no limit in Beast: on_read enforces max_message_bytes
    ws_.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "gymfarm"); }));
    ws_.async_accept(req, beast::bind_front_handler(&WebsocketSession::on_accept, shared_from_this()));
  }

  void end() override {
    asio::post(ws_.get_executor(), [self = shared_from_this()] { beast::get_lowest_layer(self->ws_).close(); });
  }

 private:
  // Beast's ping-based idle timeout counts only while a read is pending: it is off while a
  // request runs on the pool (an env step may outlast it, and its pong is not read meanwhile),
  // and the reply's write has the TCP stream's own deadline instead.
  websocket::stream_base::timeout timeouts(bool idle) const {
    websocket::stream_base::timeout t{};
    t.handshake_timeout = core_.opt.ws_close_timeout;  // the opening and the closing handshake
    t.idle_timeout = idle ? std::chrono::duration_cast<std::chrono::steady_clock::duration>(core_.opt.http_idle_timeout)
                          : websocket::stream_base::none();
    t.keep_alive_pings = true;  // pinged at half of it
    return t;
  }

  void on_accept(beast::error_code ec) {
    if (ec) return on_end();
    do_read();
  }

  // Reads a message piece by piece and enforces the size limit here: Beast 1.74's own limit fails
  // the connection with an asynchronous teardown that stops reading after one chunk, so a peer
  // still sending the oversized message gets a reset instead of the 1009 close.
  void do_read() {
    ws_.async_read_some(buffer_, kWsReadChunk,
                        beast::bind_front_handler(&WebsocketSession::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec) return on_end();  // peer closed, protocol error (Beast has sent the close), timeout, stop
    if (buffer_.size() > core_.opt.max_message_bytes) {
      buffer_.clear();
      return on_outcome(GymieOutcome{true, static_cast<uint16_t>(websocket::close_code::too_big), ""});
    }
    if (!ws_.is_message_done()) return do_read();
    std::string text = beast::buffers_to_string(buffer_.data());
    buffer_.consume(buffer_.size());
    ws_.set_option(timeouts(false));
    std::shared_ptr<client::SlabCall> pending;
    if (gymie_ && core_.may_inline() && GymieSession::is_step(text, core_.opt.gymie.max_depth)) {
      auto out = try_inline<GymieOutcome>(
          core_.slabs, core_.inline_counts, core_.in_flight,
          [&](InlineCaller& via) { return gymie_->handle(text, &via); }, pending);
      if (out) return on_outcome(std::move(*out));
    }
    auto self = shared_from_this();
    ++core_.in_flight;
    const bool queued = core_.pool.post([self, text = std::move(text), pending = std::move(pending)]() mutable {
      GymieOutcome out;
      try {
        if (!self->gymie_) {
          const uint64_t n = ++self->core_.gymie_connections;
          self->gymie_ = std::make_unique<GymieSession>(
              static_cast<client::Caller&>(self->core_.caller), self->core_.gymie_instances, self->core_.opt.gymie,
              "Gymie #" + std::to_string(n) + " (" + self->slot_.client() + ")");
        }
        PoolRequest farm(self->core_.caller, std::move(pending));
        out = self->gymie_->handle(text, farm.via());
      } catch (const client::ClientError&) {
        out = GymieOutcome{true, static_cast<uint16_t>(websocket::close_code::try_again_later),
                           "the farm is not answering"};
      } catch (const std::exception&) {
        out = GymieOutcome{true, static_cast<uint16_t>(websocket::close_code::internal_error), "internal error"};
      }
      --self->core_.in_flight;
      asio::post(self->ws_.get_executor(),
                 [self, out = std::move(out)]() mutable { self->on_outcome(std::move(out)); });
    });
    if (!queued) {
      --core_.in_flight;
      beast::get_lowest_layer(ws_).close();  // stopping
    }
  }

  void on_outcome(GymieOutcome out) {
    if (out.close) {
      ws_.set_option(timeouts(true));
      // Beast sends the close and reads until the peer's close comes back, for at most the
      // handshake timeout; then the TCP connection is dropped either way.
      ws_.async_close(websocket::close_reason(static_cast<websocket::close_code>(out.code), out.text),
                      [self = shared_from_this()](beast::error_code) { self->on_end(); });
      return;
    }
    ws_.set_option(timeouts(true));                                           // armed again by the next read
    beast::get_lowest_layer(ws_).expires_after(core_.opt.http_idle_timeout);  // a peer that does not read its reply
    reply_ = std::move(out.text);
    ws_.text(true);
    ws_.async_write(asio::buffer(reply_), beast::bind_front_handler(&WebsocketSession::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, std::size_t) {
    beast::get_lowest_layer(ws_).expires_never();
    if (ec) return on_end();
    do_read();
  }

  void on_end() {
    if (ended_) return;
    ended_ = true;
    beast::error_code ec;
    beast::get_lowest_layer(ws_).socket().close(ec);
    if (gymie_) {  // close the instances it made (blocking: on the pool)
      core_.pool.post([self = shared_from_this()] {
        try {
          self->gymie_->disconnected();
        } catch (const std::exception&) {
        }
      });
    }
  }

  Core& core_;
  websocket::stream<beast::tcp_stream> ws_;
  Slot slot_;
  beast::flat_buffer buffer_;
  std::string reply_;
  std::unique_ptr<GymieSession> gymie_;  // made and used on the pool, one job at a time
  bool ended_ = false;
};

// ---------------------------------------------------------------------------------------------

// A dashboard stream's state in its HTTP session (at namespace scope: clang cannot construct a
// nested struct with member initializers inside the class that holds it in a std::optional).
struct DashboardStream {
  std::string instance;
  unsigned version = 11;
  bool keep_alive = false;
  bool started = false;  // the head went out: from here on, frames or the end
  std::chrono::steady_clock::time_point asked_at{};
  std::string out;   // the bytes being written
  std::string last;  // the last frame sent (the same one is not sent again)
  std::array<char, 512> sink{};
};

class HttpSession : public Connection, public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(Core& core, tcp::socket&& socket, Kind kind, Slot&& slot)
      : core_(core), stream_(std::move(socket)), kind_(kind), slot_(std::move(slot)) {}

  void run() {
    slot_.track(weak_from_this());
    asio::dispatch(stream_.get_executor(), beast::bind_front_handler(&HttpSession::do_wait, shared_from_this()));
  }

  void end() override {
    asio::post(stream_.get_executor(), [self = shared_from_this()] { self->do_close(); });
  }

 private:
  // Waits for the first byte of the next request for at most the idle timeout.
  void do_wait() {
    if (closed_) return;
    if (buffer_.size() > 0) return do_read_header();  // a pipelined request is already here
    stream_.expires_after(core_.opt.http_idle_timeout);
    stream_.async_read_some(buffer_.prepare(kFirstRead),
                            [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                              self->buffer_.commit(n);
                              if (ec) return self->do_close();  // idle timeout, peer closed, stop
                              self->do_read_header();
                            });
  }

  // The request has begun: its headers must be complete within the header timeout.
  void do_read_header() {
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(core_.opt.max_message_bytes);
    stream_.expires_after(core_.opt.http_header_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&HttpSession::on_header, shared_from_this()));
  }

  void on_header(beast::error_code ec, std::size_t) {
    if (ec) return on_read_error(ec);
    if (parser_->is_done()) return on_body({}, 0);
    stream_.expires_after(core_.opt.http_idle_timeout);  // the body: within the idle timeout
    http::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&HttpSession::on_body, shared_from_this()));
  }

  void on_body(beast::error_code ec, std::size_t) {
    if (ec) return on_read_error(ec);
    stream_.expires_never();
    route(parser_->release());
  }

  void on_read_error(beast::error_code ec) {
    if (ec == http::error::body_limit)
      return reply_and_close(http::status::payload_too_large, "request body too large");
    if (ec == http::error::header_limit)
      return reply_and_close(http::status::request_header_fields_too_large, "request headers too large");
    if (is_http_parse_error(ec))
      return reply_and_close(http::status::bad_request, "malformed request: " + ec.message());
    do_close();  // timeout, the peer closed or went away mid-request, stop
  }

  void reply_and_close(http::status status, std::string_view message) {
    cors_.clear();  // the request was not read: it grants nothing
    res_ = {};
    res_.version(11);
    res_.result(status);
    res_.set(http::field::content_type, "application/json");
    res_.body() = json_message(message);
    res_.keep_alive(false);
    res_.prepare_payload();
    do_write();
  }

  void route(http::request<http::string_body> req) {
    const std::string path = path_of(req.target());
    cors_ = cors_origin(core_.opt.access, sv(req[http::field::origin]));
    if (is_allowed_preflight(core_.opt.access, sv(req.method_string()), sv(req[http::field::host]),
                             sv(req[http::field::origin]), sv(req[http::field::access_control_request_method]))) {
      res_ = {};
      res_.version(req.version());
      res_.result(http::status::no_content);
      res_.set(http::field::access_control_allow_methods, "GET, POST, DELETE, OPTIONS");
      res_.set(http::field::access_control_allow_headers, "Authorization, Content-Type");
      res_.set(http::field::access_control_max_age, "600");
      res_.keep_alive(req.keep_alive());
      res_.prepare_payload();
      return do_write();
    }
    if (path == "/healthz" || path == "/readyz" || (path != "/metrics" && kind_ == Kind::Metrics))
      return route_health(std::move(req), path);
    // The dashboard's page and what it polls: the token once as ?token=, then from its cookie.
    const bool dashboard = kind_ == Kind::Main && (path == "/dashboard" || path.rfind("/dashboard/", 0) == 0);
    std::string authorization(sv(req[http::field::authorization]));
    if (dashboard) {
      cors_.clear();  // the dashboard is for its own page only
      if (authorization.empty() && !has_query_token(sv(req.target()))) {
        if (std::string cookie = dashboard_cookie_token(sv(req[http::field::cookie])); !cookie.empty())
          authorization = "Bearer " + cookie;
      }
    }
    if (auto refused = check_access(core_.opt.access, sv(req[http::field::host]), sv(req[http::field::origin]),
                                    authorization, sv(req.target()))) {
      res_ = {};
      res_.version(req.version());
      res_.result(static_cast<http::status>(refused->status));
      res_.set(http::field::content_type, "application/json");
      if (refused->status == 401) res_.set(http::field::www_authenticate, "Bearer");
      res_.body() = json_message(refused->message);
      res_.keep_alive(false);
      res_.prepare_payload();
      return do_write();
    }
    if (path == "/metrics") return run_metrics(std::move(req));
    if (dashboard) return route_dashboard(std::move(req), path);
    if (kind_ == Kind::GymServer || kind_ == Kind::GymServerFiles) {
      const bool api = kind_ == Kind::GymServer && (path.rfind("/v1/", 0) == 0 || path == "/v1");
      return run_gym_server(std::move(req), api);
    }
    if (kind_ == Kind::Main && path == "/gym" && websocket::is_upgrade(req)) {
      closed_ = true;  // the stream moves to the WebSocket session
      auto ws = std::make_shared<WebsocketSession>(core_, std::move(stream_), std::move(slot_));
      ws->run(req);
      return;
    }
    const bool is_rest = kind_ == Kind::Gymnasium || path.rfind("/v1/", 0) == 0 || path == "/v1" ||
                         path == "/openapi.json";
    if (is_rest) return run_rest(std::move(req));
    res_ = {};
    res_.version(req.version());
    if (path == "/gym") {
      res_.result(http::status::bad_request);
      res_.keep_alive(false);
    } else {
      res_.result(http::status::ok);
      res_.set(http::field::content_type, "text/plain");
      res_.body() = "Gymie is running...";
      res_.keep_alive(req.keep_alive());
    }
    res_.prepare_payload();
    do_write();
  }

  // A small reply made here, on the session's strand.
  void reply_now(const http::request<http::string_body>& req, http::status status, std::string_view body,
                 std::string_view content_type = "text/plain") {
    res_ = {};
    res_.version(req.version());
    res_.result(status);
    res_.set(http::field::content_type, beast::string_view(content_type.data(), content_type.size()));
    if (req.method() != http::verb::head) res_.body() = std::string(body);
    res_.keep_alive(req.keep_alive());
    res_.prepare_payload();
    do_write();
  }

  // /healthz (the gateway serves) and /readyz (the farm takes a make now: metrics.hpp) need no
  // token and say only "ok" or "not ready"; a loopback farm still answers them only to loopback
  // Host names (DNS rebinding). On the metrics port every other path is a 404.
  void route_health(http::request<http::string_body> req, const std::string& path) {
    const auto& a = core_.opt.access;
    if (a.token.empty() && !a.any_host && !is_local_host(sv(req[http::field::host])))
      return reply_now(req, http::status::forbidden, json_message("Host is not allowed"), "application/json");
    if (path != "/healthz" && path != "/readyz") return reply_now(req, http::status::not_found, "not found\n");
    if (req.method() != http::verb::get && req.method() != http::verb::head)
      return reply_now(req, http::status::method_not_allowed, "GET or HEAD\n");
    if (path == "/healthz") return reply_now(req, http::status::ok, "ok\n");
    run_blocking(std::move(req), [](HttpSession& s, const HttpRequest&) {
      HttpReply out;
      out.content_type = "text/plain";
      bool ready = false;
      try {
        ready = farm_ready(static_cast<client::Caller&>(s.core_.caller).call(protocol::verb::kStats));
      } catch (const std::exception&) {  // the broker does not answer, or answered an error
      }
      out.status = ready ? 200 : 503;
      out.body = ready ? "ok\n" : "not ready\n";
      return out;
    });
  }

  // /metrics: the broker's `stats` and the gateway's own counts, as Prometheus text.
  void run_metrics(http::request<http::string_body> req) {
    if (req.method() != http::verb::get && req.method() != http::verb::head)
      return reply_now(req, http::status::method_not_allowed, "GET or HEAD\n");
    run_blocking(std::move(req), [](HttpSession& s, const HttpRequest&) {
      HttpReply out;
      Core& c = s.core_;
      client::Value stats;
      try {
        stats = static_cast<client::Caller&>(c.caller).call(protocol::verb::kStats);
      } catch (const std::exception&) {
        out.status = 503;
        out.body = json_message("the farm is not answering");
        return out;
      }
      GatewayCounts counts;
      counts.connections = c.connection_counts();
      counts.instances = instances_by_dialect(instance_rows(stats, c.own_instances()));
      counts.dashboard_streams = c.streams.total();
      counts.inline_steps = c.inline_counts.answered.load();
      counts.handed_over_steps = c.inline_counts.handed_over.load();
      out.content_type = "text/plain; version=0.0.4; charset=utf-8";
      out.body = render_metrics(stats, counts);
      return out;
    });
  }

  // /dashboard (the page; with ?token= a redirect that keeps the token in a cookie instead of the
  // URL), /dashboard/api/stats, /dashboard/frames/<instance> and /dashboard/stream/<instance>
  // (docs/operations.md "Dashboard").
  void route_dashboard(http::request<http::string_body> req, const std::string& path) {
    if (req.method() != http::verb::get && req.method() != http::verb::head)
      return reply_now(req, http::status::method_not_allowed, "GET or HEAD\n");
    if (path == "/dashboard" || path == "/dashboard/") {
      res_ = {};
      res_.version(req.version());
      res_.set(http::field::cache_control, "no-store");
      res_.set("Referrer-Policy", "no-referrer");
      res_.set("X-Content-Type-Options", "nosniff");
      res_.set("X-Frame-Options", "DENY");
      const auto& token = core_.opt.access.token;
      if (!token.empty() && has_query_token(sv(req.target()))) {
        res_.result(http::status::see_other);
        res_.set(http::field::set_cookie, dashboard_set_cookie(token));
        res_.set(http::field::location, "/dashboard");
      } else {
        res_.result(http::status::ok);
        res_.set(http::field::content_type, "text/html; charset=utf-8");
        res_.set("Content-Security-Policy", beast::string_view(kDashboardCsp.data(), kDashboardCsp.size()));
        if (req.method() != http::verb::head) res_.body() = std::string(dashboard_page());
      }
      res_.keep_alive(req.keep_alive());
      res_.prepare_payload();
      return do_write();
    }
    if (path == "/dashboard/api/stats") {
      return run_blocking(std::move(req), [](HttpSession& s, const HttpRequest&) {
        HttpReply out;
        Core& c = s.core_;
        client::Value stats;
        try {
          stats = static_cast<client::Caller&>(c.caller).call(protocol::verb::kStats);
        } catch (const std::exception&) {
          out.status = 503;
          out.body = json_message("the farm is not answering");
          return out;
        }
        out.content_type = "application/json";
        out.headers.emplace_back("Cache-Control", "no-store");
        out.body = dashboard_stats_json(stats, instance_rows(stats, c.own_instances()), c.connection_counts(),
                                        c.streams.total());
        return out;
      });
    }
    if (auto instance = dashboard_frame_instance(path)) {
      // One frame per kFramePace per connection: a viewer polling back to back waits (on a timer,
      // holding no thread) instead of costing the gateway a reply per round trip.
      const auto now = std::chrono::steady_clock::now();
      if (now < next_frame_at_) {
        pace_.expires_at(next_frame_at_);
        pace_.async_wait([self = shared_from_this(), req = std::move(req), path](beast::error_code ec) mutable {
          if (!ec && !self->closed_) self->route_dashboard(std::move(req), path);
        });
        return;
      }
      next_frame_at_ = now + kFramePace;
      return run_blocking(std::move(req), [instance = *instance](HttpSession& s, const HttpRequest&) {
        const FrameCache::Frame f = s.frame_of(instance);
        HttpReply out;
        out.status = f.status;
        out.content_type = f.status == 200 ? "image/png" : "application/json";
        out.headers.emplace_back("Cache-Control", "no-store");
        out.body = f.body;
        return out;
      });
    }
    if (auto instance = dashboard_stream_instance(path)) {
      if (req.method() != http::verb::get) return reply_now(req, http::status::method_not_allowed, "GET\n");
      return start_stream(req, std::move(*instance));
    }
    reply_now(req, http::status::not_found, json_message("not found"), "application/json");
  }

  // The instance's latest frame, shared by every viewer (FrameCache); on a pool thread.
  FrameCache::Frame frame_of(const std::string& instance) {
    return core_.frames.get(instance, FrameCache::Clock::now(),
                            [&] { return render_frame(static_cast<client::Caller&>(core_.caller), instance); });
  }

  // /dashboard/stream/<instance>: the frames as multipart/x-mixed-replace, on timers (no thread
  // held between frames). The first frame decides the answer: a failure is answered as
  // /dashboard/frames/ answers it (404, 409, 503) and the connection stays; a PNG starts the
  // stream, which then sends the instance's latest frame at most once per kFramePace (not the
  // same one twice) and ends with the close delimiter when a render fails (the instance closed,
  // its worker died), and at once when the viewer goes away.
  void start_stream(const http::request<http::string_body>& req, std::string instance) {
    if (core_.streams.admit(slot_.client()) != Admission::Admitted) {
      return reply_now(
          req, http::status::service_unavailable,
          json_message("too many dashboard streams (" + std::to_string(core_.opt.max_dashboard_streams) + " in all, " +
                       std::to_string(core_.opt.max_dashboard_streams_per_client) + " per client address)"),
          "application/json");
    }
    viewer_.emplace();
    viewer_->instance = std::move(instance);
    viewer_->version = req.version();
    viewer_->keep_alive = req.keep_alive();
    fetch_stream_frame();
  }

  void fetch_stream_frame() {
    if (closed_ || !viewer_) return;
    viewer_->asked_at = std::chrono::steady_clock::now();
    auto self = shared_from_this();
    const bool queued = core_.pool.post([self, instance = viewer_->instance] {
      FrameCache::Frame f = self->frame_of(instance);
      asio::post(self->stream_.get_executor(),
                 [self, f = std::move(f)]() mutable { self->on_stream_frame(std::move(f)); });
    });
    if (!queued) do_close();  // stopping
  }

  void on_stream_frame(FrameCache::Frame f) {
    if (closed_ || !viewer_) return;
    if (!viewer_->started) {
      if (f.status != 200) {  // answered as a single frame's failure would be; no stream opened
        const unsigned version = viewer_->version;
        const bool keep_alive = viewer_->keep_alive;
        end_stream_slot();
        HttpReply out;
        out.status = f.status;
        out.content_type = "application/json";
        out.headers.emplace_back("Cache-Control", "no-store");
        out.body = std::move(f.body);
        return on_rest_reply(std::move(out), false, keep_alive, version);
      }
      viewer_->started = true;
      viewer_->out = dashboard_stream_head() + dashboard_stream_part(f.body, true);
      viewer_->last = std::move(f.body);
      watch_viewer();
      return write_stream(false);
    }
    if (f.status != 200) {  // the instance is gone, its worker died, the farm does not answer
      viewer_->out = dashboard_stream_end();
      return write_stream(true);
    }
    if (f.body == viewer_->last) {  // the frame it has: ask again when the cache may render a new one
      return next_stream_frame(f.rendered + core_.frames.interval() + std::chrono::milliseconds(1));
    }
    std::string part = dashboard_stream_part(f.body, false);
    if (part.empty()) return next_stream_frame();  // a frame the format cannot carry
    viewer_->out = std::move(part);
    viewer_->last = std::move(f.body);
    write_stream(false);
  }

  void write_stream(bool last) {
    stream_.expires_after(core_.opt.http_idle_timeout);  // a viewer that stops reading
    asio::async_write(stream_, asio::buffer(viewer_->out),
                      [self = shared_from_this(), last](beast::error_code ec, std::size_t) {
                        self->stream_.expires_never();
                        if (ec || last) return self->do_close();
                        self->next_stream_frame();
                      });
  }

  // The next fetch starts kFramePace after the last one started (or at `not_before`, if later):
  // frames go out at most once per kFramePace, a fetch that took long is not made up for.
  void next_stream_frame(std::chrono::steady_clock::time_point not_before = {}) {
    if (closed_ || !viewer_) return;
    pace_.expires_at(std::max(viewer_->asked_at + kFramePace, not_before));
    pace_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->fetch_stream_frame();
    });
  }

  // The viewer sends nothing after its request: a read that ends (EOF, reset) means it has gone.
  void watch_viewer() {
    stream_.socket().async_read_some(asio::buffer(viewer_->sink),
                                     [self = shared_from_this()](beast::error_code ec, std::size_t) {
                                       if (ec) return self->do_close();
                                       self->watch_viewer();  // bytes it sent anyway are dropped
                                     });
  }

  void end_stream_slot() {
    if (viewer_) core_.streams.release(slot_.client());
    viewer_.reset();
  }

  // One `render` of the instance as a PNG, or the status and message of why not.
  static FrameCache::Frame render_frame(client::Caller& farm, const std::string& instance) {
    client::Value frame;
    try {
      const client::Value r = farm.call(protocol::verb::kRender, instance);
      if (const client::Value* f = r.find("frame")) frame = *f;
    } catch (const client::ClientError& e) {
      switch (e.code()) {
        case protocol::ErrorCode::UnknownInstance:
          return {404, json_message("no instance the gateway may watch (native clients' instances need shared: true)")};
        case protocol::ErrorCode::EnvError:
          return {409, json_message("the env cannot render now: " + e.error().message)};
        case protocol::ErrorCode::Timeout: return {504, json_message(e.error().message)};
        default: return {503, json_message(e.error().message)};
      }
    } catch (const std::exception&) {
      return {503, json_message("the farm is not answering")};
    }
    if (!frame.is_tensor()) return {409, json_message("the env has no rgb_array frame (render_mode rgb_array)")};
    auto png = encode_png(frame.as_tensor());
    if (!png) return {409, json_message("the frame is not an HxWx3 or HxWx4 uint8 image")};
    return {200, std::move(*png)};
  }

  void run_rest(http::request<http::string_body> req) {
    if (!rest_) {
      rest_ = std::make_unique<RestSession>(
          core_.caller, core_.rest_registry,
          kind_ == Kind::Main ? RestDialect::GymHttpApi : RestDialect::GymnasiumHttpApi, core_.opt.rest);
    }
    HttpRequest hr = to_request(req);
    const bool head = req.method() == http::verb::head;
    std::shared_ptr<client::SlabCall> pending;
    if (core_.may_inline() && rest_->is_step(hr)) {
      auto out = try_inline<HttpReply>(
          core_.slabs, core_.inline_counts, core_.in_flight, [&](InlineCaller& via) { return rest_->handle(hr, &via); },
          pending);
      if (out) return on_rest_reply(std::move(*out), head, req.keep_alive(), req.version());
    }
    post_blocking(std::move(hr), head, req.keep_alive(), req.version(),
                  [pending = std::move(pending)](HttpSession& s, const HttpRequest& r) mutable {
                    PoolRequest farm(s.core_.caller, std::move(pending));
                    return s.rest_->handle(r, farm.via());
                  });
  }

  // gym-server: its API (`api`) or its artifacts; the files are read on the pool too (disk I/O).
  void run_gym_server(http::request<http::string_body> req, bool api) {
    if (api && !gym_server_) {
      gym_server_ = std::make_unique<GymServerSession>(core_.caller, core_.gym_server_registry, core_.opt.gym_server);
    }
    if (api) {
      return run_blocking(std::move(req),
                          [](HttpSession& s, const HttpRequest& hr) { return s.gym_server_->handle(hr); });
    }
    run_blocking(std::move(req),
                 [](HttpSession& s, const HttpRequest& hr) { return gym_server_file(s.core_.opt.gym_server, hr); });
  }

  // The request as the dialects take it.
  HttpRequest to_request(http::request<http::string_body>& req) {
    HttpRequest hr{std::string(req.method_string()), std::string(req.target()), std::move(req.body()),
                   std::string(req[http::field::content_type])};
    // The peer has closed (EOF or an error on a non-blocking peek): long operations may give up.
    hr.client_gone = [fd = stream_.socket().native_handle(), closed = closed_flag_] {
      if (closed->load()) return true;
      char c;
      const ssize_t r = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
      return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    };
    return hr;
  }

  // Runs a dialect's blocking handle() on the pool and posts its reply back to this session.
  template <class Handle>
  void run_blocking(http::request<http::string_body> req, Handle handle) {
    HttpRequest hr = to_request(req);
    post_blocking(std::move(hr), req.method() == http::verb::head, req.keep_alive(), req.version(), std::move(handle));
  }

  template <class Handle>
  void post_blocking(HttpRequest hr, bool head, bool keep_alive, unsigned version, Handle handle) {
    auto self = shared_from_this();
    ++core_.in_flight;
    const bool queued = core_.pool.post(
        [self, hr = std::move(hr), head, keep_alive, version, handle = std::move(handle)]() mutable {
          HttpReply out;
          try {
            out = handle(*self, hr);
          } catch (const std::exception&) {
            out = HttpReply{};
            out.status = 500;
            out.body = json_message("internal error");
          }
          --self->core_.in_flight;
          asio::post(self->stream_.get_executor(), [self, out = std::move(out), head, keep_alive, version]() mutable {
            self->on_rest_reply(std::move(out), head, keep_alive, version);
          });
        });
    if (!queued) {
      --core_.in_flight;
      do_close();  // stopping
    }
  }

  void on_rest_reply(HttpReply out, bool head, bool keep_alive, unsigned version) {
    if (closed_) return;
    res_ = {};
    res_.version(version);
    res_.result(static_cast<unsigned>(out.status));
    if (!out.content_type.empty()) res_.set(http::field::content_type, out.content_type);
    for (const auto& [k, v] : out.headers) res_.set(k, v);
    if (!head) res_.body() = std::move(out.body);
    res_.keep_alive(keep_alive && !out.shutdown);
    shutdown_after_ = out.shutdown;
    res_.prepare_payload();
    do_write();
  }

  void do_write() {
    if (closed_) return;
    if (!cors_.empty()) {  // a page from a --allow-origin origin may read the reply
      res_.set(http::field::access_control_allow_origin, cors_);
      res_.set(http::field::vary, "Origin");
    }
    stream_.expires_after(core_.opt.http_idle_timeout);  // a peer that does not read its reply
    http::async_write(stream_, res_, beast::bind_front_handler(&HttpSession::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, std::size_t) {
    if (shutdown_after_) ::kill(::getpid(), SIGTERM);  // the farm drains and stops
    if (ec || !res_.keep_alive()) return do_close();
    res_ = {};
    do_wait();
  }

  void do_close() {
    if (closed_) return;
    closed_ = true;
    closed_flag_->store(true);
    pace_.cancel();
    end_stream_slot();
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.close();
  }

  Core& core_;
  beast::tcp_stream stream_;
  Kind kind_;
  Slot slot_;
  std::string cors_;  // Access-Control-Allow-Origin of the current request's reply, if any
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
  std::unique_ptr<RestSession> rest_;             // used on the pool, one job at a time
  std::unique_ptr<GymServerSession> gym_server_;  // likewise
  std::shared_ptr<std::atomic<bool>> closed_flag_ = std::make_shared<std::atomic<bool>>(false);
  bool closed_ = false;
  bool shutdown_after_ = false;
  asio::steady_timer pace_{stream_.get_executor()};  // the dashboard's frames, paced per connection
  std::chrono::steady_clock::time_point next_frame_at_{};
  // A /dashboard/stream/ viewer: set while it holds a place in core_.streams.
  std::optional<DashboardStream> viewer_;
};

// ---------------------------------------------------------------------------------------------

class Listener : public std::enable_shared_from_this<Listener> {
 public:
  Listener(Core& core, tcp::acceptor& acceptor, Kind kind)
      : core_(core), acceptor_(acceptor), kind_(kind), pause_(acceptor.get_executor()) {}

  void run() { do_accept(); }
  void end() {
    asio::post(acceptor_.get_executor(), [self = shared_from_this()] {
      beast::error_code ec;
      self->pause_.cancel();
      self->acceptor_.close(ec);
    });
  }

 private:
  void do_accept() {
    if (core_.stopping || !acceptor_.is_open()) return;
    acceptor_.async_wait(tcp::acceptor::wait_read, beast::bind_front_handler(&Listener::on_ready, shared_from_this()));
  }

  void on_ready(beast::error_code ec) {
    if (ec || core_.stopping) return;
    for (int i = 0; i < kAcceptBatch; ++i) {
      sockaddr_storage sa{};
      socklen_t len = sizeof sa;
      // accept4: the socket is close-on-exec from its first instant (no worker may inherit it)
      const int fd = ::accept4(acceptor_.native_handle(), reinterpret_cast<sockaddr*>(&sa), &len,
                               SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          if (!warned_fds_) {
            protocol::log_warn("gateway: out of file descriptors (" + std::generic_category().message(errno) +
                               "); new connections wait");
            warned_fds_ = true;
          }
          pause_.expires_after(kAcceptPause);
          pause_.async_wait([self = shared_from_this()](beast::error_code e) {
            if (!e) self->do_accept();
          });
          return;
        }
        break;  // something else: wait for the next readiness
      }
      admit(fd, sa);
    }
    do_accept();
  }

  void admit(int fd, const sockaddr_storage& sa) {
    char text[INET6_ADDRSTRLEN] = "?";
    tcp protocol = tcp::v4();
    if (sa.ss_family == AF_INET6) {
      ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(sa).sin6_addr, text, sizeof text);
      protocol = tcp::v6();
    } else {
      ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(sa).sin_addr, text, sizeof text);
    }
    std::string client = text;
    if (const Admission a = core_.limits.admit(client); a != Admission::Admitted) {
      note_refusal(a, client);
      return refuse(fd);
    }
    Slot slot(core_, std::move(client), kind_);
    tcp::socket socket(asio::make_strand(core_.io));
    beast::error_code ec;
    socket.assign(protocol, fd, ec);
    if (ec) {
      ::close(fd);
      return;
    }
    socket.set_option(tcp::no_delay(true), ec);  // replies are small and awaited: send them at once
    std::make_shared<HttpSession>(core_, std::move(socket), kind_, std::move(slot))->run();
  }

  // The log says when connections are refused: the first, then at most one line per kLogEvery.
  void note_refusal(Admission a, const std::string& client) {
    ++refused_;
    const auto now = std::chrono::steady_clock::now();
    if (logged_any_ && now - last_log_ < kLogEvery) return;
    protocol::log_warn("gateway: refused " + std::to_string(refused_) + " connection(s)" +
                       (logged_any_ ? " since the last report" : "") + "; the last from " + client + " (" +
                       (a == Admission::TooManyFromClient ? "--max-connections-per-client" : "--max-connections") +
                       ")");
    refused_ = 0;
    last_log_ = now;
    logged_any_ = true;
  }

  // Refused at a limit: one 503 if the socket takes it at once, what the peer already sent read
  // away (so the close is a FIN, not a reset), closed. Accepting never stops.
  static void refuse(int fd) {
    (void)!::send(fd, kRefusedReply.data(), kRefusedReply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    ::shutdown(fd, SHUT_WR);
    char sink[4096];
    for (int i = 0; i < 4 && ::recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; ++i) {
    }
    ::close(fd);
  }

  Core& core_;
  tcp::acceptor& acceptor_;
  Kind kind_;
  asio::steady_timer pause_;
  bool warned_fds_ = false;
  uint64_t refused_ = 0;
  bool logged_any_ = false;
  std::chrono::steady_clock::time_point last_log_{};
};

uint16_t listen_on(tcp::acceptor& a, const std::string& host, uint16_t port) {
  beast::error_code ec;
  const auto addr = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec) throw std::runtime_error("--host " + host + ": not an IP address");
  tcp::endpoint ep(addr, port);
  // close-on-exec from the start: workers and the zygote must not hold the gateway's ports
  const int fd = ::socket(ep.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_TCP);
  if (fd < 0)
    throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) + ": " +
                             std::generic_category().message(errno).c_str());
  a.assign(ep.protocol(), fd, ec);
  if (ec) {
    ::close(fd);
    throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message());
  }
  a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message());
  return a.local_endpoint().port();
}

// 10,000 connections need 10,000 descriptors: the soft limit goes to the hard one.
void raise_fd_limit(std::size_t connections) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit want = rl;
    want.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
  }
  const rlim_t needed = static_cast<rlim_t>(connections) + kFdMargin;
  if (connections && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < needed) {
    protocol::log_warn("gateway: the open-file limit is " + std::to_string(rl.rlim_cur) + " (hard limit " +
                       std::to_string(rl.rlim_max) + "); --max-connections " + std::to_string(connections) +
                       " needs about " + std::to_string(needed) +
                       ": past the limit new connections wait for descriptors");
  }
}

}  // namespace

struct Gateway::Impl {
  std::shared_ptr<Core> core;
  tcp::acceptor acceptor;
  tcp::acceptor gymnasium_acceptor;
  tcp::acceptor gym_server_acceptor;
  tcp::acceptor gym_server_files_acceptor;
  tcp::acceptor metrics_acceptor;
  int port = -1;
  int gymnasium_port = -1;
  int gym_server_port = -1;
  int gym_server_files_port = -1;
  int metrics_port = -1;
  std::vector<std::shared_ptr<Listener>> listeners;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> io_threads;
  bool started = false;

  explicit Impl(GatewayOptions o)
      : core(std::make_shared<Core>(std::move(o))),
        acceptor(asio::make_strand(core->io)),
        gymnasium_acceptor(asio::make_strand(core->io)),
        gym_server_acceptor(asio::make_strand(core->io)),
        gym_server_files_acceptor(asio::make_strand(core->io)),
        metrics_acceptor(asio::make_strand(core->io)) {}
  ~Impl() {
    beast::error_code ec;
    acceptor.close(ec);
    gymnasium_acceptor.close(ec);
    gym_server_acceptor.close(ec);
    gym_server_files_acceptor.close(ec);
    metrics_acceptor.close(ec);
    listeners.clear();
  }

  // Listens on `wanted` (-1: off) and records the bound port in `bound`.
  void open(tcp::acceptor& a, int wanted, Kind kind, int& bound) {
    if (wanted < 0) return;
    bound = listen_on(a, core->opt.host, static_cast<uint16_t>(wanted));
    listeners.push_back(std::make_shared<Listener>(*core, a, kind));
  }
};

Gateway::Gateway(GatewayOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Gateway::~Gateway() {
  stop();
  if (impl_ && impl_->started && impl_->core->pool.threads() > 0) {
    // A pool thread is still inside a farm call past the stop's wait: what it uses stays alive
    // until the process ends.
    new std::shared_ptr<Core>(impl_->core);  // NOLINT(bugprone-unhandled-exception-at-new): a leak on purpose
  }
}

int Gateway::start() {
  auto& d = *impl_;
  auto& c = *d.core;
  d.open(d.acceptor, c.opt.port, Kind::Main, d.port);
  d.open(d.gymnasium_acceptor, c.opt.gymnasium_port, Kind::Gymnasium, d.gymnasium_port);
  d.open(d.gym_server_acceptor, c.opt.gym_server_port, Kind::GymServer, d.gym_server_port);
  d.open(d.gym_server_files_acceptor, c.opt.gym_server_files_port, Kind::GymServerFiles, d.gym_server_files_port);
  d.open(d.metrics_acceptor, c.opt.metrics_port, Kind::Metrics, d.metrics_port);
  if (d.listeners.empty()) return -1;  // every port off: no gateway threads at all
  raise_fd_limit(c.opt.max_connections);
  for (auto& l : d.listeners) l->run();
  d.work.emplace(c.io.get_executor());
  const std::size_t n = std::max<std::size_t>(1, c.opt.io_threads);
  for (std::size_t i = 0; i < n; ++i) d.io_threads.emplace_back([&c] { c.io.run(); });
  d.started = true;
  return d.port;
}

int Gateway::gymnasium_port() const { return impl_->gymnasium_port; }
int Gateway::gym_server_port() const { return impl_->gym_server_port; }
int Gateway::gym_server_files_port() const { return impl_->gym_server_files_port; }
int Gateway::metrics_port() const { return impl_->metrics_port; }

void Gateway::stop() {
  auto& d = *impl_;
  auto& c = *d.core;
  if (c.stopping.exchange(true) || !d.started) return;
  for (auto& l : d.listeners) l->end();
  c.end_all();
  // Running requests finish (their replies go to closed sockets); queued ones are dropped.
  if (!c.pool.stop(std::chrono::duration_cast<std::chrono::milliseconds>(kStopWait)))
    protocol::log_warn("gateway: " + std::to_string(c.pool.threads()) + " requests still running at stop");
  c.end_all();  // sessions that a finished request handed back
  {
    std::unique_lock lock(c.mu);
    c.none_live.wait_for(lock, std::chrono::seconds(2), [&] { return c.live.empty(); });
  }
  d.work.reset();
  c.io.stop();
  for (auto& t : d.io_threads) t.join();
  d.io_threads.clear();
}

}  // namespace gymfarm::frontends
