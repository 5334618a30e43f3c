#include "broker/zygote.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <sstream>

#include "protocol/token.hpp"

namespace gymfarm::broker {

Zygote::~Zygote() { gone(); }

bool Zygote::start(Launcher& launcher, const std::string& exe, std::vector<std::string> args, std::string& err) {
  int cmd[2], reply[2];
  if (pipe2(cmd, O_CLOEXEC) != 0) {
    err = "pipe failed";
    return false;
  }
  if (pipe2(reply, O_CLOEXEC) != 0) {
    ::close(cmd[0]);
    ::close(cmd[1]);
    err = "pipe failed";
    return false;
  }
  args.insert(args.begin(), "--zygote");
  pid_ = launcher.spawn(exe, args, err, 0, 0, cmd[0], reply[1]);
  ::close(cmd[0]);
  ::close(reply[1]);
  if (pid_ == 0) {
    ::close(cmd[1]);
    ::close(reply[0]);
    return false;
  }
  cmd_ = cmd[1];
  reply_ = reply[0];
  fcntl(reply_, F_SETFL, fcntl(reply_, F_GETFL) | O_NONBLOCK);
  return true;
}

bool Zygote::request(const std::string& identity) {
  if (!alive()) return false;
  const std::string line = "spawn " + identity + "\n";
  // A short line to a pipe is written whole; the zygote answers in about a millisecond per worker.
  return ::write(cmd_, line.data(), line.size()) == static_cast<ssize_t>(line.size());
}

bool Zygote::check(uint64_t key, std::string_view env_id, bool aliases, bool strict_kwargs) {
  if (!alive()) return false;
  const std::string line = "check " + std::to_string(key) + " " + protocol::to_hex(env_id) + (aliases ? " 1" : " 0") +
                           (strict_kwargs ? " 1" : " 0") + "\n";
  return ::write(cmd_, line.data(), line.size()) == static_cast<ssize_t>(line.size());
}

namespace {
// "check KEY ok" or "check KEY bad MESSAGE KIND ERROR" (hex); nullopt for anything else.
std::optional<Zygote::CheckAnswer> parse_check(const std::string& line) {
  std::istringstream in(line.substr(6));
  std::string key, verdict, message, kind, error;
  in >> key >> verdict >> message >> kind >> error;
  Zygote::CheckAnswer a;
  if (std::from_chars(key.data(), key.data() + key.size(), a.key).ec != std::errc{}) return std::nullopt;
  if (verdict == "ok") return a;
  auto m = protocol::from_hex(message), k = protocol::from_hex(kind), e = protocol::from_hex(error);
  if (verdict != "bad" || !m || !k || !e) return std::nullopt;
  a.bad = true;
  a.message = std::move(*m);
  a.kind = std::move(*k);
  a.gymnasium_error = std::move(*e);
  return a;
}
}  // namespace

std::vector<std::pair<std::string, int>> Zygote::read() {
  std::vector<std::pair<std::string, int>> out;
  if (reply_ < 0) return out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(reply_, buf, sizeof buf)) > 0) buf_.append(buf, static_cast<std::size_t>(n));
  std::size_t eol;
  while ((eol = buf_.find('\n')) != std::string::npos) {
    const std::string line = buf_.substr(0, eol);
    buf_.erase(0, eol + 1);
    if (line.rfind("check ", 0) == 0) {
      if (auto a = parse_check(line)) checks_.push_back(std::move(*a));
      continue;
    }
    const auto space = line.rfind(' ');
    if (space == std::string::npos) continue;
    const std::string identity = line.substr(0, space);
    if (identity == "ready") continue;
    int pid = 0;
    const char* digits = line.c_str() + space + 1;
    std::from_chars(digits, line.c_str() + line.size(), pid);  // not a number: 0, a failed fork
    out.emplace_back(identity, pid);
  }
  return out;
}

void Zygote::gone() {
  if (cmd_ >= 0) ::close(cmd_);
  if (reply_ >= 0) ::close(reply_);
  cmd_ = reply_ = -1;
  pid_ = 0;
  buf_.clear();
  checks_.clear();
}

}  // namespace gymfarm::broker
