#include "launcher/emulated_network.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

extern char** environ;

namespace tessera {
namespace {

constexpr int kCapNetAdmin = 12;  // linux/capability.h
// Serializes the choice of a subnet among launchers starting at once.
constexpr char kLockPath[] = "/tmp/tessera-emulated-network.lock";

absl::Status Run(const std::vector<std::string>& argv) { return RunCommand(argv).status(); }

// Every namespace name `ip netns list` shows.
std::vector<std::string> ListNamespaces() {
  std::vector<std::string> names;
  absl::StatusOr<std::string> out = RunCommand({"ip", "netns", "list"});
  if (!out.ok()) return names;
  for (absl::string_view line : absl::StrSplit(*out, '\n', absl::SkipEmpty())) {
    // "NAME (id: 3)" or "NAME"
    names.emplace_back(line.substr(0, line.find(' ')));
  }
  return names;
}

// The third octet of a 10.77.N.0/24 no interface of this namespace uses,
// starting from `first`. 0 when all are taken.
int FreeSubnet(int first) {
  absl::StatusOr<std::string> addresses = RunCommand({"ip", "-4", "-o", "addr", "show"});
  for (int i = 0; i < 250; ++i) {
    const int n = 1 + (first + i) % 250;
    if (!addresses.ok() ||
        addresses->find(absl::StrCat(" 10.77.", n, ".")) == std::string::npos) {
      return n;
    }
  }
  return 0;
}

// The tbf that shapes `dev`'s egress in namespace `ns` (under netem's
// handle 1: when `parent`).
std::vector<std::string> TbfCommand(const std::string& ns, const std::string& dev,
                                    uint64_t rate_bps, bool under_netem) {
  // Burst: a millisecond of the rate, and never less than a GSO segment.
  const uint64_t burst = std::max<uint64_t>(rate_bps / 8 / 1000, 96 * 1024);
  std::vector<std::string> cmd = {"tc", "-n", ns, "qdisc", "add", "dev", dev};
  if (under_netem) {
    cmd.insert(cmd.end(), {"parent", "1:", "handle", "2:"});
  } else {
    cmd.push_back("root");
  }
  cmd.insert(cmd.end(), {"tbf", "rate", absl::StrCat(rate_bps, "bit"), "burst",
                         absl::StrCat(burst), "latency", "50ms"});
  return cmd;
}

absl::Status Shape(const std::string& ns, const std::string& dev, const LinkShape& shape) {
  const bool delay = shape.delay_ms > 0;
  if (delay) {
    absl::Status s = Run({"tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:",
                          "netem", "delay", absl::StrCat(shape.delay_ms, "ms")});
    if (!s.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "emulation.link_delay_ms = ", shape.delay_ms,
          ": this kernel has no netem qdisc (", s.message(),
          "); links can be given a rate here but no delay: set emulation.link_delay_ms to 0"));
    }
  }
  if (shape.rate_bps > 0) return Run(TbfCommand(ns, dev, shape.rate_bps, delay));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return absl::InternalError(std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid;
  const int err = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  const std::string command = absl::StrJoin(argv, " ");
  if (err != 0) {
    close(fds[0]);
    return absl::InternalError(absl::StrCat(command, ": ", std::strerror(err)));
  }
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof(buf))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    out.append(buf, n);
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return absl::InternalError(absl::StrCat(command, ": ", out));
  }
  return out;
}

absl::Status EmulatedNetwork::CheckCapable() {
  std::ifstream in("/proc/self/status");
  uint64_t effective = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("CapEff:", 0) == 0) {
      effective = std::stoull(line.substr(7), nullptr, 16);
    }
  }
  if (((effective >> kCapNetAdmin) & 1) == 0) {
    return absl::FailedPreconditionError(
        "an emulated network needs CAP_NET_ADMIN (run tessera as root, or give it the "
        "capability: setcap cap_net_admin,cap_sys_admin+ep); this process has not");
  }
  if (!RunCommand({"ip", "-V"}).ok() || !RunCommand({"tc", "-V"}).ok()) {
    return absl::FailedPreconditionError(
        "an emulated network needs iproute2's ip and tc (apt-get install iproute2)");
  }
  return absl::OkStatus();
}

