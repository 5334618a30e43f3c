#pragma once
// The HTTP + WebSocket gateway (Boost.Beast, compiled only in gateway.cpp). One port serves the
// Gymie WebSocket at /gym; every other path answers as Gymie-Server does. Every port also answers
// /healthz, /readyz and /metrics (metrics.hpp); --metrics-port serves those three alone. Beast's asynchronous
// model: a listener per port, an HTTP session and a WebSocket session per connection, all on one
// io_context run by a few threads; an idle connection costs no thread. The dialects block on the
// farm, so each request runs on a bounded pool of blocking threads (BlockingPool), each with its
// own native-protocol client, and its reply is posted back to the session.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "frontends/access.hpp"
#include "frontends/gym_server.hpp"
#include "frontends/gymie.hpp"
#include "frontends/rest.hpp"

namespace zmq {
class context_t;
}

namespace gymfarm::frontends {

struct GatewayOptions {
  std::string host = "127.0.0.1";
  int port = 5000;                           // 0 picks a free port: Gymie at /gym, gym-http-api at /v1/; -1 off
  int gymnasium_port = 40004;                // gymnasium-http-api dialect; 0 picks a free port, -1 turns it off
  int gym_server_port = -1;                  // gym-server's API and its artifacts; 0 picks a free port, -1 off
  int gym_server_files_port = -1;            // gym-server's artifacts alone (its port 8000); -1 off
  int metrics_port = -1;                     // /metrics, /healthz and /readyz alone (--metrics-port); -1 off
  std::string broker_endpoint;               // the native endpoint the gateway's clients connect to
  zmq::context_t* broker_context = nullptr;  // shared with the broker for an inproc:// endpoint
  std::chrono::milliseconds client_timeout{120000};
  GymieOptions gymie;
  std::size_t max_message_bytes = 4u << 20;     // WebSocket message and HTTP body limit
  std::size_t max_connections = 10000;          // open connections in total (--max-connections; 0 = none)
  std::size_t max_connections_per_client = 64;  // from one remote address (--max-connections-per-client)
  // Open /dashboard/stream/ viewers in all and from one remote address; past either, a 503.
  std::size_t max_dashboard_streams = 32;
  std::size_t max_dashboard_streams_per_client = 4;
  // A connection (HTTP or WebSocket) idle this long is closed (--http-idle-timeout); a WebSocket
  // is pinged at half of it and closed when nothing, not even the pong, came back by then.
  std::chrono::seconds http_idle_timeout{120};
  // A request's headers must arrive within this of its first byte (--http-header-timeout).
  std::chrono::seconds http_header_timeout{10};
  // The farm closed a WebSocket and the peer did not answer the close within this: drop the TCP.
  std::chrono::seconds ws_close_timeout{5};
  // Threads running the io_context (--gateway-io-threads); they never busy-poll (measured: it cost
  // more than it saved). One by default: a second made each request's hand-overs dearer (measured:
  // docs/benchmarks.md "P4 and P5 re-measured").
  std::size_t io_threads = 1;
  std::size_t max_blocking_threads = 256;  // the pool that runs the dialects' blocking handle()
  std::chrono::microseconds spin{200};     // the pool threads' clients busy-poll for the farm's reply (--spin-us)
  RestOptions rest;
  GymServerOptions gym_server;  // its files go under rest.monitor_dir unless set
  AccessPolicy access;          // token and allowed origins; the gateway's own clients use the token too
};

class Gateway {
 public:
  explicit Gateway(GatewayOptions options);
  ~Gateway();  // stops
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Binds and starts accepting; returns the bound main port (-1 when off). No listener at all (every
  // port off): no thread starts. Throws with a clear message on failure.
  int start();
  // The bound ports once started (-1 when off).
  int gymnasium_port() const;
  int gym_server_port() const;
  int gym_server_files_port() const;
  int metrics_port() const;
  // Stops accepting, ends every connection, waits for the I/O and pool threads.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gymfarm::frontends
