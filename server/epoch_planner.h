// EpochPlanner: training.balance dynamic's shares of an epoch. Each step of
// an epoch trains on a global batch of workers x batch examples; a worker's
// share of it follows its measured compute rate, so a slow worker takes
// fewer examples per step and stops setting everyone's pace, while the
// epoch's examples are still each used once (workers/trainer.h says how
// they are cut from the epoch's order).
//
// Epoch 0 has two plans: kCalibration for its first
// training.balance_calibration_steps steps (made when no rate is known yet:
// equal parts), and plan 0 for the rest, made from the rates the workers
// measured over those steps. Any plan serves any step, so the switch
// mid-epoch keeps every example once per epoch (a step's global batch is cut
// in the same places by everyone who uses the same plan).
//
// The first ask for an epoch makes its plan from the latest rates; every
// later ask for that epoch gets the same plan, so all workers agree however
// their asks interleave. Every plan is kept for the whole job (epochs are
// bounded by training.epochs, so at most epochs + 1 plans: a restarted
// worker asks again and gets the same) and goes into the shard's checkpoints with the
// rates (Save/Load). A plan made after the newest checkpoint is kept by the
// hook SetOnNewPlan installs (shard 0's plan log, written before the plan is
// answered) and merged back at a restart (Merge), so a restarted shard
// answers every plan as it was first made (docs/DESIGN.md).
//
// Threading: thread-safe (one mutex, held for a few microseconds; while a
// new plan's hook runs, once an epoch, for as long as the hook takes).
#ifndef TESSERA_SERVER_EPOCH_PLANNER_H_
#define TESSERA_SERVER_EPOCH_PLANNER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace tessera {

class EpochPlanner {
 public:
  // The plan of epoch 0's calibration steps.
  static constexpr int64_t kCalibration = -1;

  // REQUIRES: workers >= 1, batch >= 1. Plans exist for epochs
  // [kCalibration, epochs).
  EpochPlanner(uint32_t workers, uint32_t batch, uint32_t epochs);

  // Records `worker`'s rate (0: unknown, kept as it was) and returns the
  // plan of `epoch`: shares by rank, each >= 1, summing to workers x batch.
  // REQUIRES: worker < workers, kCalibration <= epoch < epochs, rate finite
  // and >= 0.
  std::vector<uint32_t> Plan(uint32_t worker, int64_t epoch, double rate);

  // Shares of `total` examples proportional to `rates` (0: unknown, counted
  // as the mean of the known; none known: equal), each >= 1, by largest
  // remainders. REQUIRES: total >= rates.size() >= 1.
  static std::vector<uint32_t> Shares(const std::vector<double>& rates, uint32_t total);

  // The planner's state, for checkpoints.
  struct State {
    std::vector<double> rates;                          // by rank
    std::map<int64_t, std::vector<uint32_t>> plans;     // by epoch
  };
  State Save() const;
  // Replaces the state with `state`. INVALID_ARGUMENT (nothing changed) when
  // it does not fit this job: a rate count other than the workers', a rate
  // that is not finite and >= 0, a plan of an epoch outside [kCalibration,
  // epochs), or a plan that is not workers shares >= 1 summing to workers x
  // batch.
  absl::Status Load(const State& state);
  // Takes the plans of `log` (a later state than the one loaded: the plan
  // log's), each replacing a plan of the same epoch; the rates stay as they
  // are unless none is known. INVALID_ARGUMENT (nothing changed) as Load.
  absl::Status Merge(const State& log);

  // `hook` is called with the planner's state each time a plan is made,
  // before that plan is returned, with the planner's mutex held (it must not
  // call the planner). Call before the first Plan.
  void SetOnNewPlan(std::function<void(const State&)> hook);

 private:
  // INVALID_ARGUMENT when `state` does not fit this planner (see Load).
  absl::Status Check(const State& state) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const uint32_t batch_;
  const uint32_t epochs_;
  mutable absl::Mutex mu_;
  std::vector<double> rates_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, std::vector<uint32_t>> plans_ ABSL_GUARDED_BY(mu_);
  std::function<void(const State&)> on_new_plan_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tessera

#endif  // TESSERA_SERVER_EPOCH_PLANNER_H_
