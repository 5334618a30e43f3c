#include "broker/broker.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <pthread.h>
#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "broker/admission.hpp"
#include "broker/deadlines.hpp"
#include "broker/dispatcher.hpp"
#include "broker/heartbeats.hpp"
#include "broker/launcher.hpp"
#include "broker/pool_supervisor.hpp"
#include "broker/restart_budget.hpp"
#include "broker/routing_table.hpp"
#include "broker/sessions.hpp"
#include "broker/slabs.hpp"
#include "broker/stats.hpp"
#include "broker/worker_launcher.hpp"
#include "broker/worker_registry.hpp"
#include "broker/zygote.hpp"
#include "protocol/codec.hpp"
#include "protocol/error.hpp"
#include "protocol/frames.hpp"
#include "protocol/log.hpp"
#include "protocol/token.hpp"
#include "transport/frames.hpp"
#include "transport/stream.hpp"

namespace gymfarm::broker {

using protocol::Error;
using protocol::ErrorCode;
using protocol::make_error;
using protocol::Value;
namespace verb = protocol::verb;
using transport::Frames;
using transport::payload;
using transport::view;

namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(50);
constexpr std::size_t kMaxMessagesPerTurn = 256;
// A turn that begins this much later than the poll interval after the previous one was late: the
// broker did not run, and heartbeats it could not read then are not held against the workers.
constexpr auto kLateTurnSlack = std::chrono::milliseconds(100);
constexpr auto kZygoteAnswerTimeout = std::chrono::seconds(5);

// 128 bits from the OS CSPRNG: an instance id cannot be guessed from others.
std::string random_instance_id() { return protocol::random_hex(16); }

// The pool's default bound: what the machine's memory allows at the measured cost of a worker
// (docs/benchmarks.md: 5-6 MB PSS idle, forked from the zygote; kWorkerBytes leaves room for a
// small env), capped at kMaxWorkersCap.
constexpr long long kWorkerBytes = 8LL << 20;
constexpr std::size_t kMaxWorkersCap = 4096;

std::size_t default_max_workers() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  long long kb = 0;
  while (f >> key >> kb) {
    if (key == "MemAvailable:") {
      return std::clamp<std::size_t>(static_cast<std::size_t>(kb * 1024 / kWorkerBytes), 1, kMaxWorkersCap);
    }
    f.ignore(1 << 12, '\n');
  }
  return 256;
}

struct PendingMake {
  Request request;
  std::string env_id;
  TimePoint deadline;
};

// What the zygote needs besides the id to judge a make as the worker would (host.py check_env_id).
struct IdFacts {
  bool aliases = true;         // legacy ids resolve (false: the Python client's DeprecatedEnv)
  bool strict_kwargs = false;  // Gymie: parameters besides env_id and seed, refused without a hook
};

// A make at --max-workers whose env id the zygote is checking (Broker::Impl::place_make).
struct PendingIdCheck {
  Request request;
  std::string env_id;
  IdFacts facts;
  TimePoint deadline;
};
constexpr std::size_t kMaxCheckedIdBytes = 256;  // longer ids are no registered Gymnasium id's
constexpr auto kIdCheckTimeout = std::chrono::seconds(2);

}  // namespace

struct Broker::Impl final : DeadlineActions, DispatchLinks {
  BrokerOptions opt;
  // Every deadline, lease, idle-ttl, back-off and heartbeat silence is read from this clock
  // (default: a RunningClock, which stands still while the broker is stopped, so a pause kills no
  // healthy worker). Only the busy-poll (--spin-us) reads steady_clock: it spends real CPU time.
  std::unique_ptr<Clock> owned_clock;
  const Clock& clock;
  WorkerRegistry registry;
  RoutingTable routes;
  Launcher launcher;
  Zygote zygote;  // after the launcher: closed first, then the launcher reaps it
  zmq::context_t ctx{1};
  zmq::socket_t frontend{ctx, zmq::socket_type::router};         // native clients over TCP/IPC
  zmq::socket_t inproc_frontend{ctx, zmq::socket_type::router};  // the gateway's clients, in this process
  // The ZAP handler: every TCP/IPC connection of the frontend gets a connection id from it, which
  // ZeroMQ stamps on each of its messages ("User-Id") and no peer can choose (sessions.hpp).
  zmq::socket_t zap{ctx, zmq::socket_type::rep};
  uint64_t next_connection = 1;
  // With CURVE on (opt.curve_secret_key): the 32-byte public keys of the clients ZAP admits.
  std::unordered_set<std::string> curve_clients;
  zmq::socket_t heartbeat_socket{
      ctx, zmq::socket_type::router};  // the workers' heartbeats (their requests and replies: `links`)
  std::string heartbeat_endpoint;
  // Requests and replies travel on one unix stream socket per worker (transport/stream.hpp); a
  // link's first message is [link, identity], and a link naming no live slot is closed.
  transport::StreamServer links{opt.max_message_bytes, [this](Frames& first) {
                                  if (first.size() != 2 || view(first[0]) != verb::kLink) return std::string();
                                  std::string identity = transport::str(first[1]);
                                  return registry.by_identity(identity) ? identity : std::string();
                                }};
  // Native clients on this host may move from ZeroMQ to a unix stream socket (the hello reply
  // names it): the same frames, without ZeroMQ's I/O-thread wake-ups.
  transport::StreamServer local_clients{opt.max_message_bytes, nullptr};
  std::chrono::steady_clock::time_point spin_until{};  // the loop busy-polls until then (set by activity)
  transport::SpinPolicy spin_policy;
  const std::string farm_id = random_instance_id();  // tells this farm from another with the same socket path
  int signal_fd = -1;
  std::deque<PendingMake> pending_makes;
  std::map<uint64_t, PendingIdCheck> id_checks;  // by the key the zygote answers with
  uint64_t last_id_check = 0;
  Value env_ids = Value(protocol::Array{});
  SessionTable sessions{opt.max_sessions};  // what each client's hello granted (keys: sessions.hpp)
  Admission admission{{opt.max_instances_per_client, opt.max_inflight_per_client}};  // owners and per-client limits
  RestartBudget budget;
  Stats statistics;  // what `stats` answers, and the counters in it
  HeartbeatPolicy heartbeat_policy{opt.heartbeat_rate};
  TurnLateness lateness{kPollInterval, kLateTurnSlack};
  Deadlines deadlines{registry,
                      sessions,
                      admission,
                      clock,
                      {opt.step_timeout, opt.make_timeout, opt.idle_ttl, opt.session_lease},
                      [this](const std::string& m) { log(m); }};
  Dispatcher dispatcher{
      registry,
      routes,
      admission,
      clock,
      *this,
      {opt.max_queue_per_instance, opt.max_inflight_per_client, opt.step_timeout, opt.make_timeout, opt.verbose},
      [this](const std::string& m) { log(m); }};
  // How workers start (made in start_pool, once the sockets they connect to are bound): a fork of
  // the zygote while it runs, else a fresh process; and the supervisor that starts them.
  std::optional<ProcessLauncher> fresh_launcher;
  std::optional<ZygoteLauncher> zygote_launcher;
  std::optional<PoolSupervisor> pool;
  Duration heartbeat_period = kBaseHeartbeatPeriod;  // what workers are told to beat at, for the pool's size
  std::size_t max_workers = 0;                       // the pool's bound (--max-workers, or what memory allows)
  TimePoint next_period_check{};
  SlabTable slabs;  // the shared-memory slabs of local clients' instances (slabs.hpp)
  TimePoint next_slab_scan{};
  uint64_t slab_answers = 0;  // requests answered through slabs, as the scans counted them
  bool ready_announced = false;
  bool shutting_down = false;
  TimePoint drain_deadline{};
  bool stopping_workers = false;
  TimePoint stop_deadline{};

