#include "launcher/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sched.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"

namespace tessera {

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

absl::StatusOr<std::vector<int>> FreePorts(int n) {
  // Every socket stays bound until all are chosen, so the kernel cannot hand
  // out one port twice.
  std::vector<int> fds, ports;
  absl::Status status;
  for (int i = 0; i < n && status.ok(); ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      status = absl::UnavailableError(absl::StrCat("socket: ", std::strerror(errno)));
      break;
    }
    fds.push_back(fd);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      status = absl::UnavailableError(
          absl::StrCat("cannot pick a free loopback port: ", std::strerror(errno)));
      break;
    }
    ports.push_back(ntohs(addr.sin_port));
  }
  for (int fd : fds) close(fd);
  if (!status.ok()) return status;
  return ports;
}

pid_t Spawn(const std::string& binary, const std::vector<std::string>& args,
            const std::string& log_path, bool append, const std::string& netns) {
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid != 0) return pid;
  // Child: die with the launcher, whatever kills it.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(1);
  signal(SIGINT, SIG_IGN);
  if (!netns.empty()) {
    const std::string path = "/run/netns/" + netns;
    const int ns = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
      std::fprintf(stderr, "cannot enter network namespace %s: %s\n", netns.c_str(),
                   std::strerror(errno));
      _exit(127);
    }
    close(ns);
  }
  const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0644);
  if (fd >= 0) {
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
  }
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(binary.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  execv(binary.c_str(), argv.data());
  std::fprintf(stderr, "cannot execute %s: %s\n", binary.c_str(), std::strerror(errno));
  _exit(127);
}

bool Reap(std::vector<Child>& children) {
  bool any = false;
  for (Child& c : children) {
    if (!c.running) continue;
    int status;
    const pid_t r = waitpid(c.pid, &status, WNOHANG);
    if (r == c.pid) {
      c.running = false;
      c.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    } else {
      any = true;
    }
  }
  return any;
}

void StopAll(std::vector<Child>& children, double grace_s) {
  for (Child& c : children) {
    if (c.running) kill(c.pid, SIGTERM);
  }
  const double deadline = NowSeconds() + grace_s;
  while (Reap(children) && NowSeconds() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (Child& c : children) {
    if (c.running) {
      kill(c.pid, SIGKILL);
      waitpid(c.pid, nullptr, 0);
      c.running = false;
      c.exit_code = 128 + SIGKILL;
    }
  }
}

std::string HowItEnded(const Child& child) {
  if (child.exit_code > 128) return absl::StrCat("killed by signal ", child.exit_code - 128);
  return absl::StrCat("exit ", child.exit_code);
}

std::string LastLine(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty()) last = line;
  }
  return last;
}

}  // namespace tessera
