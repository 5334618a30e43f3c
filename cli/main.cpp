// gymfarm: start, stop and inspect a farm. See `gymfarm --help` and docs/operations.md.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "broker/broker.hpp"
#include "cli/runtime_dir.hpp"
#include "cli/start_progress.hpp"
#include "cli/stderr_relay.hpp"
#include "client/client.hpp"
#include "frontends/gateway.hpp"
#include "protocol/log.hpp"
#include "protocol/token.hpp"

namespace fs = std::filesystem;
using gymfarm::protocol::Value;
namespace protocol = gymfarm::protocol;
namespace frontends = gymfarm::frontends;

namespace {

constexpr const char* kHelp = R"(gymfarm - a multi-process farm of isolated Gymnasium environments

usage:
  gymfarm start [options]    run a farm (foreground unless --detach)
  gymfarm status [options]   print the farm's workers: pid, state, instance, its owner (session
                             #N:NAME@VIA), env id, steps, RSS
  gymfarm status --watch [--interval SEC]
                             redraw that table every SEC seconds (default 2) until Ctrl-C (exit 0)
                             or until the farm goes away (exit 3)
  gymfarm stop [options]     stop a running farm gracefully (drain, close envs, stop workers)
  gymfarm cluster up|status|down ...
                             farms on a Ray cluster (docs/scaling.md; gymfarm cluster --help)
  gymfarm nodes init|run|file|status ...
                             one farm per node under Slurm or Kubernetes (docs/scaling.md;
                             gymfarm nodes --help)
  gymfarm --help             this text

options for start:
  --workers N            the warm pool: workers started at once and kept (default 4); a make
                         beyond them forks another worker on demand
  --max-workers M        the most workers the pool grows to; past them make fails with
                         capacity_exhausted (default: what memory allows at 8 MB a worker,
                         at most 4096)
  --worker-idle-grace SEC
                         a worker beyond --workers that stays idle this long retires (default 60)
  --no-zygote            start every worker as a fresh process (slower: each loads Python, numpy
                         and gymnasium itself) instead of forking it from a pre-imported zygote
  --envs-per-worker K    throughput mode: each worker hosts up to K envs and steps a batch's envs
                         in one message; a crash or timeout takes all K envs of that worker with
                         it (default 1: one env per process, full isolation)
  --spin-us US           after activity, the broker, the workers and the gateway busy-poll this many
                         microseconds for the next message before sleeping, while messages keep
                         coming that fast: lower latency for some CPU (default 200; 0 never spins,
                         for crowded or battery-powered hosts)
  --host ADDR            address to listen on (default 127.0.0.1)
  --native-port PORT     native protocol port, ZeroMQ + MessagePack (default 5555; 0 picks a free one)
  --port PORT            HTTP/WebSocket gateway port: Gymie WebSocket at /gym and gym-http-api at /v1/
                         (default 5000; 0 picks a free one; -1 off); with every HTTP port off no
                         gateway thread starts
  --gymnasium-http-port P
                         gymnasium-http-api dialect port (default 40004; 0 picks a free one; -1 off)
  --gym-server-port P    gym-server dialect port: its API at /v1/ and its artifacts (rendered frames,
                         monitor files, render.html) on the same port (default -1: off; 0 picks one)
  --gym-server-files-port P
                         gym-server's artifacts alone on a second port, as its port 8000 served them
                         (default -1: off; 0 picks one)
  --metrics-port P       serve only /metrics (Prometheus), /healthz and /readyz on their own port
                         (default -1: off; 0 picks one); every HTTP port answers them too
  --gym-server-max-frames N
                         rendered frames kept per gym-server instance (also at most 64 MiB of them);
                         past them the oldest is deleted (default 1000)
  --monitor-dir DIR      where gym-http-api monitor output goes; a client's directory is mapped
                         inside it (default RUNTIME-DIR/monitor)
  --allow-shutdown       let POST /v1/shutdown/ stop the farm (default: 403)
  --gymie-shared-instances
                         Gymie's shared, never-reaped env table: envs made over a WebSocket outlive
                         the connection (default: closed when it drops)
  --gymie-raw-infinity   write infinite Box bounds in Gymie space info as Infinity (default: the
                         dtype's largest finite value, as gym 0.17 did)
  --python PATH          interpreter whose site-packages the workers use (default: the project venv);
                         PYTHONPATH in the environment reaches the workers too
  --import MODULE        every worker imports MODULE before serving (repeatable): custom envs it
                         registers become available
  --step-timeout SEC     deadline of reset/step/close/render...; past it the client gets `timeout` and
                         the worker is killed and replaced (default 10)
  --make-timeout SEC     deadline of make (default 60)
  --worker-memory-limit MB
                         address-space limit of each worker (setrlimit); an env that goes past it
                         gets `resource_limit` (default: none)
  --worker-cpu-limit SEC CPU seconds each worker process may use; past them it is killed and the
                         request gets `resource_limit` (default: none)
  --restart-budget N     worker restarts allowed per --restart-window; past them restarts wait
                         (default max(32, 4 x workers)); each slot also backs off 0.1 s..10 s
  --restart-window SEC   the budget's sliding window (default 60)
  --shm-slab-kb KB       shared memory per instance for clients on this host: step and reset travel
                         through it, without the broker (default 4096; pages are used only as
                         observations fill them; 0 = off, every request over the socket)
  --heartbeat-rate N     heartbeats per second from the whole pool; a larger pool beats less
                         often than every 100 ms (default 2000; 0 = every 100 ms at any size)
  --max-instances-per-client N
                         instances one client connection may hold (default 0 = no limit)
  --max-inflight-per-client N
                         requests one client may have queued or running (default 4096; 0 = none)
  --max-sessions N       client sessions (hellos) the farm keeps; past them the least recently
                         active TCP session that holds nothing makes room (default 100000)
  --idle-ttl SEC         close instances made through the gateway (REST has no sessions) that got
                         no request for SEC seconds (default 1800; 0: never)
  --session-lease SEC    a native TCP client that asked for a lease (the Python client does) and
                         sends nothing, not even its pings, for SEC seconds loses its session and
                         its instances (default 10; 0: no leases)
  --detach               return once every worker is ready and leave the farm running
  --runtime-dir DIR      pid file, log and worker sockets (default $XDG_RUNTIME_DIR/gymfarm or
                         /tmp/gymfarm-UID)
  --require-token        require the token on loopback too (a non-loopback --host always does)
  --token-file PATH      use the token in PATH instead of a new random one
  --allow-origin ORIGIN  let web pages from ORIGIN (e.g. http://myapp.example:8080) use the gateway
                         (repeatable; by default only pages served from localhost may)
  --insecure-no-token    allow --host other than loopback without a token (not recommended)
  --curve-secret-file PATH
                         encrypt and authenticate the native port with ZeroMQ CURVE: the farm's
                         secret key (z85, 40 characters) in PATH, a file only its owner may read
  --curve-clients-file PATH
                         with --curve-secret-file: the client public keys (z85, one a line; # comments)
                         the native port admits; every other client is refused
  --http-idle-timeout SEC
                         the gateway closes an HTTP connection with no request for SEC seconds, and a
                         WebSocket whose peer sent nothing, not even a pong to its ping, for SEC
                         (default 120)
  --http-header-timeout SEC
                         a request's headers must arrive within SEC of its first byte (default 10)
  --max-connections N    open gateway connections in total, both ports; more are refused with a
                         503 and closed (default 10000; 0 = no limit)
  --max-connections-per-client N
                         open gateway connections from one remote address; more are refused with a
                         503 and closed (default 64; 0 = no limit)
  --gateway-io-threads N threads that run the gateway's sockets (HTTP, WebSocket; default 1, 1-64);
                         the dialects' work runs on its pool of blocking threads, not on these
  --dashboard-streams N  live frame streams the dashboard may hold open (GET /dashboard/stream/), in
                         all; more are refused with a 503 (default 32, 1-4096)
  --dashboard-streams-per-client N
                         the same, from one remote address (default 4, 1-4096)
  --verbose              log more
  --log-format FORMAT    text (default): `[gymfarm] ...` lines; json: one JSON object a line with ts,
                         level, msg and fields, and what workers write to stderr (env output) wrapped
                         as {"msg": LINE, "source": "stderr"}; start-up progress is then JSON too

options for status and stop:
  --host ADDR, --native-port PORT, --runtime-dir DIR   which farm (defaults as above)
  --curve-secret-file PATH   a CURVE farm's secret key: connect with the farm's own keypair
  --log-format FORMAT        text or json, for their error lines

SIGTERM or SIGINT stop a foreground farm gracefully; it exits 0.
)";

struct Options {
  std::string command;
  gymfarm::broker::BrokerOptions broker;
  std::string host = "127.0.0.1";
  int port = 5555;
  int http_port = 5000;
  frontends::GatewayOptions gateway;
  bool detach = false;
  bool insecure = false;
  bool require_token = false;
  std::string token_file;
  std::string curve_secret_file;
  std::string curve_clients_file;
  std::string curve_public_key;  // derived from the secret key, for the ready banner
  std::string runtime_dir;
  bool watch = false;                        // status --watch
  std::chrono::milliseconds interval{2000};  // status --watch --interval
};

// The CLI's own error and warning lines: `gymfarm: ...` as text, or JSON (--log-format).
void say(protocol::LogLevel level, const std::string& msg, protocol::LogFields fields = {}) {
  protocol::log_line(level, msg, fields, "gymfarm: ");
}

[[noreturn]] void die(const std::string& msg) {
  say(protocol::LogLevel::Error, msg);
  std::exit(2);  // NOLINT(concurrency-mt-unsafe): flags are parsed before any thread starts
}

std::chrono::milliseconds seconds_arg(const std::string& flag, const std::string& v) {
  try {
    std::size_t pos = 0;
    const double s = std::stod(v, &pos);
    if (pos != v.size() || s <= 0) throw std::invalid_argument(v);
    return std::chrono::milliseconds(static_cast<long long>(s * 1000));
  } catch (const std::exception&) {
    die(flag + " needs a positive number of seconds, got '" + v + "'");
  }
}

long long int_arg(const std::string& flag, const std::string& v, long long lo, long long hi) {
  try {
    std::size_t pos = 0;
    const long long n = std::stoll(v, &pos);
    if (pos != v.size() || n < lo || n > hi) throw std::invalid_argument(v);
    return n;
  } catch (const std::exception&) {
    die(flag + " needs an integer from " + std::to_string(lo) + " to " + std::to_string(hi) + ", got '" + v + "'");
  }
}

std::string exe_dir() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "." : p.parent_path().string();
}

std::string default_runtime_dir() {
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x) return std::string(x) + "/gymfarm";
  return "/tmp/gymfarm-" + std::to_string(getuid());
}

Options parse(int argc, char** argv) {
  Options o;
  if (argc < 2) die("missing command; try `gymfarm --help`");
  o.command = argv[1];
  if (o.command == "--help" || o.command == "-h" || o.command == "help") {
    std::fputs(kHelp, stdout);
    std::exit(0);  // NOLINT(concurrency-mt-unsafe): flags are parsed before any thread starts
  }
  if (o.command != "start" && o.command != "stop" && o.command != "status") {
    die("unknown command '" + o.command + "'; try `gymfarm --help`");
  }
  for (int i = 2; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(k + " needs a value");
      return argv[++i];
    };
    if (k == "--help" || k == "-h") {
      std::fputs(kHelp, stdout);
      std::exit(0);  // NOLINT(concurrency-mt-unsafe): flags are parsed before any thread starts  //
                     // NOLINT(concurrency-mt-unsafe): flags are parsed before any thread starts
    } else if (k == "--workers") o.broker.workers = static_cast<std::size_t>(int_arg(k, value(), 1, 4096));
    else if (k == "--no-zygote") o.broker.zygote = false;
    else if (k == "--spin-us") o.broker.spin = std::chrono::microseconds(int_arg(k, value(), 0, 100000));
    else if (k == "--envs-per-worker")
      o.broker.envs_per_worker = static_cast<std::size_t>(int_arg(k, value(), 1, 1024));
    else if (k == "--host") o.host = value();
    else if (k == "--native-port") o.port = static_cast<int>(int_arg(k, value(), 0, 65535));
    else if (k == "--python") o.broker.python = value();
    else if (k == "--port") o.http_port = static_cast<int>(int_arg(k, value(), -1, 65535));
    else if (k == "--gym-server-port") o.gateway.gym_server_port = static_cast<int>(int_arg(k, value(), -1, 65535));
    else if (k == "--metrics-port") o.gateway.metrics_port = static_cast<int>(int_arg(k, value(), -1, 65535));
    else if (k == "--gym-server-files-port")
      o.gateway.gym_server_files_port = static_cast<int>(int_arg(k, value(), -1, 65535));
    else if (k == "--gym-server-max-frames")
      o.gateway.gym_server.max_frames = static_cast<std::size_t>(int_arg(k, value(), 1, 1 << 20));
    else if (k == "--gymnasium-http-port") o.gateway.gymnasium_port = static_cast<int>(int_arg(k, value(), -1, 65535));
    else if (k == "--monitor-dir") o.gateway.rest.monitor_dir = value();
    else if (k == "--allow-shutdown") o.gateway.rest.allow_shutdown = true;
    else if (k == "--gymie-shared-instances") o.gateway.gymie.shared_instances = true;
    else if (k == "--gymie-raw-infinity") o.gateway.gymie.raw_infinity = true;
    else if (k == "--import") o.broker.imports.push_back(value());
    else if (k == "--step-timeout") o.broker.step_timeout = seconds_arg(k, value());
    else if (k == "--make-timeout") o.broker.make_timeout = seconds_arg(k, value());
    else if (k == "--worker-memory-limit")
      o.broker.worker_memory_limit = static_cast<unsigned long long>(int_arg(k, value(), 64, 1 << 30)) << 20;
    else if (k == "--worker-cpu-limit")
      o.broker.worker_cpu_limit = static_cast<unsigned long long>(int_arg(k, value(), 1, 1LL << 31));
    else if (k == "--max-workers") o.broker.max_workers = static_cast<std::size_t>(int_arg(k, value(), 1, 1 << 16));
    else if (k == "--worker-idle-grace")
      o.broker.worker_idle_grace = std::chrono::seconds(int_arg(k, value(), 0, 86400));
    else if (k == "--max-sessions") o.broker.max_sessions = static_cast<std::size_t>(int_arg(k, value(), 1, 1 << 24));
    else if (k == "--max-instances-per-client")
      o.broker.max_instances_per_client = static_cast<std::size_t>(int_arg(k, value(), 0, 1 << 20));
    else if (k == "--max-inflight-per-client")
      o.broker.max_inflight_per_client = static_cast<std::size_t>(int_arg(k, value(), 0, 1 << 24));
    else if (k == "--restart-budget")
      o.broker.restart_budget = static_cast<std::size_t>(int_arg(k, value(), 1, 1 << 20));
    else if (k == "--restart-window") o.broker.restart_window = seconds_arg(k, value());
    else if (k == "--heartbeat-rate")
      o.broker.heartbeat_rate = static_cast<std::size_t>(int_arg(k, value(), 0, 1 << 20));
    else if (k == "--shm-slab-kb") {
      const auto kb = int_arg(k, value(), 0, 1 << 20);
      if (kb > 0 && kb < 64) die("--shm-slab-kb needs 0 (off) or at least 64, got " + std::to_string(kb));
      o.broker.shm_slab_bytes = static_cast<std::size_t>(kb) * 1024;
    } else if (k == "--idle-ttl") {
      const std::string v = value();
      o.broker.idle_ttl = v == "0" ? std::chrono::milliseconds(0) : seconds_arg(k, v);
    } else if (k == "--session-lease") {
      const std::string v = value();
      o.broker.session_lease = v == "0" ? std::chrono::milliseconds(0) : seconds_arg(k, v);
    } else if (k == "--runtime-dir") o.runtime_dir = value();
    else if (k == "--detach") o.detach = true;
    else if (k == "--insecure-no-token") o.insecure = true;
    else if (k == "--require-token") o.require_token = true;
    else if (k == "--token-file") o.token_file = value();
    else if (k == "--curve-secret-file") o.curve_secret_file = value();
    else if (k == "--curve-clients-file") o.curve_clients_file = value();
    else if (k == "--allow-origin") o.gateway.access.allowed_origins.push_back(value());
    else if (k == "--verbose") o.broker.verbose = true;
    else if (k == "--log-format") {
      protocol::LogFormat f{};
      const std::string v = value();
      if (!protocol::parse_log_format(v, f)) die("--log-format needs text or json, got '" + v + "'");
      protocol::set_log_format(f);
    } else if (k == "--watch") o.watch = true;
    else if (k == "--interval") o.interval = seconds_arg(k, value());
    else if (k == "--http-idle-timeout")
      o.gateway.http_idle_timeout = std::chrono::seconds(int_arg(k, value(), 1, 86400));
    else if (k == "--http-header-timeout")
      o.gateway.http_header_timeout = std::chrono::seconds(int_arg(k, value(), 1, 86400));
    else if (k == "--max-connections")
      o.gateway.max_connections = static_cast<std::size_t>(int_arg(k, value(), 0, 1 << 24));
    else if (k == "--max-connections-per-client")
      o.gateway.max_connections_per_client = static_cast<std::size_t>(int_arg(k, value(), 0, 1 << 24));
    else if (k == "--gateway-io-threads") o.gateway.io_threads = static_cast<std::size_t>(int_arg(k, value(), 1, 64));
    else if (k == "--dashboard-streams")
      o.gateway.max_dashboard_streams = static_cast<std::size_t>(int_arg(k, value(), 1, 4096));
    else if (k == "--dashboard-streams-per-client")
      o.gateway.max_dashboard_streams_per_client = static_cast<std::size_t>(int_arg(k, value(), 1, 4096));
    else die("unknown option '" + k + "'; try `gymfarm --help`");
  }
  if (o.runtime_dir.empty()) o.runtime_dir = default_runtime_dir();
  if (o.watch && o.command != "status") die("--watch goes with status");
  return o;
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1" || host == "[::1]";
}