  Impl(BrokerOptions o, std::unique_ptr<Clock> c)
      : opt(std::move(o)),
        owned_clock(c ? std::move(c) : std::make_unique<RunningClock>()),
        clock(*owned_clock),
        registry(opt.workers, clock, opt.envs_per_worker),
        budget(opt.restart_budget ? opt.restart_budget : std::max<std::size_t>(32, 4 * opt.workers),
               opt.restart_window),
        max_workers(std::max(opt.workers, opt.max_workers ? opt.max_workers : default_max_workers())) {
    dispatcher.count_into(statistics.answers);
  }

  void log(const std::string& msg) const { protocol::log_info(msg); }

  // ---- replies -------------------------------------------------------------------------------

  // Replies go out through the dispatcher (it reassembles batches and settles the in-flight count).
  void respond(const Request& r, std::string_view status, zmq::message_t body) {
    dispatcher.respond(r, status, std::move(body));
  }
  void fail(const Request& r, const Error& e) override { dispatcher.fail(r, e); }
  void reply_ok(const Request& r, const Value& v) { respond(r, protocol::kStatusOk, payload(protocol::encode(v))); }

  // ---- workers -------------------------------------------------------------------------------

  // What every worker (and the zygote) is started with.
  std::vector<std::string> worker_args() const {
    std::vector<std::string> args{
        "--backend", heartbeat_endpoint,         "--link",    links.path(),
        "--parent",  std::to_string(::getpid()), "--spin-us", std::to_string(opt.spin.count())};
    if (!opt.python.empty()) {
      args.push_back("--python");
      args.push_back(opt.python);
    }
    for (const auto& m : opt.imports) {
      args.push_back("--import");
      args.push_back(m);
    }
    if (opt.worker_memory_limit) {
      args.push_back("--memory-limit");
      args.push_back(std::to_string(opt.worker_memory_limit));
    }
    return args;
  }

