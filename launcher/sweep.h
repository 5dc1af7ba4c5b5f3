// `tessera sweep`: runs one job under every combination of a grid of
// settings, one run after another on this machine, and tabulates and plots
// the results, to compare sync modes, staleness bounds, compensations.
//
//   tessera sweep configs/fashion_mnist_mlp.yaml --grid consistency.mode=bsp,ssp,asp
//       --grid optimizer.staleness_compensation=none,dc --repeat 3 --out sweeps/modes
//
// Each run is `tessera run` (launcher.h) with the grid's values as --set
// overrides after the sweep's own, in DIR/runs/NNN. A live line says which
// run of how many is going. Then, in DIR:
//   results.csv  one row per run: run, repeat, every grid key, exit_code,
//                test_accuracy, test_loss, train_loss, wall_seconds,
//                train_seconds, samples_per_second, push_staleness_mean,
//                time_to_target_s (training seconds until rank 0's periodic
//                evaluation first reached --target-accuracy; empty if never),
//                out_dir;
//   report.md    per setting the mean +- sample sd over its repeats, and the plots;
//   *.png        from scripts/sweep_plots.py (matplotlib): test accuracy
//                against training seconds and against clock, training loss
//                against clock, one line per setting; and, when a grid key
//                has numeric values (cluster.workers), the job's samples/s
//                against it. The curves come from rank 0's periodic
//                evaluations (training.eval_every_steps) and progress lines
//                (worker.progress_interval_s).
//
// Threading: the calling thread; one job at a time.
#ifndef TESSERA_LAUNCHER_SWEEP_H_
#define TESSERA_LAUNCHER_SWEEP_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "launcher/launcher.h"

namespace tessera {

struct SweepOptions {
  // The job and what every run shares: config_path, overrides (--set),
  // binaries, max_restarts. live is ignored (runs are quiet; the sweep has
  // its own line). out_dir is the sweep's folder.
  LaunchOptions job;
  // key -> values, in the order given; every combination runs.
  std::vector<std::pair<std::string, std::vector<std::string>>> grid;
  int repeat = 1;              // runs of each combination
  double target_accuracy = 0;  // for time_to_target_s; 0: not reported
  std::string plot_script;     // empty: scripts/sweep_plots.py found near the binary
  bool live = true;            // rewrite the progress line in place
};

// Parses one --grid argument "key=v1,v2,...": values split at commas outside
// brackets ("model.layers=[784,32,10],[784,64,10]" is two values).
// INVALID_ARGUMENT naming the argument when there is no key or no value.
absl::StatusOr<std::pair<std::string, std::vector<std::string>>> ParseGrid(const std::string& arg);

// Runs the sweep. Exit code: 0 when every run succeeded (and the files were
// written), 1 when a run failed (the sweep goes on; its row says so) or the
// plots could not be made, 2 bad options or config, 130 interrupted.
int RunSweep(const SweepOptions& options);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_SWEEP_H_
