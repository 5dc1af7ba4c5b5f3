// The local launcher behind `tessera run CONFIG`: starts S server shards and
// W workers of one job on this machine (free loopback ports chosen for it),
// shows one live progress display for the whole job, and collects results.
//
// Every child dies with the launcher (PR_SET_PDEATHSIG) and is stopped at
// the end, on Ctrl-C, or when any daemon fails; then the launcher names the
// daemon that failed, its exit code and the last line it logged.
//
// Output folder: server-N.log, worker-N.log, metrics.jsonl (every worker's
// JSON lines), summary.json (test_accuracy, train_loss, wall_seconds,
// samples_per_second, mode, staleness, servers, workers, epochs).
//
// Threading: RunJob runs on the calling thread and installs SIGINT/SIGTERM
// handlers for its duration.
#ifndef TESSERA_LAUNCHER_LAUNCHER_H_
#define TESSERA_LAUNCHER_LAUNCHER_H_

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
};

// Runs the job to the end. Returns the process exit code: 0 success, 1 a
// daemon failed, 2 bad config or flags, 130 interrupted.
int RunJob(const LaunchOptions& options);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_LAUNCHER_H_