  void start_zygote() {
    if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
      log("cannot become a child subreaper; workers start fresh");
      return;
    }
    auto args = worker_args();
    if (opt.worker_cpu_limit) {  // the zygote's children set it themselves
      args.push_back("--cpu-limit");
      args.push_back(std::to_string(opt.worker_cpu_limit));
    }
    std::string err;
    if (!zygote.start(launcher, opt.worker_exe, args, err))
      log("cannot start the zygote (" + err + "); workers start fresh");
  }

  // The launchers and the supervisor; the zygote first when it is wanted.
  void start_pool() {
    fresh_launcher.emplace(launcher, opt.worker_exe, worker_args(), opt.worker_memory_limit, opt.worker_cpu_limit);
    WorkerLauncher* how = &*fresh_launcher;
    if (opt.zygote) {
      start_zygote();
      how = &zygote_launcher.emplace(zygote, launcher, *fresh_launcher);
    }
    PoolOptions p;
    p.workers = opt.workers;
    p.max_workers = max_workers;
    p.idle_grace = opt.worker_idle_grace;
    p.heartbeat_timeout = opt.heartbeat_timeout;
    p.startup_timeout = opt.startup_timeout;
    p.heartbeat_policy = heartbeat_policy;
    p.verbose = opt.verbose;
    pool.emplace(registry, clock, *how, budget, p, [this](const std::string& m) { log(m); });
    for (std::size_t i = 0; i < registry.size(); ++i) pool->spawn(i);
  }

  Duration timeout_for(std::string_view v) const { return deadlines.timeout_for(v); }

  void worker_gone(std::size_t w, int status) {
    auto& s = registry.slot(w);
    const int pid = s.pid;
    std::string reason = describe_exit(status);
    Value details(protocol::Map{});
    details.set("pid", pid);
    details.set("worker", static_cast<int64_t>(w));
    if (WIFSIGNALED(status)) {
      details.set("signal", WTERMSIG(status));
    } else if (WIFEXITED(status)) {
      details.set("exit_code", WEXITSTATUS(status));
    }
    std::string message = "worker " + std::to_string(w) + " (pid " + std::to_string(pid) + ") " + reason;
    if (auto why = pool->take_kill_reason(pid)) {
      message += " after " + *why;
      details.set("reason", *why);
      reason += " after " + *why;
    }
    if (s.state == WorkerState::Starting) reason += " during start-up";
    const bool graceful = s.state == WorkerState::Stopping;
    if (!graceful) {
      Error err = make_error(ErrorCode::WorkerCrashed, message, details);
      if (opt.worker_cpu_limit && WIFSIGNALED(status) && WTERMSIG(status) == SIGXCPU) {
        details.set("limit", "--worker-cpu-limit");
        details.set("seconds", static_cast<uint64_t>(opt.worker_cpu_limit));
        err = make_error(ErrorCode::ResourceLimit,
                         message + ": the worker used its " + std::to_string(opt.worker_cpu_limit) +
                             " s of CPU (--worker-cpu-limit)",
                         details);
      }
      if (s.in_flight) fail(s.in_flight->request, err);
      for (const auto& q : s.queue) fail(q, err);
      const std::string err_body = protocol::encode(err.to_value());
      for (const auto& h : s.hosted) {
        routes.bury(h.instance, err);
        forget_instance(h.instance);
        slabs.end(h.instance, err_body);  // a request waiting in its slab gets the same answer
      }
      protocol::log_warn(message, {{"event", "worker_exit"}, {"worker", w}, {"pid", pid}, {"reason", reason}});
    } else {
      const std::string bye = protocol::encode(
          make_error(ErrorCode::ShuttingDown, "the farm is shutting down").to_value());
      for (const auto& h : s.hosted) slabs.end(h.instance, bye);
    }
    pool->gone(w, std::move(reason));  // the back-off, and the slot is Dead
  }

  // ---- worker links ----------------------------------------------------------------------------

  bool to_worker(const std::string& identity, const std::vector<std::string_view>& frames) override {
    return links.send(identity, frames);
  }

  void on_link_message(const std::string& identity, Frames& frames) {
    frames.insert(frames.begin(), payload(identity));
    on_worker_message(frames);
  }

  void on_link_closed(const std::string& identity, bool too_large) {
    if (!too_large) return;  // the worker exited: the reaper answers for it
    if (auto w = registry.by_identity(identity)) {
      log("worker " + std::to_string(*w) + " sent a message over the size limit; killing it");
      kill_worker(*w,
                  "it sent a reply over the message size limit (" + std::to_string(opt.max_message_bytes) + " bytes)");
    }
  }

  void on_local_message(const std::string& name, Frames& frames) {
    frames.insert(frames.begin(), payload(client_key(ClientPath::Local, name)));
    on_frontend(frames);
  }

  // A local client's session ends with its socket: its instances are closed at once (unless its
  // hello asked to keep them), so a script that exits without close() leaks nothing.
  void on_local_closed(const std::string& name, bool) {
    end_session(client_key(ClientPath::Local, name), "disconnected");
  }

  // A session ends (its local socket closed, or its lease ran out): its instances are closed,
  // unless its hello asked to keep them.
  void end_session(const std::string& key, const std::string& how) override {
    if (!sessions.keeps_instances(key) && admission.holds(key) > 0) {
      const std::vector<std::string> mine = admission.instances_of(key);
      if (opt.verbose) log("a client " + how + "; closing its " + std::to_string(mine.size()) + " instances");
      for (const auto& instance : mine) {
        Value d(protocol::Map{{"instance_id", instance}});
        std::string why = "instance '" + instance + "' was closed when the client that made it ";
        why += how;
        close_instance(instance, make_error(ErrorCode::UnknownInstance, std::move(why), d));
      }
    }
    sessions.close(key);
  }

  // A reply to a client: over its local stream if it has one, else over ZeroMQ. frames[0] is the
  // client's identity.
  bool to_client(Frames& frames) override {
    const std::string key(view(frames[0]));
    const auto to = parse_client_key(key);
    if (!to) return false;
    if (to->path == ClientPath::Local) {
      frames.erase(frames.begin());
      return local_clients.send(std::string(to->address), frames);
    }
    frames[0] = payload(to->address);
    return transport::send(to->path == ClientPath::Tcp ? frontend : inproc_frontend, frames);
  }

  // [client, rid, ok, body] of a make granted a slab: to the local client as [rid, ok, body, slab]
  // with the slab's memfd and doorbell, which the broker then closes (it keeps its mapping).
  bool to_client_with_slab(Frames& frames, const std::string& instance) override {
    const auto to = parse_client_key(view(frames[0]));
    const auto fds = slabs.fds(instance);
    if (to && to->path == ClientPath::Inproc && !fds.empty()) return to_gateway_with_slab(frames, instance, fds);
    if (!to || to->path != ClientPath::Local || fds.empty()) return to_client(frames);
    std::vector<std::string_view> out;
    for (std::size_t i = 1; i < frames.size(); ++i) out.push_back(view(frames[i]));
    out.push_back(verb::kSlab);
    const bool sent = local_clients.send(std::string(to->address), out, fds);
    slabs.handed(instance);
    return sent;
  }

  // The same for the gateway, in this process: the descriptors are duplicated and their numbers
  // travel as two more frames, [rid, ok, body, slab, memfd, doorbell]; the gateway's client maps
  // the slab and closes them (or closes them if it gave up on the make).
  bool to_gateway_with_slab(Frames& frames, const std::string& instance, const std::vector<int>& fds) {
    std::vector<int> dups;
    for (int fd : fds) {
      const int d = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
      if (d >= 0) dups.push_back(d);
    }
    slabs.handed(instance);
    if (dups.size() != 2) {
      for (int d : dups) ::close(d);
      return to_client(frames);
    }
    frames.push_back(payload(verb::kSlab));
    frames.push_back(payload(std::to_string(dups[0])));
    frames.push_back(payload(std::to_string(dups[1])));
    if (to_client(frames)) return true;
    for (int d : dups) ::close(d);
    return false;
  }

  // A frontend message's first frame (the peer's routing id) becomes its client key.
  void key_frames(Frames& f, ClientPath path) {
    if (f.empty()) return;
    const char* connection = nullptr;
    if (path == ClientPath::Tcp && f.size() > 1) connection = zmq_msg_gets(f[1].handle(), "User-Id");
    f[0] = payload(client_key(path, view(f[0]), connection ? std::string_view(connection) : std::string_view()));
  }

  // ZAP (RFC 27): admits every connection of the NULL mechanism, or with CURVE on only a CURVE
  // connection whose client key is in the allow-list, and names it. Requests are
  // [version, request_id, domain, address, identity, mechanism, credentials...]; CURVE's one
  // credential is the client's 32-byte public key.
  void on_zap() {
    Frames req;
    const bool curve = !opt.curve_secret_key.empty();
    while (transport::recv(zap, req)) {
      std::string status = "200", text = "OK", id;
      if (req.size() < 6 || view(req[0]) != "1.0") {
        status = "400";
        text = "malformed ZAP request";
      } else if (view(req[5]) != (curve ? "CURVE" : "NULL")) {
        status = "400";
        text = "unsupported security mechanism";
      } else if (curve && (req.size() < 7 || !curve_clients.contains(std::string(view(req[6]))))) {
        status = "400";
        text = "client key not allowed";
      } else {
        char buf[kConnectionIdSize + 1];
        std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(next_connection++));
        id = buf;
      }
      Frames out;
      for (std::string_view part :
           {std::string_view("1.0"), req.size() > 1 ? view(req[1]) : std::string_view(), std::string_view(status),
            std::string_view(text), std::string_view(id), std::string_view()}) {
        out.push_back(payload(part));
      }
      transport::send(zap, out);
    }
  }

  // Waits for the next event. While events keep coming (within opt.spin of the last one) it
  // busy-polls instead of sleeping: a worker's reply or the client's next request usually follows
  // within microseconds, and waking from sleep costs more than that on most virtual machines.
  // The SpinPolicy stops the spinning while events come further apart than the spin.
  void wait_for_events(std::vector<zmq::pollitem_t>& items) {
    using std::chrono::steady_clock;
    auto now = steady_clock::now();
    if (now < spin_until && spin_policy.should_spin()) {
      while (now < spin_until) {
        if (zmq::poll(items.data(), items.size(), std::chrono::milliseconds(0)) > 0) {
          spin_policy.spun(true);
          spin_until = steady_clock::now() + opt.spin;
          return;
        }
        sched_yield();
        now = steady_clock::now();
      }
      spin_policy.spun(false);
    }
    // Messages already read from a link or a local client's socket wait in its buffer: no sleep.
    const auto wait = links.backlog() || local_clients.backlog() ? std::chrono::milliseconds(0) : kPollInterval;
    if (zmq::poll(items.data(), items.size(), wait) > 0 && opt.spin.count() > 0) {
      spin_until = steady_clock::now() + opt.spin;
    }
  }

  void kill_worker(std::size_t w, std::string why) override { pool->kill(w, std::move(why)); }
  const std::string* kill_reason(int pid) const override { return pool->kill_reason(pid); }

  // ---- client requests ------------------------------------------------------------------------

  // Input never stops the loop: whatever a handler throws on a request is answered `internal` and
  // logged, and the broker goes on serving.
  void on_frontend(Frames& f) {
    try {
      handle_frontend(f);
    } catch (const std::exception& e) {
      internal_error(f, e.what());
    } catch (...) {
      internal_error(f, "unknown exception");
    }
  }

  void internal_error(Frames& f, const std::string& what) {
    log("internal error on a client request (answered 'internal', still serving): " + what);
    if (f.size() < 4 || !protocol::decode_rid(view(f[3]))) return;
    Request r;
    r.client = transport::str(f[0]);
    r.client_rid = transport::str(f[3]);
    try {
      fail(r, make_error(ErrorCode::Internal, "the farm could not handle this request: " + what));
    } catch (...) {
    }
  }

  void handle_frontend(Frames& f) {
    // [client, verb, instance, rid, body, (instance, body)*]
    if (f.size() < 4) return;  // not even a request id to answer to
    Request r;
    r.client = transport::str(f[0]);
    r.verb = transport::str(f[1]);
    r.instance = transport::str(f[2]);
    r.client_rid = transport::str(f[3]);
    if (f.size() > 4) r.body = transport::str(f[4]);
    r.received = clock.now();
    ++statistics.requests;
    if (!protocol::decode_rid(r.client_rid)) {
      return fail(r, make_error(ErrorCode::BadRequest, "request id must be 8 bytes"));
    }
    // The one authorization check: every verb but hello, before anything is dispatched.
    if (r.verb != verb::kHello) {
      if (!opt.token.empty() && !sessions.authorized(r.client)) {
        return fail(r, make_error(ErrorCode::Unauthorized, "this farm needs a token: say hello with it first",
                                  Value(protocol::Map{{"reason", "no_session"}})));
      }
      sessions.touch(r.client, clock.now());
    }
    if (r.verb == verb::kStepBatch) return dispatcher.on_batch(r, f);
    if (r.verb == verb::kStepVec) return dispatcher.on_step_vec(r, f);
    if (f.size() != 5)
      return fail(r, make_error(ErrorCode::BadRequest, "a request has exactly 4 frames: verb, instance, rid, body"));
    if (r.verb == verb::kHello) return on_hello(r);
    if (r.verb == verb::kPing) return reply_ok(r, Value(protocol::Map{{"pong", true}}));
    if (r.verb == verb::kStats) {
      scan_slabs(clock.now(), true);  // the steps answered in slabs until now
      return reply_ok(r, stats());
    }
    if (r.verb == verb::kList) return reply_ok(r, list(r.client));
    if (r.verb == verb::kEnvs) return reply_ok(r, Value(protocol::Map{{"env_ids", env_ids}}));
    if (shutting_down) return fail(r, make_error(ErrorCode::ShuttingDown, "the farm is shutting down"));
    if (r.verb == verb::kMake) return on_make(std::move(r));
    if (protocol::is_instance_verb(r.verb)) return dispatcher.route(std::move(r));
    if (r.verb == verb::kMonitor) {  // it writes files: only the gateway's clients, which map the directory
      const auto from = parse_client_key(r.client);
      if (from && from->path == ClientPath::Inproc) return dispatcher.route(std::move(r));
      return fail(r,
                  make_error(ErrorCode::BadRequest, "'monitor' is the gateway's verb; native clients may not send it"));
    }
    fail(r, make_error(ErrorCode::BadRequest, "unknown verb '" + r.verb + "'"));
  }

  void on_hello(const Request& r) {
    Value body;
    std::string err;
    if (!protocol::decode(r.body, body, err)) return fail(r, make_error(ErrorCode::BadRequest, err));
    if (!body.is_map()) return fail(r, make_error(ErrorCode::BadRequest, "hello needs a map body"));
    const Value* version = body.find("version");
    if (!version || version->get_int() != protocol::kProtocolVersion) {
      return fail(r, make_error(ErrorCode::BadRequest, "unsupported protocol version; this farm speaks version " +
                                                           std::to_string(protocol::kProtocolVersion)));
    }
    const Value* token = body.find("token");
    if (token && !token->is_string())
      return fail(r, make_error(ErrorCode::BadRequest, "hello's 'token' must be a string"));
    const bool authorized = token && !opt.token.empty() && protocol::token_equal(opt.token, token->as_string());
    if (!opt.token.empty() && !authorized)
      return fail(r, make_error(ErrorCode::Unauthorized, "missing or wrong token"));
    const Value* keep = body.find("keep_instances");
    if (keep && !keep->is_bool())
      return fail(r, make_error(ErrorCode::BadRequest, "hello's 'keep_instances' must be a bool"));
    const Value* name = body.find("client");
    if (name && !name->is_string())
      return fail(r, make_error(ErrorCode::BadRequest, "hello's 'client' must be a string"));
    const Value* lease_asked = body.find("lease");
    if (lease_asked && !lease_asked->is_bool())
      return fail(r, make_error(ErrorCode::BadRequest, "hello's 'lease' must be a bool"));
    // A lease only where the farm cannot see a client go: TCP/IPC (the local socket's end is seen).
    const bool leased = lease_asked && lease_asked->as_bool() && opt.session_lease.count() > 0 && !r.client.empty() &&
                        r.client[0] == static_cast<char>(ClientPath::Tcp);
    const auto opened = sessions.open(
        r.client, authorized,
        [this](const std::string& c) { return admission.holds(c) > 0 || admission.in_flight(c) > 0; },
        keep && keep->as_bool(), leased ? Duration(opt.session_lease) : Duration::zero(), clock.now());
    if (opened == SessionTable::Open::Full) {
      Value d(protocol::Map{{"limit", static_cast<uint64_t>(opt.max_sessions)}});
      return fail(r, make_error(ErrorCode::Overloaded,
                                "the farm has " + std::to_string(sessions.size()) +
                                    " sessions that all hold instances or requests (--max-sessions)",
                                d));
    }
    if (name) sessions.set_name(r.client, name->as_string());
    Value v(protocol::Map{});
    v.set("version", protocol::kProtocolVersion);
    v.set("server", "gymfarm");
    v.set("server_version", "0.1.0");
    v.set("workers", static_cast<int64_t>(registry.wanted()));
    v.set("max_workers", static_cast<int64_t>(max_workers));
    v.set("envs_per_worker", static_cast<int64_t>(registry.capacity()));
    v.set("local", local_clients.path());  // clients on this host may switch to it (docs/protocol.md)
    v.set("farm", farm_id);                // ...and check that the socket there is this farm's
    if (leased) v.set("lease_ms", static_cast<int64_t>(opt.session_lease.count()));  // renew within it
    reply_ok(r, v);
  }

  // Admits a request under the client's in-flight limit; false (and answered) when over it.
  void forget_instance(const std::string& instance) { admission.forget(instance); }

  // Only the client that made an instance may use it, unless it was made shared (admission.hpp).
  bool may_use(const std::string& instance, const std::string& client) const {
    return admission.may_use(instance, client);
  }

  void on_make(Request r) {
    Value body;
    std::string err;
    if (!protocol::decode(r.body, body, err)) return fail(r, make_error(ErrorCode::BadRequest, err));
    const Value* env_id = body.find("env_id");
    if (!env_id || !env_id->is_string() || env_id->as_string().empty()) {
      return fail(r, make_error(ErrorCode::BadRequest, "make needs a non-empty string 'env_id'"));
    }
    const Value* shared = body.find("shared");
    if (shared && !shared->is_bool())
      return fail(r, make_error(ErrorCode::BadRequest, "make's 'shared' must be a bool"));
    const Value* shm = body.find("shm");
    if (shm && !shm->is_bool()) return fail(r, make_error(ErrorCode::BadRequest, "make's 'shm' must be a bool"));
    // A slab only for a client that can map it (docs/protocol.md): on this host's local socket, or
    // the gateway in this process.
    const bool slab = shm && shm->as_bool() && opt.shm_slab_bytes > 0 && !r.client.empty() &&
                      (r.client[0] == static_cast<char>(ClientPath::Local) ||
                       r.client[0] == static_cast<char>(ClientPath::Inproc));
    r.kind = Request::Make{shared && shared->as_bool(), slab};
    if (!admission.may_make(r.client)) {
      Value d(protocol::Map{{"limit", static_cast<uint64_t>(opt.max_instances_per_client)}});
      return fail(r, make_error(ErrorCode::Overloaded,
                                "this client holds " + std::to_string(admission.holds(r.client)) +
                                    " instances (--max-instances-per-client); close one first",
                                d));
    }
    if (!dispatcher.admit(r)) return;
    const Value* aliases = body.find("aliases");
    const Value* strict = body.find("strict");
    const Value* kwargs = body.find("kwargs");
    IdFacts facts{
        !(aliases && aliases->is_bool() && !aliases->as_bool()),
        strict && strict->is_bool() && strict->as_bool() && kwargs && kwargs->is_map() && !kwargs->as_map().empty()};
    place_make(std::move(r), env_id->as_string(), facts, false);
  }

  // Gives an admitted make a worker: one with room, one that is coming, or a new one while the
  // pool is under --max-workers. Past that, the make first learns what is wrong with its env id,
  // as on a farm with room (Gymie checks the id before anything else), from the zygote, which has
  // the registry loaded; only an id that resolves (or one it cannot judge) gets capacity_exhausted.
  void place_make(Request r, const std::string& env_id, IdFacts facts, bool id_checked) {
    if (auto w = registry.worker_with_room()) return start_make(*w, std::move(r), env_id);
    // No room now: wait for a worker that is coming (starting, or dead and wanted), or grow the pool
    // by one, forked from the zygote, while it is under --max-workers.
    std::size_t coming = 0;
    for (const auto& s : registry.slots()) {
      if (s.wanted && (s.state == WorkerState::Starting || s.state == WorkerState::Dead)) coming += registry.capacity();
    }
    // A spawn that failed (logged) is retried after its back-off, and the make waits for it.
    if (pending_makes.size() >= coming && !shutting_down && pool->grow()) coming += registry.capacity();
    if (pending_makes.size() < coming) {
      pending_makes.push_back({std::move(r), env_id, clock.now() + opt.make_timeout});
      return;
    }
    if (!id_checked && !shutting_down && env_id.size() <= kMaxCheckedIdBytes &&
        zygote.check(++last_id_check, env_id, facts.aliases, facts.strict_kwargs)) {
      id_checks.emplace(last_id_check, PendingIdCheck{std::move(r), env_id, facts, clock.now() + kIdCheckTimeout});
      return;
    }
    fail_capacity(r);
  }

  void fail_capacity(const Request& r) {
    Value d(protocol::Map{{"workers", static_cast<int64_t>(registry.wanted())},
                          {"max_workers", static_cast<int64_t>(max_workers)},
                          {"envs_per_worker", static_cast<int64_t>(registry.capacity())}});
    fail(r, make_error(
                ErrorCode::CapacityExhausted,
                registry.capacity() == 1
                    ? "all " + std::to_string(registry.wanted()) + " workers hold an instance (--max-workers " +
                          std::to_string(max_workers) + "); close one or start the farm with a larger --max-workers"
                    : "all " + std::to_string(registry.wanted()) + " workers hold " +
                          std::to_string(registry.capacity()) + " instances each (--max-workers " +
                          std::to_string(max_workers) + "); close one or start the farm with a larger --max-workers",
                d));
  }

  // The zygote's verdicts on env ids (place_make): a refused id gets make's own bad_request, any
  // other tries for a worker once more (one may have become free), then gets capacity_exhausted.
  void on_id_checks(std::vector<Zygote::CheckAnswer> answers) {
    for (auto& a : answers) {
      auto it = id_checks.find(a.key);
      if (it == id_checks.end()) continue;  // answered already (timed out)
      PendingIdCheck p = std::move(it->second);
      id_checks.erase(it);
      if (!a.bad) {
        place_make(std::move(p.request), p.env_id, p.facts, true);
        continue;
      }
      Value d(protocol::Map{{"kind", a.kind}});
      if (!a.gymnasium_error.empty()) d.set("gymnasium_error", a.gymnasium_error);
      fail(p.request, make_error(ErrorCode::BadRequest, a.message, d));
    }
  }

  // Checks the zygote did not answer in time, or cannot any more: capacity_exhausted, as before.
  void expire_id_checks(bool all) {
    const auto now = clock.now();
    for (auto it = id_checks.begin(); it != id_checks.end();) {
      if (!all && it->second.deadline > now) {
        ++it;
        continue;
      }
      PendingIdCheck p = std::move(it->second);
      it = id_checks.erase(it);
      place_make(std::move(p.request), p.env_id, p.facts, true);
    }
  }

  // Workers the pool grew beyond --workers retire once idle for --worker-idle-grace.
  void retire_idle(TimePoint now) {
    for (auto w : pool->retire_idle(now))
      to_worker(registry.slot(w).identity, {verb::kBye, "", protocol::encode_rid(0), ""});
  }

  void start_make(std::size_t w, Request r, const std::string& env_id) {
    std::string instance = random_instance_id();
    while (!routes.add(instance, w, env_id)) instance = random_instance_id();
    registry.assign(w, instance, env_id);
    auto* make = r.as<Request::Make>();
    admission.made(instance, r.client, make && make->shared, sessions.label(r.client).value_or(SessionLabel{}));
    if (make && make->slab) {
      // The session a StepVec in its slabs must share; none for a shared instance, whose replies
      // another session could fetch (`spilled`), so no vector step runs through its slab.
      const auto label = sessions.label(r.client);
      const bool owned = label && label->number > 0 && !make->shared;
      make->slab = grant_slab(w, instance, owned ? "s" + std::to_string(label->number) : "");
    }
    r.instance = instance;
    registry.slot(w).queue.push_back(std::move(r));  // behind the requests of the worker's other envs
    dispatcher.pump(w);
  }

  // A slab for a local client's make: created here and sent to the worker before the make (the
  // client gets it with the reply). False when there is none: the instance works over the socket.
  bool grant_slab(std::size_t w, const std::string& instance, const std::string& owner) {
    std::string err;
    const auto fds = slabs.grant(instance, opt.shm_slab_bytes, err);
    if (fds.empty()) {
      log("no slab for instance " + instance + " (" + err + "); it uses the socket");
      return false;
    }
    if (!links.send(registry.slot(w).identity, {verb::kSlab, instance, owner}, fds)) {
      slabs.drop(instance);
      return false;
    }
    return true;
  }

  // The socket verb a slab request stands for (its timeout error names it).
  static std::string_view slab_verb_name(shm::Verb v) {
    return v == shm::Verb::Reset ? verb::kReset : v == shm::Verb::StepVec ? verb::kStepVec : verb::kStep;
  }

  // Every 10 ms: what the workers answered in slabs, slab requests past the step deadline (their
  // worker is killed; the answer is written when it is reaped) and slabs of instances now gone.
  void scan_slabs(TimePoint now, bool now_please = false) {
    if (slabs.size() == 0 || (now < next_slab_scan && !now_please)) return;
    next_slab_scan = now + std::chrono::milliseconds(10);
    const auto overdue = slabs.scan(
        now, opt.step_timeout, [this](const std::string& i) { return routes.find(i).has_value(); },
        [this](const std::string& i, uint64_t answered, uint64_t n) {
          slab_answers += answered;
          if (auto w = routes.find(i)) {
            registry.heartbeat(*w);  // it answered: alive (it skips heartbeats while it answers)
            registry.slot(*w).steps += n;
            registry.used(*w, i);  // not idle (--idle-ttl)
          }
          statistics.answers.env_steps += n;
        },
        [this](const std::string& i, shm::Verb v) {
          const auto w = routes.find(i);  // there is one: the scan asked alive() first
          return protocol::encode(
              timeout_error(slab_verb_name(v), opt.step_timeout, w ? registry.slot(*w).pid : 0).to_value());
        });
    for (const auto& o : overdue) {
      auto w = routes.find(o.instance);
      if (!w) continue;
      const std::string name(slab_verb_name(o.verb));
      log("worker " + std::to_string(*w) + " timed out in '" + name + "' (shared memory), killing it");
      kill_worker(*w, timeout_kill_reason(name, opt.step_timeout));
    }
  }

  void serve_pending_makes() {
    while (!pending_makes.empty()) {
      auto w = registry.worker_with_room();
      if (!w) return;
      PendingMake p = std::move(pending_makes.front());
      pending_makes.pop_front();
      start_make(*w, std::move(p.request), p.env_id);
    }
  }

  Value stats() const {
    Value v = statistics.report(registry, budget, routes.size(), {opt.workers, max_workers},
                                {heartbeat_period, heartbeat_policy.max_rate, lateness.excused()}, clock.now(),
                                opt.frontend, static_cast<int64_t>(::getpid()), sessions.size(), &admission);
    // Requests answered through slabs never reach the broker: not in `requests` or `answers`.
    v.set("shm", Value(protocol::Map{{"slabs", static_cast<uint64_t>(slabs.size())},
                                     {"answered", static_cast<uint64_t>(slab_answers)}}));
    return v;
  }

  // A client's own instances (and shared ones); the gateway's clients see every instance.
  Value list(const std::string& client) const {
    protocol::Map m;
    for (const auto& [id, route] : routes.routes()) {
      if (may_use(id, client)) m.emplace_back(id, route.env_id);
    }
    return Value(protocol::Map{{"instances", Value(std::move(m))}});
  }

  // ---- worker messages ----------------------------------------------------------------------

  // A heartbeat on the heartbeat socket (`routing_id` is the worker's "<identity>#hb"). A worker
  // beating at another period than the pool's size wants is told the new one in answer:
  // [routing_id, "hb", period in ms].
  void on_heartbeat(std::size_t w, const zmq::message_t& routing_id) {
    ++statistics.heartbeats;
    registry.heartbeat(w);
    if (!registry.needs_period(w, heartbeat_period)) return;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(heartbeat_period).count();
    const std::string period = std::to_string(ms);
    if (transport::send(heartbeat_socket, std::vector<std::string_view>{view(routing_id), verb::kHeartbeat, period})) {
      registry.told(w, heartbeat_period);
    }
  }

  // A worker's message, from its link (ready, replies) or its heartbeat socket: [identity, verb, ...].
  void on_worker_message(Frames& f) {
    if (f.size() < 2) return;
    const std::string identity = transport::str(f[0]);
    auto w = registry.by_identity(identity);
    if (!w) return;  // a previous spawn's late message
    const auto v = view(f[1]);
    auto& s = registry.slot(*w);
    if (v == verb::kHeartbeat) return on_heartbeat(*w, f[0]);
    if (v == verb::kReady) {
      registry.heartbeat(*w);
      if (f.size() >= 3 && env_ids.as_array().empty()) {
        Value info;
        std::string err;
        if (protocol::decode(view(f[2]), info, err)) {
          if (const Value* ids = info.find("env_ids"); ids && ids->is_array()) env_ids = *ids;
        }
      }
      if (registry.ready(*w)) {
        s.consecutive_failures = 0;
        serve_pending_makes();
      }
      return;
    }
    if (v != verb::kReply) return;
    if (dispatcher.on_reply(*w, f)) serve_pending_makes();  // an instance closed: room for a waiting make
  }

  // ---- time and signals ------------------------------------------------------------------------

  void check_time() {
    deadlines.check(*this);  // timeouts, idle instances, leases
    const auto now = clock.now();
    scan_slabs(now);
    if (zygote.alive() && !pool->kill_reason(zygote.pid())) {
      for (const auto& s : registry.slots()) {  // the zygote answers a fork request in milliseconds
        if (s.state == WorkerState::Starting && s.pid == 0 && now - s.since > kZygoteAnswerTimeout) {
          log("the zygote did not answer a fork request within 5 s (stopped or stuck); killing it");
          pool->note_kill(zygote.pid(), "it did not answer");
          ::kill(zygote.pid(), SIGKILL);
          break;
        }
      }
    }
    if (now >= next_period_check) {  // the period follows the pool's size (at most 10 times a second)
      next_period_check = now + std::chrono::milliseconds(100);
      heartbeat_period = heartbeat_policy.period(registry.wanted());
    }
    pool->kill_silent(now);
    expire_id_checks(false);
    while (!pending_makes.empty() && pending_makes.front().deadline <= now) {
      Value d(protocol::Map{{"workers", static_cast<int64_t>(registry.wanted())}});
      fail(pending_makes.front().request,
           make_error(ErrorCode::CapacityExhausted, "no worker became free within the make timeout", d));
      pending_makes.pop_front();
    }
    dispatcher.retry_refused();  // requests a worker's pipe could not take yet
    if (!shutting_down) {
      retire_idle(now);
      pool->respawn_due(now);
    }
  }

  // Closes an instance nobody used for --idle-ttl; later requests for it get unknown_instance.
  void close_idle(std::size_t w, const std::string& instance) override {
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(opt.idle_ttl).count();
    Value d(protocol::Map{{"instance_id", instance}});
    log("closing idle instance " + instance + " on worker " + std::to_string(w));
    close_instance(instance, make_error(ErrorCode::UnknownInstance,
                                        "instance '" + instance + "' was closed after " + std::to_string(secs) +
                                            " s without requests (--idle-ttl)",
                                        d));
  }

  // The broker's own close of an instance: later requests for it get `why`.
  void close_instance(const std::string& instance, Error why) {
    auto w = routes.find(instance);
    if (!w) return;
    routes.bury(instance, std::move(why));
    forget_instance(instance);
    Request r;  // no client: the reply is dropped
    r.verb = std::string(verb::kClose);
    r.instance = instance;
    registry.slot(*w).queue.push_back(std::move(r));
    dispatcher.pump(*w);
  }

  // The zygote's answers: the pid of each worker it forked.
  void on_zygote() {
    for (const auto& [identity, pid] : zygote.read()) {
      auto w = registry.by_identity(identity);
      auto* s = w ? &registry.slot(*w) : nullptr;
      if (pid > 0) launcher.adopt(pid);
      // The worker may already have said ready (and even taken an instance) before this answer
      // came: any live state of the slot that names this identity and has no pid yet is its own.
      if (!s || s->pid != 0 || s->state == WorkerState::Dead) {
        if (pid > 0) launcher.kill(pid, SIGKILL);  // nobody waits for it any more
        continue;
      }
      if (pid == 0) {
        pool->fork_failed(*w);
        continue;
      }
      s->pid = pid;
      if (s->state == WorkerState::Stopping) launcher.kill(pid, SIGKILL);
    }
    on_id_checks(zygote.take_checks());
  }

  void zygote_gone(int status) {
    pool->take_kill_reason(zygote.pid());
    log("the zygote " + describe_exit(status) + "; workers start fresh from now on");
    zygote.gone();
    expire_id_checks(true);
    for (std::size_t i = 0; i < registry.size(); ++i) {
      auto& s = registry.slot(i);
      if (s.pid == 0 && (s.state == WorkerState::Starting || s.state == WorkerState::Stopping)) {
        registry.died(i, "the zygote exited before forking it");
        s.respawn_at = clock.now();
      }
    }
  }

  void reap() {
    for (const auto& e : launcher.reap()) {
      if (zygote.alive() && e.pid == zygote.pid()) {
        zygote_gone(e.status);
        continue;
      }
      for (const auto& s : registry.slots()) {
        if (s.pid == e.pid) {
          worker_gone(s.index, e.status);
          break;
        }
      }
    }
  }

  // Returns true when a stop signal arrived.
  bool read_signals() {
    bool stop = false;
    signalfd_siginfo si;
    while (::read(signal_fd, &si, sizeof si) == sizeof si) {
      if (si.ssi_signo == SIGCHLD) continue;
      stop = true;
    }
    reap();
    return stop;
  }

  void begin_shutdown() {
    if (shutting_down) return;
    shutting_down = true;
    dispatcher.shutting_down();
    log("stopping: draining requests");
    drain_deadline = clock.now() + opt.drain_timeout;
    for (auto& p : pending_makes) fail(p.request, make_error(ErrorCode::ShuttingDown, "the farm is shutting down"));
    pending_makes.clear();
    for (auto& [key, p] : id_checks) fail(p.request, make_error(ErrorCode::ShuttingDown, "the farm is shutting down"));
    id_checks.clear();
  }

  // Returns true when everything is stopped.
  bool progress_shutdown() {
    const auto now = clock.now();
    if (!stopping_workers) {
      const bool busy = std::any_of(registry.slots().begin(), registry.slots().end(),
                                    [](const WorkerSlot& s) { return s.in_flight.has_value() || !s.queue.empty(); });
      if (busy && now < drain_deadline) return false;
      stopping_workers = true;
      stop_deadline = now + std::chrono::seconds(3);
      for (const auto& s : registry.slots()) {
        for (const auto& q : s.queue) fail(q, make_error(ErrorCode::ShuttingDown, "the farm is shutting down"));
        if (s.in_flight) fail(s.in_flight->request, make_error(ErrorCode::ShuttingDown, "the farm is shutting down"));
      }
      for (std::size_t i = 0; i < registry.size(); ++i) {
        auto& s = registry.slot(i);
        s.queue.clear();
        s.in_flight.reset();
        if (s.state == WorkerState::Dead) continue;
        to_worker(s.identity, {verb::kBye, "", protocol::encode_rid(0), ""});
        registry.stopping(i);
      }
    }
    if (registry.count(WorkerState::Dead) == registry.size()) return true;
    if (now >= stop_deadline) {
      for (const auto& s : registry.slots()) {
        if (s.state != WorkerState::Dead) launcher.kill(s.pid, SIGKILL);
      }
      for (std::size_t i = 0; i < registry.size(); ++i) {  // forks the zygote never answered
        if (registry.slot(i).state != WorkerState::Dead && registry.slot(i).pid == 0) registry.died(i, "never started");
      }
    }
    return false;
  }
};

