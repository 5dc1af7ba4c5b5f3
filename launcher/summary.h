// What `tessera run` shows and leaves behind: the one-line live progress of
// every worker (from their metrics files) and summary.json at the end (from
// every worker's result file, and the launcher's own count of restarts).
//
// Threading: the launcher's one thread.
#ifndef TESSERA_LAUNCHER_SUMMARY_H_
#define TESSERA_LAUNCHER_SUMMARY_H_

#include <string>
#include <vector>

#include "common/config.h"
#include "launcher/process.h"

namespace tessera {

// One line with every worker's latest progress record in `dir`.
std::string ProgressLine(const std::string& dir, uint32_t workers, double elapsed);

struct RunFacts {
  double wall_seconds = 0;
  int64_t resumed_from_clock = -1;  // --resume: the cut every shard restored
  const std::vector<Child>* children = nullptr;  // for restarts per daemon
};

// Writes dir/summary.json and dir/metrics.jsonl (every worker's lines) and
// returns the one-line headline. Fields: job, test_accuracy, test_loss,
// train_loss, wall_seconds, train_seconds, samples_per_second, mode,
// staleness, servers, workers, epochs, batch_size, optimizer, device,
// restarts (per daemon), lost_clocks, reconnects, resumed_from_clock.
std::string WriteSummary(const JobConfig& config, const std::string& dir, const RunFacts& facts);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_SUMMARY_H_