std::string native_endpoint(const Options& o, int port) {
  const std::string host = o.host == "localhost" ? "127.0.0.1" : o.host;
  return "tcp://" + host + ":" + std::to_string(port);
}

// Names inside the runtime directory.
std::string pid_file(const Options& o) { return "farm-" + std::to_string(o.port) + ".pid"; }
std::string log_file(const Options& o) { return "farm-" + std::to_string(o.port) + ".log"; }

// Fails fast when --python is missing or is not the Python version the worker embeds.
std::string resolve_python(const std::string& requested) {
  std::string py = requested;
  if (py.empty()) {
    py = GYMFARM_DEFAULT_PYTHON;
    if (access(py.c_str(), X_OK) != 0) return "";  // workers use the embedded interpreter's own prefix
  }
  if (access(py.c_str(), X_OK) != 0) die("--python " + py + ": not an executable file");
  const std::string cmd = "'" + py + "' -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])' 2>/dev/null";
  std::string version;
  // NOLINTNEXTLINE(cert-env33-c): asks the operator's chosen interpreter (--python) for its version
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[64] = {0};
    if (fgets(buf, sizeof buf, p)) version = buf;
    pclose(p);
  }
  while (!version.empty() && (version.back() == '\n' || version.back() == '\r')) version.pop_back();
  if (version != GYMFARM_PYTHON_VERSION) {
    die("--python " + py + " is Python " + (version.empty() ? "?" : version) + ", but the workers embed Python " +
        GYMFARM_PYTHON_VERSION + "; use an interpreter or venv of that version");
  }
  return fs::absolute(py).string();
}