Broker::Broker(BrokerOptions options, std::unique_ptr<Clock> clock)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(clock))) {
  if (impl_->opt.workers == 0) throw std::invalid_argument("--workers must be at least 1");
}

Broker::~Broker() {
  if (impl_ && impl_->signal_fd >= 0) ::close(impl_->signal_fd);
}

namespace {
// The signals the broker takes through its signalfd: child exits and the stop requests.
sigset_t broker_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, sig);
  return set;
}
}  // namespace

void Broker::block_signals() {
  const sigset_t set = broker_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

zmq::context_t& Broker::context() { return impl_->ctx; }

namespace {
// Sockets that an earlier broker in this runtime directory left behind when it was killed: named
// <kind>-<pid>.<ext>, removed when that pid no longer runs.
void remove_stale_sockets(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const auto dash = name.find('-'), dot = name.rfind('.');
    if (dash == std::string::npos || dot == std::string::npos || dot <= dash + 1) continue;
    const std::string kind = name.substr(0, dash), ext = name.substr(dot);
    if (!((kind == "link" || kind == "native") && ext == ".sock") && !(kind == "backend" && ext == ".ipc")) continue;
    const std::string pid = name.substr(dash + 1, dot - dash - 1);
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t owner = 0;
    if (std::from_chars(pid.data(), pid.data() + pid.size(), owner).ec != std::errc() || owner <= 0) continue;
    if (::kill(owner, 0) != 0 && errno == ESRCH) std::filesystem::remove(e.path(), ec);
  }
}
}  // namespace

