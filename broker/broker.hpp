#pragma once
// The broker: a ZeroMQ ROUTER for clients, a ROUTER for workers, the pool and the routing table.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "broker/clock.hpp"

namespace zmq {
class context_t;
}

namespace gymfarm::broker {

struct BrokerOptions {
  std::size_t workers = 4;      // the warm pool: started at once, never retired
  std::size_t max_workers = 0;  // the pool grows on demand up to this (0: what memory allows, <= 4096)
  std::chrono::milliseconds worker_idle_grace{60000};  // a worker beyond `workers` idle this long retires
  std::size_t envs_per_worker = 1;                     // instances one worker process hosts (throughput mode when > 1)
  std::string frontend = "tcp://127.0.0.1:5555";
  std::string runtime_dir = "/tmp";  // holds the workers' heartbeat (ipc) and link (unix) sockets
  std::string worker_exe = "gymfarm-worker";
  std::chrono::microseconds spin{200};  // busy-poll this long after activity before sleeping (0: never)
  bool zygote = true;                   // fork workers from a pre-imported parent (false: start each fresh)
  std::string python;                   // interpreter whose site-packages workers use
  std::vector<std::string> imports;     // modules every worker imports before serving
  std::chrono::milliseconds step_timeout{10000};
  std::chrono::milliseconds make_timeout{60000};
  std::chrono::milliseconds heartbeat_timeout{3000};
  // heartbeats per second from the whole pool: past it workers beat less often than every 100 ms
  // (heartbeats.hpp), and a silence kills one after max(heartbeat_timeout, 5 periods); 0 = no bound
  std::size_t heartbeat_rate = 2000;
  std::chrono::milliseconds startup_timeout{60000};
  std::chrono::milliseconds drain_timeout{5000};
  // close instances of sessionless clients (the gateway's REST dialects) without requests for this long; 0 = never
  std::chrono::milliseconds idle_ttl{30 * 60 * 1000};
  // a TCP client whose hello asked for a lease and that sends nothing (requests or pings) for this
  // long has its session ended and its instances closed
  std::chrono::milliseconds session_lease{10000};
  std::size_t max_queue_per_instance = 1024;
  long long max_message_bytes = 256LL << 20;
  // the slab of an instance made over the local socket with `shm` (docs/protocol.md "Shared
  // memory"): its size in bytes; 0 = no slabs, every request over the socket
  std::size_t shm_slab_bytes = std::size_t{4} << 20;
  bool verbose = false;
  std::string token;  // when set, a client must say hello with it before anything else
  // CURVE (ZeroMQ's encryption and authentication) on the TCP/IPC frontend: when curve_secret_key
  // (the server's secret key, z85, 40 characters) is set, the frontend is a CURVE server and admits
  // only clients whose public key (z85) is in curve_client_keys. The gateway's inproc path and the
  // local unix socket are unaffected.
  std::string curve_secret_key;
  std::vector<std::string> curve_client_keys;
  std::size_t max_instances_per_client = 0;  // 0 = no limit
  std::size_t max_sessions = 100000;  // clients' sessions kept; past it an idle TCP session makes room (sessions.hpp)
  std::size_t max_inflight_per_client = 4096;  // requests queued or running per client; 0 = no limit
  unsigned long long worker_memory_limit = 0;  // bytes of address space per worker; 0 = none
  unsigned long long worker_cpu_limit = 0;     // CPU seconds per worker process; 0 = none
  std::size_t restart_budget = 0;              // worker restarts allowed per restart_window; 0 = max(32, 4 x workers)
  std::chrono::milliseconds restart_window{60000};
};

class Broker {
 public:
  // `clock`: what every deadline and timer reads (null: a RunningClock, steady time that stands
  // still while the broker is stopped; clock.hpp).
  explicit Broker(BrokerOptions options, std::unique_ptr<Clock> clock = nullptr);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // Blocks SIGCHLD, SIGTERM, SIGINT and SIGHUP in the calling thread; call before any thread exists,
  // so that the broker receives them through its signal fd.
  static void block_signals();

  // Binds the sockets (throws with a clear message on failure); returns the resolved frontend endpoint.
  // The frontend also listens on kInprocFrontend, for clients in this process on context().
  std::string bind();
  static constexpr const char* kInprocFrontend = "inproc://gymfarm-frontend";
  zmq::context_t& context();
  // Runs until SIGTERM/SIGINT or until the pool cannot start. `on_ready` is called once, when every
  // worker first reports ready; before it, `on_progress` on every turn of the loop with the warm
  // workers ready so far and their number (`gymfarm start` shows it). Returns the process exit code.
  using Progress = std::function<void(std::size_t ready, std::size_t warm)>;
  int run(const std::function<void()>& on_ready, const Progress& on_progress = {});

 private:
  struct Impl;
  static void configure_curve(Impl& d);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gymfarm::broker
