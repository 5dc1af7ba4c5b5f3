// The local launcher behind `tessera run CONFIG`: starts S server shards and
// W workers of one job on this machine (free loopback ports chosen for it),
// shows one live progress display for the whole job, and collects results.
//
// Every child dies with the launcher (PR_SET_PDEATHSIG) and is stopped at
// the end, on Ctrl-C, or when a daemon fails for good; then the launcher
// names the daemon that failed, how it ended and the last line it logged.
// A daemon killed by a signal, or a worker that exits 3 (a server lost), is
// restarted like Kubernetes would, up to max_restarts times each: a server
// restores its newest checkpoint, a worker goes on from the clock the shards
// hold for it. Exit 2 (a bad config) is never restarted.
//
// With emulation.link_rate set, every daemon runs on a host of its own (a
// network namespace, launcher/emulated_network.h) with shaped links, shared
// memory off; OUT/network.json says where each is (tessera net cut|heal).
//
// The parts: process.h spawns, reaps and stops children; summary.h shows
// progress and writes summary.json; this file plans the children (ports,
// arguments, output and checkpoint folders) and supervises them.
//
// Output folder: server-N.log, worker-N.log, metrics.jsonl (every worker's
// JSON lines), summary.json (test_accuracy, train_loss, wall_seconds,
// samples_per_second, mode, staleness, servers, workers, epochs, restarts
// per daemon, lost_clocks, reconnects, resumed_from_clock), and checkpoints/
// (checkpoint.dir unless the config names one).
//
// Threading: RunJob runs on the calling thread and installs SIGINT/SIGTERM
// handlers for its duration.
#ifndef TESSERA_LAUNCHER_LAUNCHER_H_
#define TESSERA_LAUNCHER_LAUNCHER_H_

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

namespace tessera {

struct LaunchOptions {
  std::string config_path;
  std::vector<std::string> overrides;  // --set a.b=value, passed to every daemon
  std::string out_dir;                 // empty: runs/<job name>-<time>
  std::string server_binary;           // empty: found next to the launcher
  std::string worker_binary;
  bool live = true;  // rewrite one progress line in place (a terminal)
  // No start line, progress or headline (tessera sweep prints its own);
  // restarts and failures are still said.
  bool quiet = false;
  int max_restarts = 3;  // per daemon
  // Continue the stopped job whose output folder this is, from the newest
  // clock every shard has a checkpoint of (out_dir is then this folder).
  std::string resume_dir;
  // Every daemon requires a job token that this run draws and writes to
  // DIR/token (0600): another process on this machine cannot join or stop
  // the job without reading that file (security.token_file). On by default
  // (`tessera run --open` turns it off); a config that names its own
  // security.token_file keeps it.
  bool token = true;
  // Every daemon serves GET /metrics on a free loopback port (printed at the
  // start, and written as a Prometheus file_sd target list to
  // DIR/metrics_targets.json).
  bool metrics = true;
  // A standby per shard (docs/DESIGN.md "Failover"): 0 or 1. With 1 the run
  // starts an etcd of its own (unless cluster.etcd names one; Debian's
  // etcd-server) and a `tessera-server --standby` per shard ("standby-N"),
  // and sets cluster.standbys and cluster.etcd for every daemon: a killed
  // primary's standby takes over, and the killed daemon, restarted, joins
  // as the new primary's standby. BSP with aggregation only.
  int replicas = 0;
  // Called with a daemon's name and pid each time one is started (tests,
  // fault injection).
  std::function<void(const std::string& name, pid_t pid)> on_spawn;
};

// Runs the job to the end. Returns the process exit code: 0 success, 1 a
// daemon failed (beyond its restarts), 2 bad config, flags or nothing to
// resume, 130 interrupted (servers write a last checkpoint: --resume).
int RunJob(const LaunchOptions& options);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_LAUNCHER_H_