namespace {
// A z85 CURVE key (40 characters) as its 32 bytes; nullopt when it is not one.
std::optional<std::string> z85_key(const std::string& z85) {
  if (z85.size() != 40) return std::nullopt;
  std::array<uint8_t, 32> raw{};
  if (zmq_z85_decode(raw.data(), z85.c_str()) == nullptr) return std::nullopt;
  return std::string(reinterpret_cast<const char*>(raw.data()), raw.size());
}
}  // namespace

// The frontend as a CURVE server (before its bind): the secret key set, the allowed client keys
// decoded for on_zap. Throws with a clear message when this libzmq lacks CURVE or a key is bad.
void Broker::configure_curve(Impl& d) {
  if (zmq_has("curve") == 0) {
    throw std::runtime_error(
        "this libzmq was built without CURVE (zmq_has(\"curve\") is false); "
        "install one with libsodium, or start without --curve-secret-file");
  }
  const auto secret = z85_key(d.opt.curve_secret_key);
  if (!secret) throw std::runtime_error("the CURVE secret key is not a 40-character z85 key");
  if (d.opt.curve_client_keys.empty()) throw std::runtime_error("CURVE is on but no client key is allowed");
  for (const std::string& k : d.opt.curve_client_keys) {
    const auto raw = z85_key(k);
    if (!raw) throw std::runtime_error("a CURVE client key is not a 40-character z85 key: " + k);
    d.curve_clients.insert(*raw);
  }
  d.frontend.set(zmq::sockopt::curve_server, 1);
  d.frontend.set(zmq::sockopt::curve_secretkey, zmq::buffer(secret->data(), secret->size()));
}