// The token from --token-file, or a new random one written owner-only to RUNTIME-DIR/token (a
// fresh file: O_EXCL, O_NOFOLLOW, 0600; a planted one is refused, never followed or read).
std::string load_or_make_token(const Options& o, const gymfarm::cli::RuntimeDir& dir) {
  if (!o.token_file.empty()) {
    std::ifstream f(o.token_file);
    std::string t;
    if (!(f >> t) || t.size() < 16) die("--token-file " + o.token_file + ": needs a token of at least 16 characters");
    return t;
  }
  std::string t = gymfarm::protocol::new_token();
  std::string err;
  const int fd = dir.create_file("token", err);
  if (fd < 0) die(err);
  if (write(fd, t.data(), t.size()) != static_cast<ssize_t>(t.size())) die("cannot write " + dir.path_of("token"));
  close(fd);
  return t;
}

// --curve-secret-file: a regular file of this user that no one else may read or write (never
// through a symlink), holding one z85 key; --curve-clients-file: z85 public keys, one a line.
// Sets the broker's keys and the public key the banner shows; exit 2 with the reason otherwise.
// The secret key in --curve-secret-file and its public key; exit 2 when the file is not ours and
// owner-only, or holds no key.
std::pair<std::string, std::string> read_curve_secret(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) die("--curve-secret-file " + path + ": " + std::generic_category().message(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    die("--curve-secret-file " + path + ": not a regular file");
  }
  if (st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
    close(fd);
    die("--curve-secret-file " + path + ": others may read it; make it yours and owner-only (chmod 600)");
  }
  std::string text(256, '\0');
  const ssize_t n = read(fd, text.data(), text.size());
  close(fd);
  std::string secret;
  std::istringstream(text.substr(0, n > 0 ? static_cast<std::size_t>(n) : 0)) >> secret;
  std::array<char, 41> pub{};
  if (secret.size() != 40 || zmq_curve_public(pub.data(), secret.c_str()) != 0)
    die("--curve-secret-file " + path + ": needs one z85 CURVE secret key (40 characters)");
  return {secret, pub.data()};
}

