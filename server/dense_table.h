// DenseTable: one shard's contiguous range of a dense table (a weight matrix,
// a bias), its optimizer state, and the BSP aggregation buffer.
//
// Threading: thread-safe. The range is cut into fixed chunks, each with its
// own reader/writer lock, so pushes to different parts of one table, and
// pulls anywhere, proceed in parallel; a push holds one chunk at a time.
// Callers validate offsets first (REQUIRES below): a table never sees bad input.
#ifndef TESSERA_SERVER_DENSE_TABLE_H_
#define TESSERA_SERVER_DENSE_TABLE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/codec.h"
#include "common/config.h"
#include "common/partition.h"
#include "proto/checkpoint.pb.h"
#include "proto/replication.pb.h"
#include "server/optimizer.h"

namespace tessera {

class DenseTable {
 public:
  // Floats per lock chunk: large enough that locking is rare, small enough
  // that two pushes to different quarters of a 64 MiB table do not collide.
  static constexpr uint64_t kChunkFloats = 256 * 1024;

  // `optimizer` must outlive the table. `aggregate` allocates the BSP buffer.
  // `compensation`: the table's optimizer settings for stale pushes
  // (staleness_compensation, dc_lambda, dc_decay, gap_decay); dc allocates a
  // running mean square of the gradient per value, gap_aware a running mean
  // of each value's |step| (the table's statistic, checkpointed with it).
  DenseTable(const TableConfig& config, DenseRange range, const Optimizer* optimizer,
             bool aggregate, const OptimizerConfig& compensation = {});

  const std::string& name() const { return name_; }
  uint64_t total_size() const { return total_size_; }
  DenseRange range() const { return range_; }

  // Appends values [offset, offset + length) encoded in `codec` (a
  // fixed-width one: Codec::width() > 0) to *out, encoding straight from the
  // table's chunks under their locks.
  // REQUIRES: range().Contains(offset, length).
  void AppendBytes(uint64_t offset, uint64_t length, const Codec& codec, std::string* out) const;
  // The same bytes written to out[0, length * codec.width()) (shared memory).
  void CopyBytes(uint64_t offset, uint64_t length, const Codec& codec, char* out) const;
  // Copies values [offset, offset + out.size()) into out (not counted as a pull).
  // REQUIRES: range().Contains(offset, out.size()).
  void CopyValues(uint64_t offset, absl::Span<float> out) const;
  // The same, and the table's state the copy shows when no write ran during
  // it: how many writes (Apply, ApplyAccumulated[Range], Restore) came
  // before. Two copies that return the same count copied the same values.
  std::optional<uint64_t> CopyValuesAt(uint64_t offset, absl::Span<float> out) const;
  // That count now, when no write is running.
  std::optional<uint64_t> QuietWrites() const;

  // Applies the optimizer with gradient scale * grad at [offset, offset + grad.size()).
  // Each chunk counts an optimizer step (Adam's bias correction, the LR
  // schedule) per update: pieces of one worker's push at one clock (`worker`,
  // `clock` >= 0) count once however they split a chunk; with clock < 0
  // every call counts (tools that push many times a clock).
  // A stale push (docs/DESIGN.md "Staleness") is compensated by the table's
  // staleness_compensation: `staleness` (updates since the values were read;
  // nullopt: unknown) divides the rate under lr_scale; `read` (the values
  // the gradient was computed from, at `offset`, or nullptr) feeds dc and
  // gap_aware.
  // Unknown staleness or values: applied as it is.
  // REQUIRES: range().Contains(offset, grad.size()).
  void Apply(uint64_t offset, absl::Span<const float> grad, float scale, uint32_t worker = 0,
             int64_t clock = -1, std::optional<int64_t> staleness = std::nullopt,
             const float* read = nullptr);