int EmulatedNetwork::RemoveStale() {
  static const std::regex kName("tessera-([0-9]+)-.*");
  int removed = 0;
  for (const std::string& ns : ListNamespaces()) {
    std::smatch m;
    if (!std::regex_match(ns, m, kName)) continue;
    int pid = 0;
    if (!absl::SimpleAtoi(m[1].str(), &pid)) continue;
    if (pid == getpid() || kill(pid, 0) == 0 || errno != ESRCH) continue;  // its launcher runs
    if (Run({"ip", "netns", "del", ns}).ok()) ++removed;
  }
  return removed;
}

absl::StatusOr<std::unique_ptr<EmulatedNetwork>> EmulatedNetwork::Create(
    const std::string& prefix, const std::vector<std::string>& hosts, const LinkShape& shape) {
  TESSERA_RETURN_IF_ERROR(CheckCapable());
  if (hosts.empty() || hosts.size() > 250) {
    return absl::InvalidArgumentError(
        absl::StrCat("an emulated network has 1 to 250 hosts, not ", hosts.size()));
  }
  // One launcher at a time picks a subnet and claims it.
  const int lock = open(kLockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock >= 0) flock(lock, LOCK_EX);
  struct Unlock {
    int fd;
    ~Unlock() {
      if (fd >= 0) close(fd);
    }
  } unlock{lock};

  // Networks of one process are numbered: the names of one never meet
  // another's while the kernel is still removing it.
  static std::atomic<int> sequence{0};
  const int n = sequence.fetch_add(1);
  std::unique_ptr<EmulatedNetwork> net(new EmulatedNetwork());
  net->prefix_ = absl::StrCat(prefix, "-", n);
  net->bridge_ns_ = net->prefix_ + "-br";
  const int subnet = FreeSubnet(static_cast<int>(getpid()));
  if (subnet == 0) {
    return absl::ResourceExhaustedError("every 10.77.N.0/24 subnet is in use on this machine");
  }
  const std::string net_prefix = absl::StrCat("10.77.", subnet, ".");
  // From here on the destructor removes whatever was made.
  const std::string& br = net->bridge_ns_;
  // A namespace of this name can only be a dead process's with our pid.
  (void)Run({"ip", "netns", "del", br});
  TESSERA_RETURN_IF_ERROR(Run({"ip", "netns", "add", br}));
  TESSERA_RETURN_IF_ERROR(Run({"ip", "-n", br, "link", "add", "br0", "type", "bridge"}));
  TESSERA_RETURN_IF_ERROR(Run({"ip", "-n", br, "link", "set", "br0", "up"}));
  for (size_t i = 0; i < hosts.size(); ++i) {
    Host h;
    h.name = hosts[i];
    h.ns = absl::StrCat(net->prefix_, "-", hosts[i]);
    h.address = absl::StrCat(net_prefix, i + 1);
    h.port = absl::StrCat("h", i);
    (void)Run({"ip", "netns", "del", h.ns});
    TESSERA_RETURN_IF_ERROR(Run({"ip", "netns", "add", h.ns}));
    net->hosts_.push_back(h);
    TESSERA_RETURN_IF_ERROR(Run({"ip", "-n", br, "link", "add", h.port, "type", "veth", "peer",
                                 "name", "eth0", "netns", h.ns}));
    TESSERA_RETURN_IF_ERROR(Run({"ip", "-n", br, "link", "set", h.port, "master", "br0"}));
    TESSERA_RETURN_IF_ERROR(Run({"ip", "-n", br, "link", "set", h.port, "up"}));
    TESSERA_RETURN_IF_ERROR(Run({"ip", "-n", h.ns, "link", "set", "lo", "up"}));
    TESSERA_RETURN_IF_ERROR(
        Run({"ip", "-n", h.ns, "addr", "add", h.address + "/24", "dev", "eth0"}));
    TESSERA_RETURN_IF_ERROR(Run({"ip", "-n", h.ns, "link", "set", "eth0", "up"}));
    // Up: the host's egress. Down: the bridge port's egress toward it.
    TESSERA_RETURN_IF_ERROR(Shape(h.ns, "eth0", shape));
    TESSERA_RETURN_IF_ERROR(Shape(br, h.port, shape));
  }
  // This machine's own namespace, unshaped, as an operator's host.
  const std::string observer = absl::StrCat("t", getpid(), "o", n);  // <= 15 characters
  net->observer_address_ = net_prefix + "254";
  (void)Run({"ip", "link", "del", observer});
  TESSERA_RETURN_IF_ERROR(Run(
      {"ip", "link", "add", observer, "type", "veth", "peer", "name", "obs", "netns", br}));
  net->observer_ = observer;
  TESSERA_RETURN_IF_ERROR(Run({"ip", "-n", br, "link", "set", "obs", "master", "br0"}));
  TESSERA_RETURN_IF_ERROR(Run({"ip", "-n", br, "link", "set", "obs", "up"}));
  TESSERA_RETURN_IF_ERROR(
      Run({"ip", "addr", "add", net->observer_address_ + "/24", "dev", observer}));
  TESSERA_RETURN_IF_ERROR(Run({"ip", "link", "set", observer, "up"}));
  return net;
}