std::string Broker::bind() {
  auto& d = *impl_;
  // Each worker costs the broker two descriptors (its link and its heartbeat connection), so a
  // grown pool needs more than the usual soft limit of 1024: take the hard limit.
  if (rlimit fds{}; ::getrlimit(RLIMIT_NOFILE, &fds) == 0 && fds.rlim_cur < fds.rlim_max) {
    fds.rlim_cur = fds.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &fds);
  }
  transport::configure(d.frontend, d.opt.max_message_bytes);
  transport::configure(d.inproc_frontend, d.opt.max_message_bytes);
  transport::configure(d.heartbeat_socket, d.opt.max_message_bytes);
  d.frontend.set(zmq::sockopt::router_mandatory, 1);
  d.inproc_frontend.set(zmq::sockopt::router_mandatory, 1);
  // The ZAP handler is bound before the frontend, so that no connection is ever admitted unnamed.
  try {
    d.zap.bind("inproc://zeromq.zap.01");
  } catch (const zmq::error_t& e) {
    throw std::runtime_error(std::string("cannot start the connection handler (ZAP): ") + e.what());
  }
  d.frontend.set(zmq::sockopt::zap_domain, "gymfarm");
  if (!d.opt.curve_secret_key.empty()) configure_curve(d);
  d.heartbeat_socket.set(zmq::sockopt::router_mandatory, 1);
  try {
    d.frontend.bind(d.opt.frontend);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error("cannot listen on " + d.opt.frontend + ": " + e.what());
  }
  d.opt.frontend = d.frontend.get(zmq::sockopt::last_endpoint);
  d.inproc_frontend.bind(kInprocFrontend);  // the gateway's clients: no TCP, no I/O thread
  d.heartbeat_endpoint = "ipc://" + d.opt.runtime_dir + "/backend-" + std::to_string(::getpid()) + ".ipc";
  if (d.heartbeat_endpoint.size() - 6 > 100) {
    throw std::runtime_error("the runtime directory path is too long for a unix socket (" + d.opt.runtime_dir +
                             "); choose a shorter --runtime-dir");
  }
  try {
    d.heartbeat_socket.bind(d.heartbeat_endpoint);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error("cannot bind the heartbeat socket " + d.heartbeat_endpoint + ": " + e.what());
  }
  remove_stale_sockets(d.opt.runtime_dir);
  const std::string pid = std::to_string(::getpid());
  std::string err;
  if (!d.links.listen(d.opt.runtime_dir + "/link-" + pid + ".sock", err)) {
    throw std::runtime_error("cannot listen for workers in " + d.opt.runtime_dir + ": " + err);
  }
  if (!d.local_clients.listen(d.opt.runtime_dir + "/native-" + pid + ".sock", err)) {
    throw std::runtime_error("cannot listen for local clients in " + d.opt.runtime_dir + ": " + err);
  }
  const sigset_t set = broker_signals();
  d.signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (d.signal_fd < 0) throw std::runtime_error("signalfd failed");
  return d.opt.frontend;
}

