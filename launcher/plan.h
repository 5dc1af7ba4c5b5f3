// The launcher's plan of a job (`tessera run`, launcher/launcher.h): the
// output and checkpoint folders, the emulated hosts, the run's own etcd
// (--replicas) and every daemon's arguments, made before anything starts.
// launcher.cc starts and supervises the children planned here.
//
// Threading: the launcher's main thread only.
#ifndef TESSERA_LAUNCHER_PLAN_H_
#define TESSERA_LAUNCHER_PLAN_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/config.h"
#include "launcher/emulated_network.h"
#include "launcher/launcher.h"
#include "launcher/process.h"

namespace tessera {

// One job as the launcher runs it.
struct Job {
  JobConfig config;
  std::string dir;  // the output folder
  std::string server_bin, worker_bin;
  int64_t resumed_from = -1;
  bool pin_resume_clock = false;  // every shard restores exactly resumed_from (BSP)
  std::vector<Child> children;
  // emulation.link_rate: every daemon on a host of its own (index: servers,
  // then workers). Removed when the job ends, after its daemons stopped.
  std::unique_ptr<EmulatedNetwork> network;
  // --replicas without cluster.etcd: the etcd this run started (killed with
  // the Job), and its client address.
  pid_t etcd_pid = -1;
  std::string etcd;
  // Stops the run's etcd and removes the pushes workers kept in /dev/shm.
  ~Job();
};

// The output folder and the checkpoint folder: a fresh run gets empty ones,
// a resumed run finds the cut every shard restores (*server_sets: what the
// servers are told about it). INVALID_ARGUMENT (exit 2) when there is
// nothing to resume, or a fresh run would mix its checkpoints with another
// run's.
absl::Status PrepareFolders(const LaunchOptions& options, Job* job,
                            std::vector<std::string>* server_sets);
// emulation.link_rate: makes a host per daemon (servers, workers, then with
// --replicas the standbys and the run's own etcd) and says so.
// FAILED_PRECONDITION without CAP_NET_ADMIN (exit 2).
absl::Status MakeNetwork(const LaunchOptions& options, Job* job);
// Every daemon's arguments in job->children: the same config and overrides
// for all, the servers' addresses, and each daemon's identity; with
// --replicas the standbys, and the run's etcd (started here).
absl::Status PlanChildren(const LaunchOptions& options, const std::vector<std::string>& server_sets,
                          Job* job);
// Whether this run draws a job token: unless told not to (--open), or the
// config names a token file of its own.
bool DrawsToken(const LaunchOptions& options, const JobConfig& config);
// The daemon binary `name`, looked for next to this executable (an install)
// and in the Bazel output tree (bazel-bin/launcher/ -> bazel-bin/<dir>/).
std::string FindBinary(const std::string& name, const std::string& bazel_dir);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_PLAN_H_
