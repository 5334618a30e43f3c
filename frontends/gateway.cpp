// The only translation unit that includes Boost.Beast.
#include "frontends/gateway.hpp"

#include <sys/socket.h>

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

namespace gymfarm::frontends {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

struct Gateway::Impl {
  GatewayOptions opt;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::thread accept_thread;
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

  void accept_loop() {
    while (!stopping) {
      beast::error_code ec;
      tcp::socket sock(io);
      acceptor.accept(sock, ec);
      if (ec) {
        if (stopping) return;
        continue;
      }
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
      std::thread([this, s = std::move(sock), fd]() mutable {
        serve(std::move(s));
        untrack(fd);
      }).detach();
    }
  }

  static std::string path_of(beast::string_view target) {
    const auto q = target.find('?');
    return std::string(q == beast::string_view::npos ? target : target.substr(0, q));
  }

  void serve(tcp::socket sock) {
    beast::flat_buffer buffer;
    beast::error_code ec;
    while (!stopping) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(16 * 1024);
      parser.body_limit(opt.max_message_bytes);
      http::read(sock, buffer, parser, ec);
      if (ec) break;
      auto req = parser.release();
      const std::string path = path_of(req.target());
      if (path == "/gym" && websocket::is_upgrade(req)) {
        serve_gymie(std::move(sock), std::move(req));
        return;
      }
      http::response<http::string_body> res;
      res.version(req.version());
      if (path == "/gym") {
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
      if (ec || !res.keep_alive()) break;
    }
    sock.shutdown(tcp::socket::shutdown_both, ec);
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
      client::ClientOptions co;
      co.timeout = opt.client_timeout;
      co.name = "gymfarm-gateway";
      farm = std::make_unique<client::Client>(opt.broker_endpoint, co);
    } catch (const std::exception& e) {
      ws.close(websocket::close_reason(websocket::close_code::try_again_later, "the farm is not answering"), ec);
      return;
    }
    GymieSession session(*farm, seeds, opt.gymie);
    beast::flat_buffer buffer;
    while (!stopping) {
      buffer.clear();
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

uint16_t Gateway::start() {
  auto& d = *impl_;
  beast::error_code ec;
  const auto addr = asio::ip::make_address(d.opt.host == "localhost" ? "127.0.0.1" : d.opt.host, ec);
  if (ec) throw std::runtime_error("--host " + d.opt.host + ": not an IP address");
  tcp::endpoint ep(addr, d.opt.port);
  d.acceptor.open(ep.protocol(), ec);
  if (!ec) d.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) d.acceptor.bind(ep, ec);
  if (!ec) d.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw std::runtime_error("cannot listen on " + d.opt.host + ":" + std::to_string(d.opt.port) + ": " + ec.message());
  }
  const uint16_t port = d.acceptor.local_endpoint().port();
  d.accept_thread = std::thread([&d] { d.accept_loop(); });
  return port;
}

void Gateway::stop() {
  auto& d = *impl_;
  if (d.stopping.exchange(true)) return;
  if (d.acceptor.is_open()) ::shutdown(d.acceptor.native_handle(), SHUT_RDWR);
  if (d.accept_thread.joinable()) d.accept_thread.join();
  beast::error_code ec;
  d.acceptor.close(ec);
  std::unique_lock lock(d.mu);
  for (int fd : d.live) ::shutdown(fd, SHUT_RDWR);
  d.idle.wait_for(lock, std::chrono::seconds(10), [&] { return d.live.empty(); });
}

}  // namespace gymfarm::frontends