EmulatedNetwork::~EmulatedNetwork() {
  // Removing a namespace removes its veths, whose peers go with them, and
  // their qdiscs; the kernel does that after the call returns, so the
  // observer's port in this namespace is removed first, at once.
  if (!observer_.empty()) (void)Run({"ip", "link", "del", observer_});
  for (const Host& h : hosts_) (void)Run({"ip", "netns", "del", h.ns});
  if (!bridge_ns_.empty()) (void)Run({"ip", "netns", "del", bridge_ns_});
}

absl::Status EmulatedNetwork::SetLink(size_t host, bool up) {
  if (host >= hosts_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("no host ", host));
  }
  return Run({"ip", "-n", bridge_ns_, "link", "set", hosts_[host].port, up ? "up" : "down"});
}

absl::Status EmulatedNetwork::WriteDescription(const std::string& path) const {
  nlohmann::json j;
  j["bridge_namespace"] = bridge_ns_;
  j["observer_address"] = observer_address_;
  for (const Host& h : hosts_) {
    j["hosts"][h.name] = {{"namespace", h.ns}, {"address", h.address}, {"bridge_port", h.port}};
  }
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status EmulatedNetwork::SetLinkOf(const std::string& description_path,
                                        const std::string& host, bool up,
                                        const std::string& peer) {
  std::ifstream in(description_path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(
        description_path, ": no such file (a job run with --emulate-network writes it)"));
  }
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  std::vector<std::string> named = {host};
  if (!peer.empty()) named.push_back(peer);
  for (const std::string& name : named) {
    if (!j.is_object() || !j.contains("hosts") || !j["hosts"].contains(name)) {
      return absl::NotFoundError(absl::StrCat(description_path, " names no host '", name, "'"));
    }
  }
  if (peer.empty()) {
    return Run({"ip", "-n", j["bridge_namespace"].get<std::string>(), "link", "set",
                j["hosts"][host]["bridge_port"].get<std::string>(), up ? "up" : "down"});
  }
  if (peer == host) return absl::InvalidArgumentError("a host's path to itself cannot be cut");
  // The path between the two alone: on each, the other's address routed
  // nowhere ("unreachable": a sender gets EHOSTUNREACH, as from a router
  // that lost its route; open connections stall and retry).
  for (const auto& [from, to] : {std::pair(host, peer), std::pair(peer, host)}) {
    const std::string ns = j["hosts"][from]["namespace"].get<std::string>();
    const std::string address = j["hosts"][to]["address"].get<std::string>() + "/32";
    TESSERA_RETURN_IF_ERROR(up ? Run({"ip", "-n", ns, "route", "del", "unreachable", address})
                               : Run({"ip", "-n", ns, "route", "replace", "unreachable", address}));
  }
  return absl::OkStatus();
}

}  // namespace tessera
