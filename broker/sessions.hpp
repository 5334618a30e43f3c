#pragma once
// Who a client is, and what its hello granted it (docs/protocol.md "Sessions").
//
// A client's key is chosen by the broker, never by the peer: a path tag, then for TCP/IPC peers
// the connection id the broker's ZAP handler gave the connection (ZeroMQ stamps it on every message
// as "User-Id"; the peer cannot set it), then the peer's routing id or the local socket's
// connection name. Keys of different paths or different connections cannot collide, so a ZeroMQ
// client that picks another client's routing id (even a local socket's name) is a stranger.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace gymfarm::broker {

enum class ClientPath : char {
  Tcp = 'z',     // the native ZeroMQ endpoint (tcp:// or ipc://), through the ZAP handler
  Inproc = 'i',  // the gateway's clients in this process
  Local = 'l',   // the local unix socket
};

// The connection id's fixed width in a key (the ZAP handler writes 16 hex digits).
constexpr std::size_t kConnectionIdSize = 16;

std::string client_key(ClientPath path, std::string_view address, std::string_view connection = {});

struct ClientAddress {
  ClientPath path;
  std::string_view address;  // the routing id (Tcp, Inproc) or the stream's name (Local)
};
// nullopt for a key no client_key() made.
std::optional<ClientAddress> parse_client_key(std::string_view key);
// Who owns what a client makes: the client itself, except that all of the gateway's clients are
// one principal (the gateway keeps its dialects' own tables and rules).
std::string_view principal(std::string_view key);
// A peer-chosen session name as the farm shows it: at most kMaxSessionName bytes, printable ASCII
// only (anything else becomes '?'), so it is safe in a table, a log line or a label.
constexpr std::size_t kMaxSessionName = 64;
std::string session_name(std::string_view name);
// How a client reached the farm, for display: "tcp" (the native ZeroMQ endpoint, tcp:// or ipc://),
// "local" (the local socket) or "gateway" (a dialect's client in the gateway).
std::string_view client_via(std::string_view key);

// How a session is shown (stats, the dashboard): the number the farm gave it when it opened
// (1, 2, ... in order) and the name its hello's `client` gave, cleaned (session_name()).
struct SessionLabel {
  uint64_t number = 0;
  std::string name;
};

// The sessions hellos opened. A session is authorized when its hello carried the farm's token.
// Sessions on the local socket end when it closes; TCP sessions cannot be seen to end, so when the
// table is full the least recently active TCP session that holds nothing (no instance, no request
// in flight) makes room; if every one holds something, a new hello is refused. Nothing clears the
// table as a whole, and one client's hellos cannot end another's session while it holds work.
class SessionTable {
 public:
  explicit SessionTable(std::size_t max_sessions) : max_(max_sessions ? max_sessions : 1) {}

  enum class Open { Opened, Renewed, Full };
  // Opens (or renews) `client`'s session. `busy(key)` tells whether a session holds work.
  // `lease`: the session ends when its client sends nothing for that long (zero: no lease; it
  // ends with its local socket, or never for TCP).
  Open open(const std::string& client, bool authorized, const std::function<bool(const std::string&)>& busy,
            bool keep_instances = false, std::chrono::steady_clock::duration lease = {},
            std::chrono::steady_clock::time_point now = {});
  bool authorized(const std::string& client) const;
  // Whether the session asked that its instances outlive it (hello `keep_instances`).
  bool keeps_instances(const std::string& client) const;
  // Marks activity (least-recently-active order, and the lease); unknown clients are ignored.
  void touch(const std::string& client, std::chrono::steady_clock::time_point now = {});
  // Sessions whose lease ran out by `now`, except those `busy(key)` says still wait for replies.
  std::vector<std::string> expired(std::chrono::steady_clock::time_point now,
                                   const std::function<bool(const std::string&)>& busy) const;
  void close(const std::string& client);
  std::size_t size() const { return index_.size(); }

  // How a session is shown (SessionLabel).
  void set_name(const std::string& client, std::string_view name);
  std::optional<SessionLabel> label(const std::string& client) const;
  std::size_t evicted() const { return evicted_; }

 private:
  struct Entry {
    std::string key;
    bool authorized = false;
    bool keep_instances = false;
    std::chrono::steady_clock::duration lease{};
    std::chrono::steady_clock::time_point last{};
    SessionLabel label;
  };
  uint64_t opened_ = 0;     // sessions ever opened: the next one's number
  std::size_t leased_ = 0;  // sessions with a lease (expired() scans only when there are some)
  std::size_t max_;
  std::size_t evicted_ = 0;
  std::list<Entry> order_;  // most recently active first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
};

}  // namespace gymfarm::broker
