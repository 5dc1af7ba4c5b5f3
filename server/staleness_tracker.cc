#include "server/staleness_tracker.h"

namespace tessera {

StalenessTracker::StalenessTracker(uint32_t num_workers, bool keep_values)
    : keep_values_(keep_values), histogram_(Bounds()) {
  for (uint32_t w = 0; w < num_workers; ++w) workers_.push_back(std::make_unique<Worker>());
}

void StalenessTracker::Served(uint32_t worker, int64_t clock, absl::Span<const Slice> dense) {
  Worker& w = *workers_[worker];
  absl::MutexLock lock(&w.mu);
  // The entry of this clock (another piece, or a pull again at the same
  // clock), else the oldest.
  Entry* entry = &w.entries[0];
  for (Entry& e : w.entries) {
    if (e.clock == clock) {
      entry = &e;
      break;
    }
    if (e.clock < entry->clock) entry = &e;
  }
  entry->clock = clock;
  entry->version = version();
  if (!keep_values_) return;
  for (const Slice& s : dense) {
    std::vector<float>& values = entry->values[s.table];
    if (values.empty()) {
      values.resize(s.table->range().size());
      kept_floats_.fetch_add(values.size(), std::memory_order_relaxed);
    }
    s.table->CopyValues(
        s.offset, absl::MakeSpan(values.data() + (s.offset - s.table->range().begin), s.count));
  }
}

StalenessTracker::Read::~Read() {
  if (mu_ != nullptr) mu_->ReaderUnlock();
}

const float* StalenessTracker::Read::Values(const DenseTable* table, uint64_t offset) const {
  if (entry_ == nullptr) return nullptr;
  const Entry& e = *static_cast<const Entry*>(entry_);
  auto it = e.values.find(table);
  if (it == e.values.end() || it->second.empty()) return nullptr;
  return it->second.data() + (offset - table->range().begin);
}

// The reader lock taken here is handed to the Read returned when it found
// the pull (its destructor releases it), which the analysis cannot follow.
StalenessTracker::Read StalenessTracker::Find(uint32_t worker, std::optional<int64_t> values_clock)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  Read read;
  if (!values_clock) return read;
  Worker& w = *workers_[worker];
  w.mu.ReaderLock();
  for (const Entry& e : w.entries) {
    if (e.clock != *values_clock) continue;
    read.staleness_ = version() - e.version;
    read.entry_ = &e;
    break;
  }
  if (read.entry_ == nullptr) {
    w.mu.ReaderUnlock();
  } else {
    read.mu_ = &w.mu;
  }
  return read;
}

void StalenessTracker::Observe(std::optional<int64_t> staleness) {
  if (staleness) {
    histogram_.Observe(static_cast<double>(*staleness));
  } else {
    unknown_.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace tessera
