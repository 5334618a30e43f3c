// gymfarm-loadgen: the C++ load generator of bench/ (so the client does not set the number), and
// the raw floors the farm is compared with. Each run prints one JSON line:
//   {"mode": ..., "n": N, "p50_us": ..., "p99_us": ..., "per_s": ...}
//
//   gymfarm-loadgen native ENDPOINT N          one CartPole, N sequential steps, C++ native client
//   gymfarm-loadgen broker-step ENDPOINT N     the same over ZeroMQ only (no local socket, no slab):
//                                              every step is routed by the broker
//   gymfarm-loadgen broker-ping ENDPOINT N     N pings over ZeroMQ: the broker answers them itself
//   gymfarm-loadgen http HOST PORT N           gym-http-api keep-alive: make, reset, N steps
//   gymfarm-loadgen gymie HOST PORT PATH N     Gymie WebSocket: make, reset, N steps
//   gymfarm-loadgen zmq-echo ENDPOINT N        DEALER round trips to a zmq-echo-server
//   gymfarm-loadgen zmq-echo-server ENDPOINT   ROUTER that echoes every message (until killed)
//   gymfarm-loadgen ws-echo HOST PORT N        WebSocket round trips to a ws-echo-server
//   gymfarm-loadgen ws-echo-server PORT        Beast WebSocket echo server (until killed)
#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <chrono>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include "client/client.hpp"

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: gymfarm-loadgen native|broker-step|broker-ping ENDPOINT N | http HOST PORT N |\n"
               "       gymie HOST PORT PATH N |\n"
               "       zmq-echo ENDPOINT N | zmq-echo-server ENDPOINT | ws-echo HOST PORT N | ws-echo-server PORT\n");
  std::exit(2);  // NOLINT(concurrency-mt-unsafe): only from main, before any thread starts
}

// Times `n` calls of `op` and prints the JSON line.
void measure(const std::string& mode, long n, const std::function<void(long)>& op) {
  for (long i = 0; i < std::min(n / 10 + 1, 200L); ++i) op(i);  // warm-up, discarded
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(n));
  const auto start = Clock::now();
  for (long i = 0; i < n; ++i) {
    const auto t = Clock::now();
    op(i);
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count());
  }
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  std::sort(us.begin(), us.end());
  auto pct = [&](double p) {
    return us[std::min(us.size() - 1, static_cast<std::size_t>(p * static_cast<double>(us.size())))];
  };
  std::printf("{\"mode\": \"%s\", \"n\": %ld, \"p50_us\": %.1f, \"p99_us\": %.1f, \"per_s\": %.1f}\n", mode.c_str(), n,
              pct(0.5), pct(0.99), static_cast<double>(n) / secs);
  std::fflush(stdout);
}

// One CartPole stepped n times (`broker-step`: over ZeroMQ only, so the broker routes every step).
void native(const std::string& endpoint, long n, const std::string& mode = "native",
            gymfarm::client::ClientOptions options = {}) {
  gymfarm::client::Client c(endpoint, std::move(options));
  const auto env = c.make("CartPole-v1");
  c.reset(env.instance_id, 0);
  measure(mode, n, [&](long i) {
    const auto r = c.step(env.instance_id, gymfarm::protocol::Value(static_cast<int64_t>(i % 2)));
    if (r.terminated || r.truncated) c.reset(env.instance_id);
  });
  c.close(env.instance_id);
}

// What one broker costs per message (bench/broker_rate.py): steps it routes, pings it answers.
void broker_step(const std::string& endpoint, long n) {
  gymfarm::client::ClientOptions o;
  o.local = false;
  o.shm = false;
  native(endpoint, n, "broker-step", o);
}

void broker_ping(const std::string& endpoint, long n) {
  gymfarm::client::ClientOptions o;
  o.local = false;
  gymfarm::client::Client c(endpoint, o);
  measure("broker-ping", n, [&](long) { c.call("ping"); });
}

// gym-http-api over one keep-alive connection.
void rest(const std::string& host, const std::string& port, long n) {
  net::io_context ioc;
  tcp::resolver resolver(ioc);
  const auto where = resolver.resolve(host, port);
  beast::tcp_stream stream(ioc);
  bool open = false;
  beast::flat_buffer buf;
  auto post = [&](const std::string& target, const std::string& body) {
    if (!open) {  // (again, when the server closed the connection after its last reply)
      beast::error_code ec;
      stream.socket().close(ec);
      stream.connect(where);
      stream.socket().set_option(tcp::no_delay(true));
      buf.clear();
      open = true;
    }
    http::request<http::string_body> req{http::verb::post, target, 11};
    req.set(http::field::host, host + ":" + port);
    req.set(http::field::content_type, "application/json");
    req.keep_alive(true);
    req.body() = body;
    req.prepare_payload();
    http::write(stream, req);
    http::response<http::string_body> res;
    http::read(stream, buf, res);
    open = res.keep_alive();
    if (res.result_int() != 200)
      throw std::runtime_error(target + " answered " + std::to_string(res.result_int()) + ": " + res.body());
    return Json::parse(res.body());
  };
  const std::string id = post("/v1/envs/", R"({"env_id": "CartPole-v1"})")["instance_id"];
  post("/v1/envs/" + id + "/reset/", "{}");
  const std::string step = "/v1/envs/" + id + "/step/";
  measure("http", n, [&](long i) {
    const Json r = post(step, i % 2 ? R"({"action": 1})" : R"({"action": 0})");
    if (r["done"].get<bool>()) post("/v1/envs/" + id + "/reset/", "{}");
  });
  try {
    // REST instances outlive the connection; the reference may not have the route
    post("/v1/envs/" + id + "/close/", "");
  } catch (const std::exception&) {
  }
}

