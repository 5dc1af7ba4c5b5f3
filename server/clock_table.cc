#include "server/clock_table.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"

namespace tessera {
namespace {

// Removes the entry of `map` with key `key` and value `id`.
template <typename Key>
void EraseEntry(std::multimap<Key, ClockTable::WaiterId>& map, const Key& key,
                ClockTable::WaiterId id) {
  auto [lo, hi] = map.equal_range(key);
  for (auto it = lo; it != hi; ++it) {
    if (it->second == id) {
      map.erase(it);
      return;
    }
  }
}

}  // namespace

ClockTable::ClockTable(uint32_t num_workers)
    : num_workers_(num_workers),
      clocks_(num_workers, -1),
      finished_(num_workers, false),
      evicted_(num_workers, false) {}

int64_t ClockTable::Register(uint32_t worker) { return Adopt(worker, 0).clock; }

bool ClockTable::IsRegistered(uint32_t worker) const {
  absl::MutexLock lock(&mu_);
  return worker < num_workers_ && clocks_[worker] >= 0;
}

int64_t ClockTable::WorkerClock(uint32_t worker) const {
  absl::MutexLock lock(&mu_);
  return worker < num_workers_ ? clocks_[worker] : -1;
}

int64_t ClockTable::RawMinLocked() const {
  int64_t min = std::numeric_limits<int64_t>::max();
  for (uint32_t w = 0; w < num_workers_; ++w) {
    if (!finished_[w] && !evicted_[w]) min = std::min(min, std::max<int64_t>(clocks_[w], 0));
  }
  return min;
}

absl::StatusOr<ClockTable::Advance> ClockTable::AdvanceClock(uint32_t worker, int64_t finished) {
  absl::MutexLock lock(&mu_);
  if (worker >= num_workers_ || clocks_[worker] < 0) {
    return absl::FailedPreconditionError(absl::StrCat("worker ", worker, " is not registered"));
  }
  if (finished != clocks_[worker]) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", worker, " advances clock ", finished, " but is at clock ", clocks_[worker]));
  }
  Advance result;
  result.old_min = RawMinLocked();
  result.clock = ++clocks_[worker];
  result.new_min = RawMinLocked();
  return result;
}

ClockTable::Advance ClockTable::Adopt(uint32_t worker, int64_t clock) {
  absl::MutexLock lock(&mu_);
  Advance result;
  result.old_min = RawMinLocked();
  clocks_[worker] = std::max({clocks_[worker], clock, int64_t{0}});
  result.clock = clocks_[worker];
  result.new_min = RawMinLocked();
  return result;
}

void ClockTable::Restore(const std::vector<int64_t>& clocks, const std::vector<bool>& finished,
                         int64_t published) {
  absl::MutexLock lock(&mu_);
  clocks_ = clocks;
  finished_ = finished;
  num_finished_ = static_cast<uint32_t>(std::count(finished_.begin(), finished_.end(), true));
  published_ = std::min(published, RawMinLocked());
}

std::vector<uint32_t> ClockTable::Laggards() const {
  absl::MutexLock lock(&mu_);
  const int64_t min = RawMinLocked();
  std::vector<uint32_t> out;
  for (uint32_t w = 0; w < num_workers_; ++w) {
    if (!finished_[w] && !evicted_[w] && std::max<int64_t>(clocks_[w], 0) == min) out.push_back(w);
  }
  return out;
}

ClockTable::Advance ClockTable::Evict(uint32_t worker) {
  absl::MutexLock lock(&mu_);
  Advance result;
  result.old_min = RawMinLocked();
  evicted_[worker] = true;
  result.clock = clocks_[worker];
  result.new_min = RawMinLocked();
  return result;
}

bool ClockTable::Rejoin(uint32_t worker) {
  absl::MutexLock lock(&mu_);
  if (!evicted_[worker]) return false;
  evicted_[worker] = false;
  if (published_ < std::numeric_limits<int64_t>::max()) {
    clocks_[worker] = std::max(clocks_[worker], published_);
  }
  return true;
}

std::vector<bool> ClockTable::evicted() const {
  absl::MutexLock lock(&mu_);
  return evicted_;
}

std::vector<bool> ClockTable::finished() const {
  absl::MutexLock lock(&mu_);
  return finished_;
}

uint32_t ClockTable::Finish(uint32_t worker) {
  absl::MutexLock lock(&mu_);
  if (!finished_[worker]) {
    finished_[worker] = true;
    ++num_finished_;
  }
  return num_finished_;
}

uint32_t ClockTable::workers_finished() const {
  absl::MutexLock lock(&mu_);
  return num_finished_;
}

bool ClockTable::AllFinished() const {
  absl::MutexLock lock(&mu_);
  return num_finished_ == num_workers_;
}

