// `tessera status --config JOB [--set k=v ...] [--watch]`: one screen about a
// running job, from every shard's Stats RPC and gRPC health check (with the
// job's TLS and token settings, as a worker would call).
//
//   job mnist (bsp): 2 shards, 4 workers; min clock 118; push staleness mean 0.00
//   SHARD ADDRESS          HEALTH   TABLES ROWS  MIB   PUSHES/S PARKED CHECKPOINT
//   0     127.0.0.1:40111  SERVING  4      0     0.20  412.0    1      none
//   WORKER CLOCK BEHIND STATE    WAITING ON  LAST SEEN
//   0      121   0      waiting  1           0.0 s ago
//   1      118   3      at min   -           0.0 s ago
//
// A worker's clock is the lowest any shard holds for it; "behind" counts
// clocks to the fastest worker; "waiting on" names the laggards a worker
// held by the consistency bound waits for; "last seen" is its most recent
// call to any shard. States: training, waiting (its pulls wait on the
// laggards), at min (the min clock's holder: others may wait for it),
// evicted, unregistered. Pushes/s comes from two Stats calls `interval` apart.
//
// Threading: one thread; it blocks for at most a Stats deadline (2 s) per
// shard, concurrently over the shards.
#ifndef TESSERA_LAUNCHER_STATUS_H_
#define TESSERA_LAUNCHER_STATUS_H_

#include <string>
#include <vector>

namespace tessera {

struct StatusOptions {
  std::string config_path;
  std::vector<std::string> overrides;  // --set a.b=value
  bool watch = false;                  // refresh every interval_s until interrupted
  double interval_s = 1.0;
};

// Prints the screen (once, or refreshed with --watch). Returns 0 when every
// shard answered (the last screen's, under --watch), 1 when one did not, 2
// for a bad config or flag.
int RunStatus(const StatusOptions& options);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_STATUS_H_