void load_curve_keys(Options& o) {
  if (o.curve_secret_file.empty() && o.curve_clients_file.empty()) return;
  if (o.curve_secret_file.empty() || o.curve_clients_file.empty())
    die("--curve-secret-file and --curve-clients-file go together");
  if (zmq_has("curve") == 0) die("this libzmq was built without CURVE; --curve-secret-file cannot be used");
  auto [secret, pub] = read_curve_secret(o.curve_secret_file);
  o.broker.curve_secret_key = secret;
  o.curve_public_key = pub;
  // Whoever holds the farm's secret key may connect as a client with it (`gymfarm status` does):
  // the key admits nothing its holder could not take anyway.
  o.broker.curve_client_keys.push_back(pub);
  std::ifstream f(o.curve_clients_file);
  if (!f) die("--curve-clients-file " + o.curve_clients_file + ": cannot read it");
  std::string line;
  for (int no = 1; std::getline(f, line); ++no) {
    std::string key;
    std::istringstream(line) >> key;
    if (key.empty() || key[0] == '#') continue;
    std::array<uint8_t, 32> raw{};
    if (key.size() != 40 || zmq_z85_decode(raw.data(), key.c_str()) == nullptr)
      die("--curve-clients-file " + o.curve_clients_file + ":" + std::to_string(no) + ": not a z85 public key");
    o.broker.curve_client_keys.push_back(key);
  }
  if (o.broker.curve_client_keys.size() < 2)
    die("--curve-clients-file " + o.curve_clients_file + ": no client key in it");
}

// start: the runtime directory, created 0700 when absent, refused when another user could have
// planted it or what is in it (cli/runtime_dir.hpp); exit 2 with the reason.
gymfarm::cli::RuntimeDir prepare_runtime_dir(const Options& o) {
  gymfarm::cli::RuntimeDir dir;
  const std::string err = gymfarm::cli::RuntimeDir::open(
      o.runtime_dir, {.create = true, .private_only = o.runtime_dir == default_runtime_dir()}, dir);
  if (!err.empty()) die(err);
  return dir;
}

