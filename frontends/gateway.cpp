// The only translation unit that includes Boost.Beast.
#include "frontends/gateway.hpp"

#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <set>
#include <thread>

#include "frontends/pyjson.hpp"
#include "transport/stream.hpp"

namespace gymfarm::frontends {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

enum class Listener { Main, Gymnasium };

struct Gateway::Impl {
  GatewayOptions opt;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  tcp::acceptor gymnasium_acceptor{io};
  int gymnasium_port = -1;
  std::thread accept_thread;
  std::thread gymnasium_thread;
  RestRegistry rest_registry;
  std::atomic<bool> stopping{false};
  std::mutex mu;
  std::condition_variable idle;
  std::set<int> live;  // native handles of open connections
  GymieSeeds seeds;

  void track(int fd) {
    std::lock_guard lock(mu);
    live.insert(fd);
  }
  void untrack(int fd) {
    std::lock_guard lock(mu);
    live.erase(fd);
    idle.notify_all();
  }

  void accept_loop(tcp::acceptor& from, Listener kind) {
    while (!stopping) {
      beast::error_code ec;
      tcp::socket sock(io);
      from.accept(sock, ec);
      if (ec) {
        if (stopping) return;
        continue;
      }
      sock.set_option(tcp::no_delay(true), ec);  // replies are small and awaited: send them at once
      const int fd = sock.native_handle();
      {
        std::lock_guard lock(mu);
        if (live.size() >= opt.max_connections) {
          http::response<http::string_body> res{http::status::service_unavailable, 11};
          res.set(http::field::content_type, "text/plain");
          res.set(http::field::connection, "close");
          res.body() = "too many connections";
          res.prepare_payload();
          http::write(sock, res, ec);
          continue;
        }
        live.insert(fd);
      }
      std::thread([this, s = std::move(sock), fd, kind]() mutable {
        serve(std::move(s), kind);
        untrack(fd);
      }).detach();
    }
  }

  static std::string path_of(beast::string_view target) {
    const auto q = target.find('?');
    return std::string(q == beast::string_view::npos ? target : target.substr(0, q));
  }

  static void set_read_timeout(tcp::socket& sock, std::chrono::seconds t) {
    timeval tv{static_cast<time_t>(t.count()), 0};
    setsockopt(sock.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }

  void serve(tcp::socket sock, Listener kind) {
    transport::SpinPolicy spin_policy;  // a client that pauses between requests stops the spinning
    beast::flat_buffer buffer;
    beast::error_code ec;
    std::unique_ptr<client::Client> farm;  // made at the first REST request of this connection
    std::unique_ptr<RestSession> rest;
    set_read_timeout(sock, opt.http_idle_timeout);
    while (!stopping) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(16 * 1024);
      parser.body_limit(opt.max_message_bytes);
      if (buffer.size() == 0) transport::spin_for_input(sock.native_handle(), opt.spin, spin_policy);
      http::read(sock, buffer, parser, ec);
      if (ec == http::error::body_limit || ec == http::error::header_limit) {
        const bool body = ec == http::error::body_limit;
        http::response<http::string_body> res{body ? http::status::payload_too_large
                                                   : http::status::request_header_fields_too_large, 11};
        res.set(http::field::content_type, "application/json");
        res.set(http::field::connection, "close");
        res.body() = body ? "{\"message\":\"request body too large\"}\n" : "{\"message\":\"request headers too large\"}\n";
        res.prepare_payload();
        http::write(sock, res, ec);
        break;
      }
      if (ec) break;
      auto req = parser.release();
      const std::string path = path_of(req.target());
      auto sv = [](beast::string_view s) { return std::string_view(s.data(), s.size()); };
      if (auto refused = check_access(opt.access, sv(req[http::field::host]), sv(req[http::field::origin]),
                                      sv(req[http::field::authorization]), sv(req.target()))) {
        http::response<http::string_body> res{static_cast<http::status>(refused->status), 11};
        res.set(http::field::content_type, "application/json");
        if (refused->status == 401) res.set(http::field::www_authenticate, "Bearer");
        res.set(http::field::connection, "close");
        res.body() = "{\"message\":";
        write_json_string(res.body(), refused->message);
        res.body() += "}\n";
        res.prepare_payload();
        http::write(sock, res, ec);
        break;
      }
      if (kind == Listener::Main && path == "/gym" && websocket::is_upgrade(req)) {
        set_read_timeout(sock, std::chrono::seconds(0));
        serve_gymie(std::move(sock), std::move(req));
        return;
      }
      http::response<http::string_body> res;
      res.version(req.version());
      const bool is_rest = kind == Listener::Gymnasium || path.rfind("/v1/", 0) == 0 || path == "/v1" ||
                           path == "/openapi.json";
      bool shutdown_after = false;
      if (is_rest) {
        if (!rest) {
          try {
            farm = connect_farm();
          } catch (const std::exception&) {
            res.result(http::status::service_unavailable);
            res.set(http::field::content_type, "application/json");
            res.body() = "{\"message\":\"the farm is not answering\"}\n";
            res.keep_alive(false);
            res.prepare_payload();
            http::write(sock, res, ec);
            break;
          }
          rest = std::make_unique<RestSession>(*farm, rest_registry,
                                               kind == Listener::Main ? RestDialect::GymHttpApi : RestDialect::GymnasiumHttpApi,
                                               opt.rest);
        }
        HttpRequest hr{std::string(req.method_string()), std::string(req.target()), std::move(req.body()),
                       std::string(req[http::field::content_type])};
        HttpReply out = rest->handle(hr);
        res.result(static_cast<unsigned>(out.status));
        if (!out.content_type.empty()) res.set(http::field::content_type, out.content_type);
        for (const auto& [k, v] : out.headers) res.set(k, v);
        if (req.method() != http::verb::head) res.body() = std::move(out.body);
        res.keep_alive(req.keep_alive() && !out.shutdown);
        shutdown_after = out.shutdown;
      } else if (path == "/gym") {
        res.result(http::status::bad_request);
        res.set(http::field::connection, "close");
        res.keep_alive(false);
      } else {
        res.result(http::status::ok);
        res.set(http::field::content_type, "text/plain");
        res.body() = "Gymie is running...";
        res.keep_alive(req.keep_alive());
      }
      res.prepare_payload();
      http::write(sock, res, ec);
      if (shutdown_after) ::kill(::getpid(), SIGTERM);  // the farm drains and stops
      if (ec || !res.keep_alive()) break;
    }
    sock.shutdown(tcp::socket::shutdown_both, ec);
  }