websocket::stream<tcp::socket> ws_connect(net::io_context& ioc, const std::string& host, const std::string& port,
                                          const std::string& path) {
  tcp::resolver resolver(ioc);
  websocket::stream<tcp::socket> ws(ioc);
  net::connect(ws.next_layer(), resolver.resolve(host, port));
  ws.next_layer().set_option(tcp::no_delay(true));
  ws.handshake(host + ":" + port, path);
  ws.text(true);
  return ws;
}

// Gymie: {"method", "params"} frames; make answers the bare id, step [obs, reward, done, info].
void gymie(const std::string& host, const std::string& port, const std::string& path, long n) {
  net::io_context ioc;
  auto ws = ws_connect(ioc, host, port, path);
  beast::flat_buffer buf;
  auto call = [&](const std::string& msg) {
    ws.write(net::buffer(msg));
    buf.clear();
    ws.read(buf);
    return beast::buffers_to_string(buf.data());
  };
  std::string id = call(R"({"method": "make", "params": {"env_id": "CartPole-v1"}})");
  if (!id.empty() && id.front() == '"') id = Json::parse(id).get<std::string>();
  const std::string reset = R"({"method": "reset", "params": {"instance_id": ")" + id + R"("}})";
  call(reset);
  const std::string step0 = R"({"method": "step", "params": {"instance_id": ")" + id + R"(", "action": 0}})";
  const std::string step1 = R"({"method": "step", "params": {"instance_id": ")" + id + R"(", "action": 1}})";
  measure("gymie", n, [&](long i) {
    const Json r = Json::parse(call(i % 2 ? step1 : step0));
    if (r.at(2).get<bool>()) call(reset);
  });
}

void zmq_echo(const std::string& endpoint, long n) {
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.connect(endpoint);
  const std::string payload(96, 'x');  // about the size of a CartPole step reply
  measure("zmq-echo", n, [&](long) {
    s.send(zmq::buffer(payload), zmq::send_flags::none);
    zmq::message_t m;
    if (!s.recv(m)) throw std::runtime_error("no echo");
  });
}

void zmq_echo_server(const std::string& endpoint) {
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::router);
  s.bind(endpoint);
  std::printf("listening %s\n", s.get(zmq::sockopt::last_endpoint).c_str());
  std::fflush(stdout);
  while (true) {
    zmq::message_t id, body;
    if (!s.recv(id) || !s.recv(body)) continue;
    s.send(id, zmq::send_flags::sndmore);
    s.send(body, zmq::send_flags::none);
  }
}

void ws_echo(const std::string& host, const std::string& port, long n) {
  net::io_context ioc;
  auto ws = ws_connect(ioc, host, port, "/");
  beast::flat_buffer buf;
  const std::string payload(96, 'x');
  measure("ws-echo", n, [&](long) {
    ws.write(net::buffer(payload));
    buf.clear();
    ws.read(buf);
  });
}

void ws_echo_server(unsigned short port) {
  net::io_context ioc;
  tcp::acceptor acceptor(ioc, {net::ip::make_address("127.0.0.1"), port});
  std::printf("listening %u\n", static_cast<unsigned>(acceptor.local_endpoint().port()));
  std::fflush(stdout);
  while (true) {
    tcp::socket sock(ioc);
    acceptor.accept(sock);
    std::thread([s = std::move(sock)]() mutable {
      try {
        s.set_option(tcp::no_delay(true));
        websocket::stream<tcp::socket> ws(std::move(s));
        ws.accept();
        beast::flat_buffer buf;
        while (true) {
          buf.clear();
          ws.read(buf);
          ws.text(ws.got_text());
          ws.write(buf.data());
        }
      } catch (const std::exception&) {
      }
    }).detach();
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) usage();
  const std::string mode = argv[1];
  auto arg = [&](int i) -> std::string {
    if (i >= argc) usage();
    return argv[i];
  };
  try {
    if (mode == "native") native(arg(2), std::stol(arg(3)));
    else if (mode == "broker-step") broker_step(arg(2), std::stol(arg(3)));
    else if (mode == "broker-ping") broker_ping(arg(2), std::stol(arg(3)));
    else if (mode == "http") rest(arg(2), arg(3), std::stol(arg(4)));
    else if (mode == "gymie") gymie(arg(2), arg(3), arg(4), std::stol(arg(5)));
    else if (mode == "zmq-echo") zmq_echo(arg(2), std::stol(arg(3)));
    else if (mode == "zmq-echo-server") zmq_echo_server(arg(2));
    else if (mode == "ws-echo") ws_echo(arg(2), arg(3), std::stol(arg(4)));
    else if (mode == "ws-echo-server") ws_echo_server(static_cast<unsigned short>(std::stoi(arg(2))));
    else usage();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gymfarm-loadgen %s: %s\n", mode.c_str(), e.what());
    return 1;
  }
  return 0;
}