// stop and status: the same checks, nothing created; a missing directory comes back closed.
gymfarm::cli::RuntimeDir find_runtime_dir(const Options& o) {
  gymfarm::cli::RuntimeDir dir;
  const std::string err = gymfarm::cli::RuntimeDir::open(
      o.runtime_dir, {.create = false, .private_only = o.runtime_dir == default_runtime_dir()}, dir);
  if (!err.empty()) die(err);
  return dir;
}

// A small file the farm wrote in its runtime directory (pid, token): only a regular file of ours,
// never through a symlink; a planted one is reported and ignored.
std::string read_trusted(const gymfarm::cli::RuntimeDir& dir, const std::string& name) {
  if (!dir.is_open()) return "";
  std::string err;
  const auto data = dir.read_file(name, 4096, err);
  if (!err.empty()) say(protocol::LogLevel::Warn, "ignoring " + err);
  return data.value_or("");
}

int cmd_start(Options o) {
  using gymfarm::cli::StartProgress;
  const auto started = StartProgress::Clock::now();  // "workers N/N ready in X s" counts from here
  const gymfarm::cli::RuntimeDir dir = prepare_runtime_dir(o);
  o.runtime_dir = dir.path();
  std::string token;
  if (!is_loopback(o.host) && o.insecure) {
    say(protocol::LogLevel::Warn, "WARNING: listening on " + o.host + " WITHOUT authentication (--insecure-no-token)",
        {{"event", "insecure_no_token"}, {"host", o.host}});
    o.gateway.access.any_host = true;
  } else if (!is_loopback(o.host) || o.require_token || !o.token_file.empty()) {
    token = load_or_make_token(o, dir);
  }
  o.broker.token = token;
  o.gateway.access.token = token;
  load_curve_keys(o);
  o.broker.python = resolve_python(o.broker.python);
  o.broker.runtime_dir = o.runtime_dir;
  o.broker.frontend = native_endpoint(o, o.port);
  // GYMFARM_WORKER_EXE: workers from another build (the TSan run pairs a TSan farm with plain workers)
  const char* worker_exe = std::getenv("GYMFARM_WORKER_EXE");
  o.broker.worker_exe = worker_exe && *worker_exe ? worker_exe : exe_dir() + "/gymfarm-worker";
  if (access(o.broker.worker_exe.c_str(), X_OK) != 0) die("cannot find " + o.broker.worker_exe);

  int ready_pipe[2] = {-1, -1};
  const std::string log_path = dir.path_of(log_file(o));
  if (o.detach) {
    std::string err;
    const int log_fd = dir.create_file(log_file(o), err);  // a fresh file, never a planted one
    if (log_fd < 0) die(err);
    if (pipe(ready_pipe) != 0) die("pipe failed");
    const pid_t child = fork();
    if (child < 0) die("fork failed");
    if (child > 0) {
      close(ready_pipe[1]);
      // The child sends "progress READY WARM" lines while the pool comes up, then "ready " and the
      // banner; the progress is shown here as the foreground farm shows it.
      StartProgress progress(StartProgress::log_is_terminal(), started);
      std::string msg;
      bool banner = false;
      std::size_t ready = 0;
      std::size_t warm = o.broker.workers;
      char buf[512];
      while (true) {
        pollfd pfd{ready_pipe[0], POLLIN, 0};
        const int r = poll(&pfd, 1, 200);
        if (r < 0 && errno != EINTR) break;
        if (r > 0) {
          const ssize_t n = read(ready_pipe[0], buf, sizeof buf);
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0) break;
          msg.append(buf, static_cast<std::size_t>(n));
        }
        while (!banner) {
          if (msg.rfind("ready ", 0) == 0) {
            banner = true;
            break;
          }
          const std::size_t nl = msg.find('\n');
          if (msg.rfind("progress ", 0) != 0 || nl == std::string::npos) break;
          std::size_t a = 0, b = 0;
          const char* end = msg.data() + nl;
          const auto first = std::from_chars(msg.data() + 9, end, a);  // after "progress "
          if (first.ec == std::errc() && first.ptr < end && std::from_chars(first.ptr + 1, end, b).ec == std::errc())
            ready = a, warm = b;
          msg.erase(0, nl + 1);
        }
        if (!banner) progress.update(ready, warm, StartProgress::Clock::now());
      }
      if (msg.rfind("ready ", 0) != 0) {
        progress.abandon();
        say(protocol::LogLevel::Error, "the farm did not start; its log (" + log_path + ") ends with:");
        std::string text;  // read back through the fd the log was created with
        char chunk[4096];
        ssize_t got;
        while (text.size() < (1u << 20) &&
               (got = pread(log_fd, chunk, sizeof chunk, static_cast<off_t>(text.size()))) > 0)
          text.append(chunk, static_cast<std::size_t>(got));
        close(log_fd);
        std::istringstream f(text);
        std::string line;
        std::vector<std::string> lines;
        while (std::getline(f, line)) lines.push_back(line);
        for (std::size_t i = lines.size() > 20 ? lines.size() - 20 : 0; i < lines.size(); ++i)
          protocol::log_line(protocol::LogLevel::Error, "  " + lines[i], {{"source", "farm_log"}}, "");
        return 1;
      }
      progress.finish(warm, StartProgress::Clock::now());
      close(log_fd);
      std::printf("%s", msg.substr(6).c_str());
      std::printf("  log:       %s\n  stop with: gymfarm stop --native-port %d\n", log_path.c_str(), o.port);
      return 0;
    }
    close(ready_pipe[0]);
    setsid();
    const int fd = log_fd;
    const int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      close(fd);
    }
    if (devnull >= 0) {
      dup2(devnull, STDIN_FILENO);
      close(devnull);
    }
    fcntl(ready_pipe[1], F_SETFD, FD_CLOEXEC);
  }

  gymfarm::broker::Broker::block_signals();
  // --log-format json: what workers and libraries write to stderr themselves becomes JSON lines too
  gymfarm::cli::StderrRelay relay;
  if (protocol::log_format() == protocol::LogFormat::Json) {
    if (const std::string err = relay.start(); !err.empty()) say(protocol::LogLevel::Warn, err);
  }
  int rc = 0;
  std::string pidfile;
  try {
    gymfarm::broker::Broker broker(o.broker);
    const std::string endpoint = broker.bind();
    const int port = std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
    if (o.port == 0) o.port = port;
    o.gateway.host = o.host;
    o.gateway.port = o.http_port;
    o.gateway.broker_endpoint = gymfarm::broker::Broker::kInprocFrontend;
    o.gateway.broker_context = &broker.context();
    o.gateway.spin = o.broker.spin;
    o.gateway.client_timeout = std::max(o.broker.step_timeout, o.broker.make_timeout) + std::chrono::seconds(30);
    if (o.gateway.rest.monitor_dir.empty()) o.gateway.rest.monitor_dir = o.runtime_dir + "/monitor";
    o.gateway.rest.monitor_dir = fs::absolute(o.gateway.rest.monitor_dir).string();
    if (o.gateway.gym_server.root.empty()) o.gateway.gym_server.root = o.gateway.rest.monitor_dir + "/gym-server";
    frontends::Gateway gateway(o.gateway);
    const int http_port = gateway.start();
    const std::string http_host = o.host == "localhost" ? "127.0.0.1" : o.host;
    const std::string token_line = token.empty()
                                       ? ""
                                       : "  token:     " + token + " (" +
                                             (o.token_file.empty() ? o.runtime_dir + "/token" : o.token_file) +
                                             "; send it as Bearer, http://:TOKEN@host, ?token= or GYMFARM_TOKEN)\n";
    const std::string curve_line = o.curve_public_key.empty()
                                       ? ""
                                       : "  curve:     server key " + o.curve_public_key + " (" +
                                             std::to_string(o.broker.curve_client_keys.size() - 1) +
                                             " client keys allowed)\n";
    auto url_line = [&](const char* label, int port, const std::string& rest) {
      return port < 0 ? std::string() : std::string(label) + "http://" + http_host + ":" + std::to_string(port) + rest;
    };
    const std::string rest_line = http_port < 0 ? "  rest:      off (--port -1)\n"
                                                : url_line("  rest:      ", http_port, "/v1/ (gym-http-api)\n");
    const std::string gymnasium_line = url_line("  gymnasium: ", gateway.gymnasium_port(),
                                                "/v1/ (gymnasium-http-api)\n");
    const std::string gym_server_line = url_line("  gym-server: ", gateway.gym_server_port(),
                                                 "/v1/ (gym-server; artifacts on the same port)\n") +
                                        url_line("  gym-server-files: ", gateway.gym_server_files_port(),
                                                 "/ (gym-server artifacts)\n") +
                                        url_line("  metrics:   ", gateway.metrics_port(), "/metrics (Prometheus)\n");
    // the last line: the Gymie URL, or that the port is off
    const std::string gymie_line = http_port < 0
                                       ? "  gymie:     off (--port -1)\n"
                                       : "  gymie:     ws://" + http_host + ":" + std::to_string(http_port) + "/gym\n";
    {
      std::string err;
      const int fd = dir.create_file(pid_file(o), err);
      if (fd < 0) throw std::runtime_error(err);
      const std::string text = std::to_string(getpid()) + "\n";
      const bool wrote = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
      close(fd);
      if (!wrote) throw std::runtime_error("cannot write " + dir.path_of(pid_file(o)));
      pidfile = pid_file(o);
    }
    protocol::log_info(
        "starting " + std::to_string(o.broker.workers) + " workers (pid " + std::to_string(getpid()) + ")",
        {{"event", "starting"}, {"workers", o.broker.workers}, {"pid", getpid()}});
    StartProgress progress(StartProgress::log_is_terminal(), started);
    std::size_t piped_ready = static_cast<std::size_t>(-1);  // the count last sent to a --detach parent
    auto on_progress = [&](std::size_t ready, std::size_t warm) {
      progress.update(ready, warm, StartProgress::Clock::now());
      if (ready_pipe[1] >= 0 && ready != piped_ready) {
        piped_ready = ready;
        const std::string line = "progress " + std::to_string(ready) + " " + std::to_string(warm) + "\n";
        if (write(ready_pipe[1], line.data(), line.size()) < 0) { /* parent gone; keep starting */
        }
      }
    };
    rc = broker.run(
        [&] {
          progress.finish(o.broker.workers, StartProgress::Clock::now());
          if (protocol::log_format() == protocol::LogFormat::Json) {
            protocol::log_info("farm ready", {{"event", "farm_ready"},
                                              {"pid", getpid()},
                                              {"workers", o.broker.workers},
                                              {"native", endpoint},
                                              {"http_port", http_port},
                                              {"gymnasium_port", gateway.gymnasium_port()}});
          }
          char text[4096];
          std::snprintf(text, sizeof text,
                        "gymfarm: farm ready with %zu workers (pid %d)\n%s%s  native:    %s\n%s%s%s%s",
                        o.broker.workers, getpid(), token_line.c_str(), curve_line.c_str(), endpoint.c_str(),
                        rest_line.c_str(), gymnasium_line.c_str(), gym_server_line.c_str(), gymie_line.c_str());
          if (o.detach) {
            const std::string msg = std::string("ready ") + text;
            if (write(ready_pipe[1], msg.data(), msg.size()) < 0) { /* parent gone; keep serving */
            }
            close(ready_pipe[1]);
            ready_pipe[1] = -1;
          }
          std::fputs(text, stdout);
          std::fflush(stdout);
        },
        on_progress);
    progress.abandon();  // the pool never came up (a no-op once it did)
    gateway.stop();
  } catch (const std::exception& e) {
    say(protocol::LogLevel::Error, e.what());
    rc = 1;
  }
  if (!pidfile.empty()) dir.remove_file(pidfile);
  return rc;
}