  // Whether Apply (or, with `accumulate`, Accumulate and then the clock's
  // apply) of `grad` would leave every value and optimizer slot it touches
  // finite, computed on copies without changing anything. The global index
  // of the first value that would not be finite, or nullopt. Under BSP the
  // clock's apply is checked on the buffered sum at scale 1 (the largest
  // step it could take). REQUIRES: range().Contains(offset, grad.size()).
  // A value whose magnitude would pass `max_value` counts as not finite
  // (server.max_parameter_abs: an absurd result).
  std::optional<uint64_t> FirstNonFinite(uint64_t offset, absl::Span<const float> grad, float scale,
                                         bool accumulate, float max_value) const;

  // Adds grad into the aggregation buffer. REQUIRES: constructed with aggregate.
  void Accumulate(uint64_t offset, absl::Span<const float> grad);

  // Applies the optimizer once with scale * (buffer) on every chunk that
  // received gradients since the last call, then clears the buffer.
  void ApplyAccumulated(float scale);

  // BSP parts (worker.bsp_parts): applies the optimizer with scale *
  // (buffer) on global values [offset, offset + length) alone and zeroes
  // that part of the buffer. A chunk counts one optimizer step per `clock`
  // however many parts of it are applied, so a clock applied part by part
  // leaves every value and slot as one ApplyAccumulated would. A table
  // applied so is never given ApplyAccumulated (its buffer stays marked).
  // REQUIRES: constructed with aggregate; range().Contains(offset, length).
  void ApplyAccumulatedRange(uint64_t offset, uint64_t length, float scale, int64_t clock);

  // Replication (BSP with aggregation): the buffer of every chunk that
  // received gradients since the last apply, appended to *out (chunk
  // numbers and their floats); and, on a standby's table, the inverse: the
  // buffer becomes exactly that, ready for ApplyAccumulated. INVALID_ARGUMENT
  // (nothing changed) when `in` does not fit this table.
  // REQUIRES: constructed with aggregate; ExportAccumulated while no push
  // accumulates (under the clock's close).
  void ExportAccumulated(v1::TableAggregate* out) const;
  absl::Status CheckAggregate(const v1::TableAggregate& in) const;
  absl::Status ImportAccumulated(const v1::TableAggregate& in);

  // Checkpoints, and a joining standby's copy: the values, then each
  // optimizer slot, then the statistic of dc or gap_aware (range().size()
  // floats each), copied chunk by chunk under the chunks' locks. Into `meta`
  // (v1::CheckpointTable): each chunk's count of optimizer updates (Adam's
  // bias correction, the LR schedule), which clock of each worker it counted
  // last, and its compensated updates: everything Apply reads, so a copy
  // restored mid-clock applies the clock's later pieces as its source did.
  size_t num_chunks() const { return num_chunks_; }
  uint64_t SnapshotBytes() const {
    return (1 + num_slots_ + (has_statistic() ? 1 : 0)) * range_.size() * sizeof(float);
  }
  // REQUIRES: out holds SnapshotBytes(). Sets meta's chunk_steps, counted
  // and chunk_compensated; leaves its other fields alone.
  void Snapshot(char* out, v1::CheckpointTable* meta) const;
  // Whether `bytes` of data and `meta` are a snapshot of this table, with
  // every count in [0, max_step], every worker below num_workers and every
  // clock in [0, max_clock]. One written before the statistic was kept (no
  // chunk_compensated, data that ends at the slots) fits too. INVALID_ARGUMENT
  // naming what does not fit.
  absl::Status CheckSnapshot(const v1::CheckpointTable& meta, uint64_t bytes, uint32_t num_workers,
                             int64_t max_step, int64_t max_clock) const;
  // The inverse of Snapshot. REQUIRES: CheckSnapshot(meta, bytes, ...) is OK.
  void Restore(const char* data, uint64_t bytes, const v1::CheckpointTable& meta);

  uint64_t pushes() const { return pushes_.load(std::memory_order_relaxed); }
  uint64_t pulls() const { return pulls_.load(std::memory_order_relaxed); }