namespace {
// The last-resort guard around the loop's handlers of worker input: a worker runs env code, so
// its messages are not trusted either; what a handler throws is logged and the loop goes on.
template <class F>
void guarded(const char* what, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    protocol::log_error(std::string("internal error handling ") + what + " (still serving): " + e.what());
  } catch (...) {
    protocol::log_error(std::string("internal error handling ") + what + " (still serving)");
  }
}
}  // namespace

int Broker::run(const std::function<void()>& on_ready, const Progress& on_progress) {
  auto& d = *impl_;
  d.start_pool();
  Frames frames;
  std::vector<zmq::pollitem_t> items;
  int rc = 0;
  while (true) {
    items.clear();
    items.push_back({d.frontend.handle(), 0, ZMQ_POLLIN, 0});
    // Heartbeats do not wake the loop: it wakes at least every kPollInterval and reads them all
    // then (2,000 workers' heartbeats would otherwise wake it 2,000 times a second, each time to
    // poll every link). The place is kept so that the items after it keep theirs.
    items.push_back({nullptr, -1, 0, 0});
    items.push_back({nullptr, d.signal_fd, ZMQ_POLLIN, 0});
    items.push_back({nullptr, d.zygote.alive() ? d.zygote.reply_fd() : -1, ZMQ_POLLIN, 0});
    items.push_back({d.inproc_frontend.handle(), 0, ZMQ_POLLIN, 0});
    items.push_back({d.zap.handle(), 0, ZMQ_POLLIN, 0});
    constexpr std::size_t kFirstLink = 6;
    d.links.fill(items);
    const std::size_t first_local = items.size();
    d.local_clients.fill(items);
    d.wait_for_events(items);
    // A pause during the wait is seen before any message is timed; a late turn is excused from
    // the workers' silence.
    const TimePoint turn_start = d.clock.now();
    d.registry.excuse(d.lateness.turn(turn_start), turn_start);
    guarded("the zygote's answer", [&] {
      if (d.zygote.alive() && (items[3].revents & ZMQ_POLLIN)) d.on_zygote();
    });
    if (items[2].revents & ZMQ_POLLIN) {
      if (d.read_signals()) d.begin_shutdown();
    }
    if (items[5].revents & ZMQ_POLLIN) d.on_zap();
    d.links.process(
        items, kFirstLink,
        [&d](const std::string& n, Frames& f) { guarded("a worker message", [&] { d.on_link_message(n, f); }); },
        [&d](const std::string& n, bool big) { d.on_link_closed(n, big); });
    d.local_clients.process(
        items, first_local, [&d](const std::string& n, Frames& f) { d.on_local_message(n, f); },
        [&d](const std::string& n, bool big) { d.on_local_closed(n, big); });
    // Every pending heartbeat, before check_time judges silence (bounded: a few per worker).
    const std::size_t heartbeat_budget = std::max(kMaxMessagesPerTurn, 8 * d.registry.size());
    for (std::size_t n = 0; n < heartbeat_budget && transport::recv(d.heartbeat_socket, frames); ++n) {
      guarded("a worker message", [&] { d.on_worker_message(frames); });
    }
    for (std::size_t n = 0; n < kMaxMessagesPerTurn && transport::recv(d.frontend, frames); ++n) {
      d.key_frames(frames, ClientPath::Tcp);
      d.on_frontend(frames);
    }
    for (std::size_t n = 0; n < kMaxMessagesPerTurn && transport::recv(d.inproc_frontend, frames); ++n) {
      d.key_frames(frames, ClientPath::Inproc);
      d.on_frontend(frames);
    }
    guarded("the timers", [&] { d.check_time(); });
    // Ready once every slot has been ready: clients may already hold instances (they can connect
    // before the announcement, e.g. after a broker restart on the same port).
    if (!d.ready_announced) {
      const auto ready = static_cast<std::size_t>(std::count_if(
          d.registry.slots().begin(), d.registry.slots().begin() + static_cast<std::ptrdiff_t>(d.opt.workers),
          [](const WorkerSlot& s) { return s.was_ready; }));
      if (on_progress) on_progress(ready, d.opt.workers);
      if (ready == d.opt.workers) {
        d.ready_announced = true;
        if (on_ready) on_ready();
      }
    }
    if (!d.ready_announced && !d.shutting_down) {
      for (const auto& s : d.registry.slots()) {
        if (s.consecutive_failures >= 3) {
          d.log("workers fail to start (" + s.last_exit + "); giving up");
          rc = 1;
          d.begin_shutdown();
          break;
        }
      }
    }
    if (d.shutting_down && d.progress_shutdown()) break;
  }
  d.log("stopped");
  return rc;
}

}  // namespace gymfarm::broker