// A client of the farm for status and stop: the token from GYMFARM_TOKEN or the runtime directory.
std::unique_ptr<gymfarm::client::Client> connect_farm(const Options& o, std::chrono::milliseconds timeout) {
  gymfarm::client::ClientOptions co;
  co.timeout = timeout;
  co.name = "gymfarm-cli";
  if (const char* t = std::getenv("GYMFARM_TOKEN"); t && *t) {
    co.token = t;
  } else {
    std::istringstream(read_trusted(find_runtime_dir(o), "token")) >> co.token;
  }
  if (!o.curve_secret_file.empty()) {  // a CURVE farm: connect with its own keypair (load_curve_keys)
    auto [secret, pub] = read_curve_secret(o.curve_secret_file);
    co.curve_server_key = co.curve_public_key = pub;
    co.curve_secret_key = secret;
  }
  return std::make_unique<gymfarm::client::Client>(native_endpoint(o, o.port), co);
}

Value stats_of(const Options& o, std::chrono::milliseconds timeout) { return connect_farm(o, timeout)->stats(); }

std::string human_bytes(long long b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(b) / (1024.0 * 1024.0));
  return buf;
}

// Who made a worker's first instance, as one table cell: `#N:NAME@VIA` (the session's number, its
// hello's name and how it reached the farm), "-" for none.
std::string owner_cell(const Value& worker) {
  const Value* owners = worker.find("owners");
  if (owners == nullptr || !owners->is_array() || owners->as_array().empty()) return "-";
  const Value& o = owners->as_array().front();
  const Value* n = o.find("session");
  const Value* name = o.find("client");
  const Value* via = o.find("via");
  if (n == nullptr || !n->is_int()) return "-";
  std::string cell = "#" + std::to_string(n->as_int()) + ":" + (name && name->is_string() ? name->as_string() : "");
  cell += "@" + (via && via->is_string() ? via->as_string() : std::string("?"));
  std::replace(cell.begin(), cell.end(), ' ', '_');  // one cell, one word
  return cell.size() > 32 ? cell.substr(0, 31) + "~" : cell;
}

