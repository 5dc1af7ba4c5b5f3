#include "server/epoch_planner.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace tessera {

EpochPlanner::EpochPlanner(uint32_t workers, uint32_t batch, uint32_t epochs)
    : batch_(batch), epochs_(epochs), rates_(workers, 0.0) {}

std::vector<uint32_t> EpochPlanner::Plan(uint32_t worker, int64_t epoch, double rate) {
  absl::MutexLock lock(&mu_);
  if (rate > 0) rates_[worker] = rate;
  auto it = plans_.find(epoch);
  if (it != plans_.end()) return it->second;
  const uint32_t total = static_cast<uint32_t>(rates_.size()) * batch_;
  std::vector<uint32_t> plan = Shares(rates_, total);
  plans_.emplace(epoch, plan);
  if (on_new_plan_) on_new_plan_(State{rates_, plans_});
  return plan;
}

void EpochPlanner::SetOnNewPlan(std::function<void(const State&)> hook) {
  absl::MutexLock lock(&mu_);
  on_new_plan_ = std::move(hook);
}

EpochPlanner::State EpochPlanner::Save() const {
  absl::MutexLock lock(&mu_);
  return State{rates_, plans_};
}

absl::Status EpochPlanner::Load(const State& state) {
  absl::MutexLock lock(&mu_);
  TESSERA_RETURN_IF_ERROR(Check(state));
  rates_ = state.rates;
  plans_ = state.plans;
  return absl::OkStatus();
}

absl::Status EpochPlanner::Merge(const State& log) {
  absl::MutexLock lock(&mu_);
  TESSERA_RETURN_IF_ERROR(Check(log));
  for (const auto& [epoch, shares] : log.plans) plans_[epoch] = shares;
  if (std::all_of(rates_.begin(), rates_.end(), [](double r) { return r == 0; })) {
    rates_ = log.rates;
  }
  return absl::OkStatus();
}

absl::Status EpochPlanner::Check(const State& state) const {
  const size_t workers = rates_.size();
  if (state.rates.size() != workers) {
    return absl::InvalidArgumentError(absl::StrCat("epoch planner: ", state.rates.size(),
                                                   " worker rates for ", workers, " workers"));
  }
  for (double r : state.rates) {
    if (!std::isfinite(r) || r < 0) {
      return absl::InvalidArgumentError(absl::StrCat("epoch planner: worker rate ", r));
    }
  }
  for (const auto& [epoch, shares] : state.plans) {
    uint64_t sum = 0;
    bool each_positive = shares.size() == workers;
    for (uint32_t share : shares) {
      sum += share;
      each_positive &= share >= 1;
    }
    if (epoch < kCalibration || epoch >= int64_t{epochs_} || !each_positive ||
        sum != uint64_t{workers} * batch_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "epoch planner: the plan of epoch ", epoch, " is not of an epoch in [-1, ", epochs_,
          ") with ", workers, " shares >= 1 summing to ", uint64_t{workers} * batch_));
    }
  }
  return absl::OkStatus();
}

std::vector<uint32_t> EpochPlanner::Shares(const std::vector<double>& rates, uint32_t total) {
  const size_t n = rates.size();
  double known_sum = 0;
  size_t known = 0;
  for (double r : rates) {
    if (r > 0) {
      known_sum += r;
      ++known;
    }
  }
  std::vector<double> weight(n, 1.0);
  if (known > 0) {
    const double mean = known_sum / known;
    for (size_t i = 0; i < n; ++i) weight[i] = rates[i] > 0 ? rates[i] : mean;
  }
  // Everyone gets 1; the rest is shared by weight, largest remainders last.
  const uint32_t rest = total - static_cast<uint32_t>(n);
  const double sum = std::accumulate(weight.begin(), weight.end(), 0.0);
  std::vector<uint32_t> shares(n, 1);
  std::vector<std::pair<double, size_t>> remainders;
  uint32_t given = 0;
  for (size_t i = 0; i < n; ++i) {
    const double exact = rest * weight[i] / sum;
    const uint32_t whole = static_cast<uint32_t>(std::floor(exact));
    shares[i] += whole;
    given += whole;
    remainders.emplace_back(exact - whole, i);
  }
  std::sort(remainders.begin(), remainders.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  for (size_t k = 0; given < rest; ++k, ++given) ++shares[remainders[k % n].second];
  return shares;
}

}  // namespace tessera
