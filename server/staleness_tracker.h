// StalenessTracker: how stale each push to a shard is, and, for delay
// compensation, the values the push was computed from.
//
// Staleness is counted in updates: one worker's gradients of one clock
// (under BSP's aggregation, a clock's pushers at once when it closes). The
// shard's version is the number of updates it has published. When the shard
// serves worker w a pull at clock p it records (p, the version then) and,
// when it keeps values (optimizer.staleness_compensation dc), a copy of the
// dense values served. A push of w that names values_clock p has staleness
//   tau = version now - version recorded at p,
// the updates applied since its values were read: 0 under BSP's aggregation,
// up to W - 1 under BSP without it, more under SSP and ASP. Per worker the
// last kRemembered pulls are kept (a worker computes from its latest pull, or
// the one before while a fused pull travels). A pull split into pieces is
// one read at the version of its last piece.
//
// Memory with values kept: kRemembered x workers x the shard's dense floats
// (reported by kept_floats()).
//
// Threading: thread-safe. Per worker one reader/writer mutex: Served holds it
// exclusively while it copies; a push holds a Read (shared) while it applies,
// so the values it points to stay put. Lock order: a worker's tracker mutex,
// then table chunk mutexes.
#ifndef TESSERA_SERVER_STALENESS_TRACKER_H_
#define TESSERA_SERVER_STALENESS_TRACKER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/histogram.h"
#include "server/dense_table.h"

namespace tessera {

class StalenessTracker {
 public:
  static constexpr int kRemembered = 3;
  // Bucket bounds of the staleness histogram (StatsResponse says the same).
  static std::vector<double> Bounds() { return {0, 1, 2, 4, 8, 16, 32, 64, 128}; }

  // `keep_values`: also copy the dense values each pull serves (dc).
  StalenessTracker(uint32_t num_workers, bool keep_values);

  // `updates` more were published.
  void Published(int64_t updates) { version_.fetch_add(updates, std::memory_order_relaxed); }
  int64_t version() const { return version_.load(std::memory_order_relaxed); }

  // A dense slice a pull served: [offset, offset + count) of `table`.
  struct Slice {
    const DenseTable* table;
    uint64_t offset;
    uint64_t count;
  };
  // Worker `worker` was served a pull at `clock` (its dense slices; sparse
  // ones are not kept). REQUIRES: worker < num_workers.
  void Served(uint32_t worker, int64_t clock, absl::Span<const Slice> dense);

  // What a push knows about the values it was computed from, while it is held.
  class Read {
   public:
    Read() = default;
    Read(Read&& other) noexcept
        : mu_(std::exchange(other.mu_, nullptr)),
          staleness_(other.staleness_),
          entry_(other.entry_) {}
    Read& operator=(Read&&) = delete;
    ~Read();
    // Updates published since the values were read; nullopt when the pull
    // is not remembered (or the push named none).
    std::optional<int64_t> staleness() const { return staleness_; }
    // The values read at global index `offset` of `table`, or nullptr when
    // not kept. Valid while this Read lives.
    const float* Values(const DenseTable* table, uint64_t offset) const;

   private:
    friend class StalenessTracker;
    absl::Mutex* mu_ = nullptr;  // held shared while set
    std::optional<int64_t> staleness_;
    const void* entry_ = nullptr;
  };
  // The pull at `values_clock` of `worker` (nullopt: the push named none).
  // REQUIRES: worker < num_workers.
  Read Find(uint32_t worker, std::optional<int64_t> values_clock);

  // Counts one push's staleness (nullopt: unknown) in the histogram.
  void Observe(std::optional<int64_t> staleness);
  const Histogram& histogram() const { return histogram_; }
  uint64_t unknown() const { return unknown_.load(std::memory_order_relaxed); }
  // Floats held as copies of served values.
  uint64_t kept_floats() const { return kept_floats_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    int64_t clock = -1;
    int64_t version = 0;
    // Per table: the table's whole range; what the pull served is filled in.
    absl::flat_hash_map<const DenseTable*, std::vector<float>> values;
  };
  struct Worker {
    absl::Mutex mu;
    Entry entries[kRemembered] ABSL_GUARDED_BY(mu);
  };

  const bool keep_values_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<int64_t> version_{0};
  Histogram histogram_;
  std::atomic<uint64_t> unknown_{0};
  std::atomic<uint64_t> kept_floats_{0};
};

}  // namespace tessera

#endif  // TESSERA_SERVER_STALENESS_TRACKER_H_
