// Child processes of `tessera run`: spawning a daemon with its log, reaping
// it, stopping all of them, and choosing free loopback ports.
//
// Threading: the launcher's one thread.
#ifndef TESSERA_LAUNCHER_PROCESS_H_
#define TESSERA_LAUNCHER_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

struct Child {
  std::string name;  // "server-0", "worker-1"
  bool is_server = false;
  std::vector<std::string> args;          // the first start's
  std::vector<std::string> restart_args;  // later starts' (a resume restores only once)
  std::string log_path;
  pid_t pid = -1;
  bool running = false;
  int exit_code = -1;  // 128 + signal when killed
  int restarts = 0;
  bool superseded = false;  // a server that exited kExitSuperseded and is not started again
  int metrics_port = 0;  // its GET /metrics on metrics_host; 0: none
  std::string metrics_host = "127.0.0.1";
  std::string netns;  // the emulated host it runs on; empty: this machine's network
};

// `n` distinct loopback ports that are free now, chosen by the kernel.
// UNAVAILABLE with errno's text when a socket call fails.
absl::StatusOr<std::vector<int>> FreePorts(int n);

// Starts `binary` with `args`, stdout and stderr to `log_path` (appended
// when `append`, else truncated). The child gets SIGTERM when the launcher
// dies and ignores SIGINT (Ctrl-C goes to the launcher, which stops it).
// With `netns`, the child runs in that network namespace (/run/netns/NAME:
// a host of an emulated network) before it executes `binary`.
pid_t Spawn(const std::string& binary, const std::vector<std::string>& args,
            const std::string& log_path, bool append, const std::string& netns = "");

// Reaps children that exited, setting exit_code; false when none is running.
bool Reap(std::vector<Child>& children);

// SIGTERM to every running child; SIGKILL to those still running after grace.
void StopAll(std::vector<Child>& children, double grace_s);

// How a child ended, in words: "exit 3", "killed by signal 9".
std::string HowItEnded(const Child& child);

// The last non-empty line of a file ("" when it cannot be read).
std::string LastLine(const std::string& path);

double NowSeconds();

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_PROCESS_H_
