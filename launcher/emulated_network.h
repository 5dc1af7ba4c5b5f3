// An emulated cluster on one machine: every daemon of a job on a host of its
// own (a network namespace with its own address), the hosts joined by a
// bridge in a namespace of its own, each host's link shaped both ways with
// tc's tbf (and delayed with netem, where the kernel has it). What crosses
// a host's link is what would cross a real one: shared memory must be off
// between hosts (/dev/shm is shared across namespaces), which the launcher
// sees to.
//
//   auto net = EmulatedNetwork::Create("tessera-4242", {"server-0", "worker-0"},
//                                      {.rate_bps = 1'000'000'000});
//   Spawn(binary, args, log, false, (*net)->Namespace(0));   // runs on host 0
//   (*net)->SetLink(1, /*up=*/false);                          // a partition
//
// Addresses: 10.77.N.1.. for the hosts, in a /24 of their own (N chosen so
// that concurrent jobs do not share one), routed nowhere. This machine's own
// namespace joins the bridge through an unshaped port at 10.77.N.254, so the
// launcher, `tessera status` and a scraper reach every host as an operator's
// machine would; nothing of it is reachable from outside this machine.
//
// Lifetime: the destructor removes every namespace (and with them the veths,
// the bridge and the qdiscs). A launcher killed with SIGKILL leaves them;
// the namespaces of launchers that no longer run are removed by name
// prefix, "tessera-PID-"): RemoveStale, which the launcher calls before
// Create. Needs CAP_NET_ADMIN (root): without it Create
// fails FAILED_PRECONDITION with one line that says so.
//
// Threading: one thread at a time (the launcher's); SetLinkOf may run from
// any process that can read the job's network.json.
#ifndef TESSERA_LAUNCHER_EMULATED_NETWORK_H_
#define TESSERA_LAUNCHER_EMULATED_NETWORK_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera {

struct LinkShape {
  uint64_t rate_bps = 0;     // each way; 0: unshaped
  double delay_ms = 0;       // one way; needs netem
};

class EmulatedNetwork {
 public:
  // Makes one host per name. `prefix` and a number of this process's
  // networks name every namespace ("PREFIX-N-br", "PREFIX-N-<host>"); the
  // launcher's prefix is "tessera-<its pid>".
  static absl::StatusOr<std::unique_ptr<EmulatedNetwork>> Create(
      const std::string& prefix, const std::vector<std::string>& hosts, const LinkShape& shape);
  ~EmulatedNetwork();
  EmulatedNetwork(const EmulatedNetwork&) = delete;
  EmulatedNetwork& operator=(const EmulatedNetwork&) = delete;

  size_t hosts() const { return hosts_.size(); }
  const std::string& Namespace(size_t host) const { return hosts_[host].ns; }
  const std::string& Address(size_t host) const { return hosts_[host].address; }
  const std::string& observer_address() const { return observer_address_; }

  // Takes host's link down (nothing crosses it either way: a partition) or
  // brings it back. Connections that were open survive a short cut.
  absl::Status SetLink(size_t host, bool up);

  // Writes where everything is, for `tessera net` and tests (JSON: the
  // bridge namespace, and per host its namespace, address and bridge port).
  absl::Status WriteDescription(const std::string& path) const;
  // SetLink by host name, from a description another process wrote. With
  // `peer`, only the path between `host` and `peer` goes down or up: the two
  // cannot reach each other, and every other host still reaches both.
  static absl::Status SetLinkOf(const std::string& description_path, const std::string& host,
                                bool up, const std::string& peer = "");

  // Removes namespaces "tessera-PID-*" whose launcher PID no longer runs;
  // returns how many.
  static int RemoveStale();

  // FAILED_PRECONDITION with a line saying why when this process cannot
  // make namespaces (no CAP_NET_ADMIN, no `ip`).
  static absl::Status CheckCapable();

 private:
  struct Host {
    std::string name, ns, address, port;  // port: its veth on the bridge
  };
  EmulatedNetwork() = default;
  std::string prefix_;
  std::string bridge_ns_;
  std::string observer_address_;
  std::string observer_;  // its veth in this namespace
  std::vector<Host> hosts_;
};

// Runs `argv` (no shell), returning its output; INTERNAL with the command
// and what it printed when it fails.
absl::StatusOr<std::string> RunCommand(const std::vector<std::string>& argv);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_EMULATED_NETWORK_H_
