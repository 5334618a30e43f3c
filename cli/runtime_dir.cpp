#include "cli/runtime_dir.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

namespace gymfarm::cli {

namespace fs = std::filesystem;

namespace {

std::string mode_text(mode_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

std::string uid_text(uid_t uid) { return "uid " + std::to_string(uid); }

std::string errno_text() { return std::generic_category().message(errno); }

// Closes the fd it holds when it goes out of scope.
struct FdGuard {
  int fd = -1;
  explicit FdGuard(int f) : fd(f) {}
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  void reset(int f) {
    if (fd >= 0) ::close(fd);
    fd = f;
  }
  int release() { return std::exchange(fd, -1); }
};

// Why an existing parent directory cannot be trusted to hold the runtime directory, or "": whoever
// may write to it may rename the runtime directory away and put their own in its place.
std::string untrusted_parent(const struct stat& st, const std::string& path) {
  if (!S_ISDIR(st.st_mode)) return "the parent directory " + path + " of the runtime directory is not a directory";
  if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
    return "the parent directory " + path + " of the runtime directory is owned by " + uid_text(st.st_uid) +
           ", neither root nor this user (" + uid_text(::geteuid()) + "); choose another --runtime-dir";
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
    return "the parent directory " + path + " of the runtime directory is writable by group or others (mode " +
           mode_text(st.st_mode) + ") and not sticky; choose another --runtime-dir";
  }
  return "";
}

// Why the runtime directory itself cannot be trusted, or "".
std::string untrusted_dir(const struct stat& st, const std::string& path, bool private_only) {
  const std::string fix = " (remove it, or choose another --runtime-dir)";
  if (S_ISLNK(st.st_mode)) return "the runtime directory " + path + " is a symlink, not a directory" + fix;
  if (!S_ISDIR(st.st_mode)) return "the runtime directory " + path + " is not a directory" + fix;
  if (st.st_uid != ::geteuid()) {
    return "the runtime directory " + path + " is owned by " + uid_text(st.st_uid) + ", not by this user (" +
           uid_text(::geteuid()) + ")" + fix;
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return "the runtime directory " + path + " is writable by group or others (mode " + mode_text(st.st_mode) + ")" +
           fix;
  }
  if (private_only && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    return "the runtime directory " + path + " is open to group or others (mode " + mode_text(st.st_mode) +
           "); the default runtime directory must be mode 0700" + fix;
  }
  return "";
}

// Why a file found in the runtime directory is not to be trusted, read or replaced, or "".
std::string untrusted_file(const struct stat& st, const std::string& path) {
  if (S_ISLNK(st.st_mode)) return path + " is a symlink; not following it (remove it)";
  if (!S_ISREG(st.st_mode)) return path + " is not a regular file (remove it)";
  if (st.st_uid != ::geteuid()) {
    return path + " is owned by " + uid_text(st.st_uid) + ", not by this user (" + uid_text(::geteuid()) +
           "); not trusting it (remove it)";
  }
  return "";
}

}  // namespace

RuntimeDir::~RuntimeDir() {
  if (fd_ >= 0) ::close(fd_);
}

RuntimeDir::RuntimeDir(RuntimeDir&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}

RuntimeDir& RuntimeDir::operator=(RuntimeDir&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

std::string RuntimeDir::open(const std::string& requested, const RuntimeDirOptions& options, RuntimeDir& out) {
  out = RuntimeDir();
  if (requested.empty()) return "the runtime directory path is empty";
  std::error_code ec;
  fs::path p = fs::absolute(requested, ec);
  if (ec) return "cannot resolve the runtime directory " + requested + ": " + ec.message();
  p = p.lexically_normal();
  if (!p.has_filename()) p = p.parent_path();  // "dir/" names "dir"
  const std::string name = p.filename().string();
  if (name.empty() || name == "." || name == "..") return "the runtime directory cannot be " + requested;
  // Symlinks among the parents are resolved once here; the walk below follows none, so one put in
  // place afterwards is refused rather than followed.
  const fs::path parent = fs::weakly_canonical(p.parent_path(), ec);
  if (ec) return "cannot resolve the parent of the runtime directory " + requested + ": " + ec.message();

  FdGuard dir(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (dir.fd < 0) return "cannot open /: " + errno_text();
  struct stat st {};
  std::string at = "/";
  if (::fstat(dir.fd, &st) != 0) return "cannot inspect /: " + errno_text();
  if (std::string why = untrusted_parent(st, at); !why.empty()) return why;
  for (const auto& part : parent.relative_path()) {
    const std::string comp = part.string();
    if (comp.empty() || comp == ".") continue;
    std::string here = at == "/" ? at : at + "/";
    here += comp;
    bool created = false;
    int next = ::openat(dir.fd, comp.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0 && errno == ENOENT) {
      if (!options.create) return "";  // no such directory: nothing to find there
      if (::mkdirat(dir.fd, comp.c_str(), 0700) == 0) {
        created = true;
      } else if (errno != EEXIST) {
        return "cannot create " + here + " (a parent of the runtime directory): " + errno_text();
      }
      next = ::openat(dir.fd, comp.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (next < 0) {
      if (errno == ENOTDIR || errno == ELOOP) {
        return "the parent directory " + here + " of the runtime directory is a symlink or not a directory";
      }
      return "cannot open " + here + " (a parent of the runtime directory): " + errno_text();
    }
    dir.reset(next);
    if (::fstat(dir.fd, &st) != 0) return "cannot inspect " + here + ": " + errno_text();
    if (created) {
      if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        return "the parent directory " + here + " of the runtime directory changed while it was being created";
      }
    } else if (std::string why = untrusted_parent(st, here); !why.empty()) {
      return why;
    }
    at = here;
  }

  const std::string full = (at == "/" ? at : at + "/") + name;
  bool created = false;
  for (int attempt = 0;; ++attempt) {
    if (::fstatat(dir.fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) break;
    if (errno != ENOENT) return "cannot inspect the runtime directory " + full + ": " + errno_text();
    if (!options.create) return "";
    if (::mkdirat(dir.fd, name.c_str(), 0700) == 0) {
      created = true;
    } else if (errno != EEXIST || attempt > 0) {
      return "cannot create the runtime directory " + full + ": " + errno_text();
    }
  }
  if (std::string why = untrusted_dir(st, full, options.private_only); !why.empty()) return why;
  FdGuard fd(::openat(dir.fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.fd < 0) {
    if (errno == ENOTDIR || errno == ELOOP) return "the runtime directory " + full + " is a symlink or not a directory";
    return "cannot open the runtime directory " + full + ": " + errno_text();
  }
  if (::fstat(fd.fd, &st) != 0) return "cannot inspect the runtime directory " + full + ": " + errno_text();
  // What was opened is what counts (it may differ from what was inspected a moment before).
  if (std::string why = untrusted_dir(st, full, options.private_only || created); !why.empty()) return why;
  out.fd_ = fd.release();
  out.path_ = full;
  return "";
}

int RuntimeDir::create_file(const std::string& name, std::string& err) const {
  const std::string full = path_of(name);
  for (int attempt = 0; attempt < 3; ++attempt) {
    const int fd = ::openat(fd_, name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) return fd;
    if (errno != EEXIST) {
      err = "cannot create " + full + ": " + errno_text();
      return -1;
    }
    struct stat st {};
    if (::fstatat(fd_, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone meanwhile
    if (std::string why = untrusted_file(st, full); !why.empty()) {
      err = why;
      return -1;
    }
    // a regular file of ours: a dead farm's; replace it with a fresh one
    if (::unlinkat(fd_, name.c_str(), 0) != 0 && errno != ENOENT) {
      err = "cannot remove the stale " + full + ": " + errno_text();
      return -1;
    }
  }
  err = "cannot create " + full + ": another process keeps creating it";
  return -1;
}

std::optional<std::string> RuntimeDir::read_file(const std::string& name, std::size_t max_bytes,
                                                 std::string& err) const {
  err.clear();
  const std::string full = path_of(name);
  FdGuard fd(::openat(fd_, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (fd.fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    err = errno == ELOOP ? full + " is a symlink; not following it (remove it)"
                         : "cannot read " + full + ": " + errno_text();
    return std::nullopt;
  }
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) {
    err = "cannot inspect " + full + ": " + errno_text();
    return std::nullopt;
  }
  if (std::string why = untrusted_file(st, full); !why.empty()) {
    err = why;
    return std::nullopt;
  }
  std::string data;
  char buf[4096];
  while (data.size() < max_bytes) {
    const ssize_t n = ::read(fd.fd, buf, std::min(sizeof buf, max_bytes - data.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    data.append(buf, static_cast<std::size_t>(n));
  }
  return data;
}

void RuntimeDir::remove_file(const std::string& name) const {
  struct stat st {};
  if (::fstatat(fd_, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return;
  if (untrusted_file(st, path_of(name)).empty()) ::unlinkat(fd_, name.c_str(), 0);
}

}  // namespace gymfarm::cli