// The status table of one `stats` answer.
std::string status_table(const Value& s) {
  std::string out;
  char line[1024];
  auto add = [&](int n) { out.append(line, static_cast<std::size_t>(std::clamp(n, 0, int(sizeof line) - 1))); };
  // Steps and resets answered through shared-memory slabs never reach the broker as requests.
  const Value* shm = s.find("shm");
  const Value* slab_answers = shm != nullptr && shm->is_map() ? shm->find("answered") : nullptr;
  const auto through_slabs = slab_answers != nullptr && slab_answers->is_int() ? slab_answers->as_int() : 0;
  add(std::snprintf(line, sizeof line,
                    "farm pid %lld at %s: %lld instances, %llu requests served (%llu more through shared memory)\n",
                    static_cast<long long>(s.find("pid")->as_int()), s.find("frontend")->as_string().c_str(),
                    static_cast<long long>(s.find("instances")->as_int()),
                    static_cast<unsigned long long>(s.find("requests")->as_int()),
                    static_cast<unsigned long long>(through_slabs)));
  add(std::snprintf(line, sizeof line, "%-6s %-8s %-9s %-32s %-32s %-24s %10s %10s %10s %8s\n", "WORKER", "PID",
                    "STATE", "INSTANCE", "OWNER", "ENV ID", "STEPS", "RSS", "PSS", "RESTARTS"));
  for (const auto& w : s.find("workers")->as_array()) {
    const Value* pss = w.find("pss_bytes");
    add(std::snprintf(
        line, sizeof line, "%-6lld %-8lld %-9s %-32s %-32s %-24s %10lld %10s %10s %8lld\n",
        static_cast<long long>(w.find("worker")->as_int()), static_cast<long long>(w.find("pid")->as_int()),
        w.find("state")->as_string().c_str(),
        w.find("instance")->as_string().empty() ? "-" : w.find("instance")->as_string().c_str(), owner_cell(w).c_str(),
        w.find("env_id")->as_string().empty() ? "-" : w.find("env_id")->as_string().c_str(),
        static_cast<long long>(w.find("steps")->as_int()), human_bytes(w.find("rss_bytes")->as_int()).c_str(),
        human_bytes(pss ? pss->as_int() : 0).c_str(), static_cast<long long>(w.find("restarts")->as_int())));
    if (const Value* why = w.find("last_exit"); why && !why->as_string().empty() && w.find("restarts")->as_int() > 0) {
      add(std::snprintf(line, sizeof line, "       last restart: %s\n", why->as_string().c_str()));
    }
  }
  if (const Value* b = s.find("restart_budget")) {
    add(std::snprintf(line, sizeof line, "restarts: %lld in the last %.0f s (budget %lld)\n",
                      static_cast<long long>(b->find("used")->as_int()), b->find("window_s")->as_double(),
                      static_cast<long long>(b->find("limit")->as_int())));
  }
  if (const Value* total = s.find("restarts_total"); total && total->as_int() > 0) {
    // every restart since the farm started, by the class of its reason, and the last one's reason
    std::string by;
    if (const Value* m = s.find("restarts_by_reason"); m && m->is_map()) {
      for (const auto& [reason, n] : m->as_map())
        by += (by.empty() ? "" : ", ") + reason + " " + std::to_string(n.as_int());
    }
    out += "restarts since start: " + std::to_string(total->as_int()) + (by.empty() ? "" : " (" + by + ")") + "\n";
    if (const Value* last = s.find("last_restart"); last && last->is_map()) {
      add(std::snprintf(line, sizeof line, "last restart: %.1f s ago, worker %lld: %s\n",
                        last->find("seconds_ago")->as_double(), static_cast<long long>(last->find("worker")->as_int()),
                        last->find("reason")->as_string().c_str()));
    }
  }
  if (const Value* log = s.find("recent_restarts"); log && !log->as_array().empty()) {
    out += "recent restarts (newest last):\n";
    for (const auto& e : log->as_array()) {
      add(std::snprintf(line, sizeof line, "  %8.1f s ago  worker %-4lld %s\n", e.find("seconds_ago")->as_double(),
                        static_cast<long long>(e.find("worker")->as_int()), e.find("reason")->as_string().c_str()));
    }
  }
  return out;
}

