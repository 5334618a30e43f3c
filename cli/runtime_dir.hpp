// The farm's runtime directory (pid file, token, log, the broker's sockets), opened once and
// checked so that another user cannot plant or redirect what the farm writes or reads there
// (docs/operations.md, "Security").
#pragma once

#include <optional>
#include <string>

namespace gymfarm::cli {

struct RuntimeDirOptions {
  bool create = true;         // create the directory (and missing parents, each mode 0700) when absent
  bool private_only = false;  // refuse any group/other access, not only write (the default directory)
};

class RuntimeDir {
 public:
  RuntimeDir() = default;
  ~RuntimeDir();
  RuntimeDir(const RuntimeDir&) = delete;
  RuntimeDir& operator=(const RuntimeDir&) = delete;
  RuntimeDir(RuntimeDir&& other) noexcept;
  RuntimeDir& operator=(RuntimeDir&& other) noexcept;

  // Opens PATH: every existing parent must be owned by root or by us and not writable by others
  // unless sticky (/tmp); the directory itself must be a real directory (not a symlink) owned by
  // our effective uid with no group/other write (no group/other access with private_only). A
  // missing one is created mode 0700 with mkdirat, as are missing parents, when options.create.
  // Returns "" with `out` open, or a message naming the path and what is wrong. A missing
  // directory with create off returns "" and leaves `out` closed.
  static std::string open(const std::string& path, const RuntimeDirOptions& options, RuntimeDir& out);

  bool is_open() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  // The directory's path with its parents' symlinks resolved: what the farm and its clients use.
  const std::string& path() const { return path_; }
  std::string path_of(const std::string& name) const { return path_ + "/" + name; }

  // Creates NAME in the directory (read-write): O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600.
  // A regular file of ours already there (a dead farm's) is removed first; a symlink, anything
  // that is not a regular file, or a file of another user is refused. Returns the fd, or -1 and `err`.
  int create_file(const std::string& name, std::string& err) const;

  // Reads at most max_bytes of NAME when it is a regular file owned by us (O_NOFOLLOW). nullopt
  // when it is absent (`err` empty) or not to be trusted (`err` says why).
  std::optional<std::string> read_file(const std::string& name, std::size_t max_bytes, std::string& err) const;

  // Removes NAME when it is a regular file owned by us.
  void remove_file(const std::string& name) const;

 private:
  int fd_ = -1;
  std::string path_;
};

}  // namespace gymfarm::cli