  std::unique_ptr<client::Client> connect_farm() const {
    client::ClientOptions co;
    co.timeout = opt.client_timeout;
    co.name = "gymfarm-gateway";
    co.token = opt.access.token;
    co.context = opt.broker_context;
    co.spin = opt.spin;
    return std::make_unique<client::Client>(opt.broker_endpoint, co);
  }

  void serve_gymie(tcp::socket sock, http::request<http::string_body> req) {
    websocket::stream<tcp::socket> ws(std::move(sock));
    ws.read_message_max(opt.max_message_bytes);
    ws.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::server, "gymfarm"); }));
    beast::error_code ec;
    ws.accept(req, ec);
    if (ec) return;
    std::unique_ptr<client::Client> farm;
    try {
      farm = connect_farm();
    } catch (const std::exception&) {
      ws.close(websocket::close_reason(websocket::close_code::try_again_later, "the farm is not answering"), ec);
      return;
    }
    GymieSession session(*farm, seeds, opt.gymie);
    transport::SpinPolicy spin_policy;
    beast::flat_buffer buffer;
    while (!stopping) {
      buffer.clear();
      transport::spin_for_input(ws.next_layer().native_handle(), opt.spin, spin_policy);
      ws.read(buffer, ec);
      if (ec) break;  // peer closed, protocol error (Beast has sent the close), or shutdown
      const auto out = session.handle(beast::buffers_to_string(buffer.data()));
      if (out.close) {
        ws.close(websocket::close_reason(static_cast<websocket::close_code>(out.code), out.text), ec);
        // read until the peer's close frame arrives (or the connection drops)
        while (!ec) {
          buffer.clear();
          ws.read(buffer, ec);
        }
        break;
      }
      ws.text(true);
      ws.write(asio::buffer(out.text), ec);
      if (ec) break;
    }
    session.disconnected();
  }
};

Gateway::Gateway(GatewayOptions options) : impl_(std::make_unique<Impl>()) { impl_->opt = std::move(options); }

Gateway::~Gateway() { stop(); }

namespace {
uint16_t listen_on(tcp::acceptor& a, const std::string& host, uint16_t port) {
  beast::error_code ec;
  const auto addr = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec) throw std::runtime_error("--host " + host + ": not an IP address");
  tcp::endpoint ep(addr, port);
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message());
  return a.local_endpoint().port();
}
}  // namespace

uint16_t Gateway::start() {
  auto& d = *impl_;
  const uint16_t port = listen_on(d.acceptor, d.opt.host, d.opt.port);
  if (d.opt.gymnasium_port >= 0) {
    d.gymnasium_port = listen_on(d.gymnasium_acceptor, d.opt.host, static_cast<uint16_t>(d.opt.gymnasium_port));
    d.gymnasium_thread = std::thread([&d] { d.accept_loop(d.gymnasium_acceptor, Listener::Gymnasium); });
  }
  d.accept_thread = std::thread([&d] { d.accept_loop(d.acceptor, Listener::Main); });
  return port;
}

int Gateway::gymnasium_port() const { return impl_->gymnasium_port; }

void Gateway::stop() {
  auto& d = *impl_;
  if (d.stopping.exchange(true)) return;
  for (auto* a : {&d.acceptor, &d.gymnasium_acceptor}) {
    if (a->is_open()) ::shutdown(a->native_handle(), SHUT_RDWR);
  }
  if (d.accept_thread.joinable()) d.accept_thread.join();
  if (d.gymnasium_thread.joinable()) d.gymnasium_thread.join();
  beast::error_code ec;
  d.acceptor.close(ec);
  d.gymnasium_acceptor.close(ec);
  std::unique_lock lock(d.mu);
  for (int fd : d.live) ::shutdown(fd, SHUT_RDWR);
  d.idle.wait_for(lock, std::chrono::seconds(10), [&] { return d.live.empty(); });
}

}  // namespace gymfarm::frontends