// Set by SIGINT/SIGTERM while `status --watch` runs.
volatile std::sig_atomic_t g_watch_stop = 0;
extern "C" void on_watch_signal(int /*sig*/) { g_watch_stop = 1; }

// status --watch: the table every interval, redrawn in place on a terminal (ANSI: cursor home,
// clear screen), one after another, each after a blank line, when piped. Exit 0 on Ctrl-C or
// SIGTERM, 1 when no farm answers at first, 3 when the farm stops answering.
int watch_status(const Options& o) {
  struct sigaction sa {};
  sa.sa_handler = on_watch_signal;  // no SA_RESTART: a wait for the farm's answer ends at once
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  const bool terminal = isatty(STDOUT_FILENO) == 1;
  const std::string endpoint = native_endpoint(o, o.port);
  std::unique_ptr<gymfarm::client::Client> client;
  bool shown = false;
  while (!g_watch_stop) {
    Value s;
    try {
      if (!client) client = connect_farm(o, std::chrono::milliseconds(3000));
      s = client->stats();
    } catch (const std::exception& e) {
      if (g_watch_stop) break;
      if (!shown) {
        say(protocol::LogLevel::Error, "no farm answers at " + endpoint + " (" + e.what() + ")");
        return 1;
      }
      if (terminal) std::fputs("\n", stdout);
      std::fflush(stdout);
      say(protocol::LogLevel::Error, "the farm at " + endpoint + " went away (" + e.what() + "); stopped watching",
          {{"event", "farm_gone"}, {"endpoint", endpoint}});
      return 3;
    }
    char when[64];
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    localtime_r(&t, &tm);
    std::strftime(when, sizeof when, "%H:%M:%S", &tm);
    char head[160];
    std::snprintf(head, sizeof head, "%s  every %.1f s; Ctrl-C stops\n", when,
                  std::chrono::duration<double>(o.interval).count());
    const std::string text = status_table(s);
    if (terminal) {
      std::fputs("\033[H\033[2J", stdout);
    } else if (shown) {
      std::fputs("\n", stdout);
    }
    std::fputs(head, stdout);
    std::fputs(text.c_str(), stdout);
    std::fflush(stdout);
    shown = true;
    const auto until = std::chrono::steady_clock::now() + o.interval;
    while (!g_watch_stop && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
          std::chrono::milliseconds(50), until - std::chrono::steady_clock::now()));
    }
  }
  return 0;
}

int cmd_status(const Options& o) {
  if (o.watch) return watch_status(o);
  Value s;
  try {
    s = stats_of(o, std::chrono::milliseconds(3000));
  } catch (const std::exception& e) {
    say(protocol::LogLevel::Error, "no farm answers at " + native_endpoint(o, o.port) + " (" + e.what() + ")");
    return 1;
  }
  std::fputs(status_table(s).c_str(), stdout);
  return 0;
}

int cmd_stop(const Options& o) {
  pid_t pid = 0;
  std::istringstream(read_trusted(find_runtime_dir(o), pid_file(o))) >> pid;
  if (pid <= 0 || kill(pid, 0) != 0) {
    try {
      pid = static_cast<pid_t>(stats_of(o, std::chrono::milliseconds(3000)).find("pid")->as_int());
    } catch (const std::exception&) {
      say(protocol::LogLevel::Error, "no farm is running at " + native_endpoint(o, o.port));
      return 1;
    }
  }
  if (kill(pid, SIGTERM) != 0) {
    say(protocol::LogLevel::Error,
        "cannot signal pid " + std::to_string(pid) + ": " + std::generic_category().message(errno));
    return 1;
  }
  std::printf("gymfarm: stopping farm pid %d ...\n", pid);
  std::fflush(stdout);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (kill(pid, 0) == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (kill(pid, 0) == 0) {
    say(protocol::LogLevel::Error, "pid " + std::to_string(pid) + " did not stop within 30 s");
    return 1;
  }
  std::printf("gymfarm: stopped\n");
  return 0;
}

}  // namespace

int run(int argc, char** argv) {
  Options o = parse(argc, argv);
  if (o.command == "start") return cmd_start(o);
  if (o.command == "status") return cmd_status(o);
  return cmd_stop(o);
}

int main(int argc, char** argv) {
  // `gymfarm cluster ...` (Ray, docs/scaling.md) and `gymfarm nodes ...` (one farm per node under
  // another scheduler) are the Python package's: python -m gymfarm.ray / gymfarm.nodes
  const char* python_module = nullptr;
  if (argc > 1 && std::strcmp(argv[1], "cluster") == 0) python_module = "gymfarm.ray";
  if (argc > 1 && std::strcmp(argv[1], "nodes") == 0) python_module = "gymfarm.nodes";
  if (python_module != nullptr) {
    std::error_code ec;
    const fs::path self = fs::read_symlink("/proc/self/exe", ec);
    // the farms run this build; NOLINTNEXTLINE(concurrency-mt-unsafe): one thread, nothing started yet
    if (!ec) setenv("GYMFARM_BIN_DIR", self.parent_path().c_str(), 0);
    std::vector<char*> args{const_cast<char*>(GYMFARM_DEFAULT_PYTHON), const_cast<char*>("-m"),
                            const_cast<char*>(python_module)};
    args.insert(args.end(), argv + 2, argv + argc);
    args.push_back(nullptr);
    execv(args[0], args.data());
    std::fprintf(stderr, "gymfarm: cannot run %s -m %s: %s\n", args[0], python_module,
                 std::generic_category().message(errno).c_str());
    return 1;
  }
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // start-up and configuration fail fast, with the reason
    say(protocol::LogLevel::Error, e.what());
  } catch (...) {
    say(protocol::LogLevel::Error, "unexpected error");
  }
  return 1;
}
