#include "server/part_barrier.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tessera {

PartBarrier::PartBarrier(std::vector<std::vector<Range>> parts, uint32_t num_workers) {
  for (auto& ranges : parts) {
    auto part = std::make_unique<Part>();
    part->ranges = std::move(ranges);
    absl::MutexLock lock(&part->mu);
    part->pushed.assign(num_workers, -1);
    parts_.push_back(std::move(part));
  }
}

absl::Status PartBarrier::CheckPart(uint32_t part, const std::vector<Range>& slices) const {
  if (part == 0 || part > parts_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("BSP part ", part, ": expected 1 to ", parts_.size(), " (worker.bsp_parts)"));
  }
  const std::vector<Range>& want = parts_[part - 1]->ranges;
  bool same = slices.size() == want.size();
  for (size_t i = 0; same && i < want.size(); ++i) {
    same = slices[i].table == want[i].table && slices[i].offset == want[i].offset &&
           slices[i].length == want[i].length;
  }
  if (same) return absl::OkStatus();
  std::string expected;
  for (const Range& r : want) {
    absl::StrAppend(&expected, expected.empty() ? "" : ", ", r.table->name(), " [", r.offset, ", ",
                    r.offset + r.length, ")");
  }
  return absl::InvalidArgumentError(absl::StrCat("BSP part ", part, " names ", slices.size(),
                                                 " slice(s): expected exactly ", expected));
}

bool PartBarrier::Push(uint32_t part_number, uint32_t worker, int64_t clock,
                       const std::vector<absl::Span<const float>>& grads,
                       const std::function<std::vector<uint32_t>()>& laggards) {
  Part& part = *parts_[part_number - 1];
  absl::MutexLock lock(&part.mu);
  for (size_t i = 0; i < part.ranges.size(); ++i) {
    part.ranges[i].table->Accumulate(part.ranges[i].offset, grads[i]);
  }
  part.pushed[worker] = clock;
  ++part.pending;
  part.pending_clock = clock;
  // Applied once a clock: a push that comes after (a worker that rejoined
  // the barrier) waits for the close.
  if (part.applied_clock == clock) return false;
  const std::vector<uint32_t> waiting = laggards();
  if (std::find(waiting.begin(), waiting.end(), worker) == waiting.end()) return false;
  for (uint32_t w : waiting) {
    if (part.pushed[w] != clock) return false;
  }
  ApplyLocked(part);
  part.applied_clock = clock;
  return true;
}

void PartBarrier::ApplyLocked(Part& part) {
  const float scale = 1.0f / static_cast<float>(part.pending);
  for (const Range& r : part.ranges) {
    r.table->ApplyAccumulatedRange(r.offset, r.length, scale, part.pending_clock);
  }
  part.pending = 0;
}

void PartBarrier::Close() {
  for (auto& part : parts_) {
    absl::MutexLock lock(&part->mu);
    if (part->pending > 0) ApplyLocked(*part);
  }
}

bool PartBarrier::AppliedBeforeClose(int64_t clock) const {
  for (const auto& part : parts_) {
    absl::MutexLock lock(&part->mu);
    if (part->applied_clock == clock) return true;
  }
  return false;
}

}  // namespace tessera