 private:
  struct Chunk {
    mutable absl::Mutex mu;
    int64_t step ABSL_GUARDED_BY(mu) = 0;          // optimizer updates applied
    bool accumulated ABSL_GUARDED_BY(mu) = false;  // buffer holds gradients
    int64_t dc_updates ABSL_GUARDED_BY(mu) = 0;    // updates delay-compensated
    int64_t gap_updates ABSL_GUARDED_BY(mu) = 0;   // updates into gap_step_
    int64_t range_clock ABSL_GUARDED_BY(mu) = -1;  // the clock `step` last counted a part of
    // worker -> the clock whose update `step` last counted for it.
    absl::flat_hash_map<uint32_t, int64_t> counted ABSL_GUARDED_BY(mu);
  };

  bool has_statistic() const { return !dc_mean_square_.empty() || !gap_step_.empty(); }
  // The statistic's floats and its chunk's count (dc or gap_aware); nullptr
  // and unused without one.
  float* statistic() {
    return !dc_mean_square_.empty() ? dc_mean_square_.data()
                                    : gap_step_.empty() ? nullptr : gap_step_.data();
  }
  const float* statistic() const { return const_cast<DenseTable*>(this)->statistic(); }

  // DC-ASGD's compensated gradient of local values [lo, hi) into out, from
  // scale * grad and the values read; updates the mean square, whose zero
  // start is corrected by `updates` (the chunk's compensated updates, this one included).
  // REQUIRES: the chunk's mutex held; dc_mean_square_ allocated.
  void Compensate(uint64_t lo, uint64_t hi, const float* grad, const float* read, float scale,
                  int64_t updates, float* out);

  // Gap-Aware: adds each undamped |step| of local values [lo, hi) just
  // applied (values_ now, `before` the values ahead of it) into gap_step_,
  // whose zero start is corrected by `updates` (this one included), then,
  // when `read` is known, divides each step by its gap against it.
  // REQUIRES: the chunk's mutex held; gap_step_ allocated.
  void DampByGap(uint64_t lo, uint64_t hi, const float* before, const float* read,
                 int64_t updates);

  // This thread's slot copies for FirstNonFinite.
  static std::vector<float>& scratch_slots();

  // Calls fn(chunk, local_begin, local_end) for each chunk overlapping the
  // local range [begin, end), in order.
  template <typename Fn>
  void ForEachChunk(uint64_t begin, uint64_t end, Fn fn) const;

  // The optimizer's slots from local element `lo` on; null for an optimizer
  // without state (SGD), whose slots_ is empty (an offset from a null
  // pointer is undefined behaviour, and clang's UBSan reports it).
  float* SlotsFrom(uint64_t lo) { return slots_.empty() ? nullptr : slots_.data() + lo; }

  // const after construction
  const std::string name_;
  const uint64_t total_size_;
  const DenseRange range_;
  const Optimizer* const optimizer_;
  const size_t num_slots_;
  const StalenessCompensation compensation_;
  const float dc_lambda_, dc_decay_, gap_decay_;

  // Element i belongs to chunks_[i / kChunkFloats] and is guarded by its mu.
  std::vector<float> values_;
  std::vector<float> slots_;           // num_slots_ * range_.size(), stride range_.size()
  std::vector<float> accum_;           // aggregation buffer; empty unless aggregate
  std::vector<float> dc_mean_square_;  // dc: running mean of g^2 per value; else empty
  std::vector<float> gap_step_;        // gap_aware: running mean of |step| per value; else empty
  std::unique_ptr<Chunk[]> chunks_;
  size_t num_chunks_;

  std::atomic<uint64_t> pushes_{0};
  // Writes begun and ended (QuietWrites): equal when none is running.
  std::atomic<uint64_t> writes_begun_{0};
  std::atomic<uint64_t> writes_ended_{0};
  // Counts one write from construction to destruction.
  class WriteScope {
   public:
    explicit WriteScope(DenseTable* table) : table_(table) { table_->writes_begun_.fetch_add(1); }
    ~WriteScope() { table_->writes_ended_.fetch_add(1); }
    WriteScope(const WriteScope&) = delete;
    WriteScope& operator=(const WriteScope&) = delete;

   private:
    DenseTable* const table_;
  };
  mutable std::atomic<uint64_t> pulls_{0};
};

}  // namespace tessera

#endif  // TESSERA_SERVER_DENSE_TABLE_H_