int64_t ClockTable::min_clock() const {
  absl::MutexLock lock(&mu_);
  return RawMinLocked();
}

int64_t ClockTable::published_min() const {
  absl::MutexLock lock(&mu_);
  return published_;
}

std::vector<int64_t> ClockTable::clocks() const {
  absl::MutexLock lock(&mu_);
  return clocks_;
}

std::optional<ClockTable::WaiterId> ClockTable::WaitFor(int64_t required, absl::Time deadline,
                                                        Callback callback, uint32_t part) {
  absl::MutexLock lock(&mu_);
  if (published_ >= required) return std::nullopt;
  if (part > 0) {
    auto it = part_published_.find(part);
    if (it != part_published_.end() && it->second >= required) return std::nullopt;
  }
  WaiterId id = next_id_++;
  waiters_.emplace(id, Waiter{required, deadline, std::move(callback), part});
  by_required_.emplace(required, id);
  by_deadline_.emplace(deadline, id);
  if (part > 0) by_part_.emplace(std::make_pair(part, required), id);
  return id;
}

void ClockTable::PublishPart(uint32_t part, int64_t min) {
  std::vector<Callback> ready;
  {
    absl::MutexLock lock(&mu_);
    int64_t& published = part_published_[part];
    if (min <= published) return;
    published = min;
    while (true) {
      auto it = by_part_.lower_bound({part, std::numeric_limits<int64_t>::min()});
      if (it == by_part_.end() || it->first.first != part || it->first.second > min) break;
      ready.push_back(TakeLocked(it->second));
    }
  }
  for (auto& callback : ready) callback(absl::OkStatus());
}

int64_t ClockTable::part_published(uint32_t part) const {
  absl::MutexLock lock(&mu_);
  auto it = part_published_.find(part);
  return it == part_published_.end() ? published_ : std::max(published_, it->second);
}

ClockTable::Callback ClockTable::TakeLocked(WaiterId id) {
  auto it = waiters_.find(id);
  if (it == waiters_.end()) return nullptr;
  Waiter waiter = std::move(it->second);
  waiters_.erase(it);
  EraseEntry(by_required_, waiter.required, id);
  EraseEntry(by_deadline_, waiter.deadline, id);
  if (waiter.part > 0) EraseEntry(by_part_, std::make_pair(waiter.part, waiter.required), id);
  return std::move(waiter.callback);
}

void ClockTable::Publish(int64_t min) {
  std::vector<Callback> ready;
  {
    absl::MutexLock lock(&mu_);
    if (min <= published_) return;
    published_ = min;
    while (!by_required_.empty() && by_required_.begin()->first <= published_) {
      ready.push_back(TakeLocked(by_required_.begin()->second));
    }
  }
  for (auto& callback : ready) callback(absl::OkStatus());
}

bool ClockTable::Cancel(WaiterId id) {
  Callback callback;
  {
    absl::MutexLock lock(&mu_);
    callback = TakeLocked(id);
  }
  if (!callback) return false;
  callback(absl::CancelledError("pull cancelled by the caller while waiting on the clock"));
  return true;
}

size_t ClockTable::ExpireDue(absl::Time now) {
  std::vector<std::pair<Callback, int64_t>> due;
  int64_t published;
  {
    absl::MutexLock lock(&mu_);
    while (!by_deadline_.empty() && by_deadline_.begin()->first <= now) {
      WaiterId id = by_deadline_.begin()->second;
      int64_t required = waiters_.at(id).required;
      due.emplace_back(TakeLocked(id), required);
    }
    expired_ += due.size();
    published = published_;
  }
  for (auto& [callback, required] : due) {
    callback(absl::DeadlineExceededError(absl::StrCat(
        "pull waited for min_clock >= ", required, " until its deadline; min_clock is ", published,
        " (a worker is slow, stuck or gone)")));
  }
  return due.size();
}

void ClockTable::FailAll(const absl::Status& status) {
  std::vector<Callback> all;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, waiter] : waiters_) all.push_back(std::move(waiter.callback));
    waiters_.clear();
    by_required_.clear();
    by_deadline_.clear();
    by_part_.clear();
  }
  for (auto& callback : all) callback(status);
}

absl::Time ClockTable::NextDeadline() const {
  absl::MutexLock lock(&mu_);
  return by_deadline_.empty() ? absl::InfiniteFuture() : by_deadline_.begin()->first;
}

size_t ClockTable::parked() const {
  absl::MutexLock lock(&mu_);
  return waiters_.size();
}

uint64_t ClockTable::expired() const {
  absl::MutexLock lock(&mu_);
  return expired_;
}

}  // namespace tessera
