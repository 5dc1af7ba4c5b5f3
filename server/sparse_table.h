// SparseTable: the rows of one sparse table (embeddings, sparse linear
// weights) that live on this shard, created on first touch with the table's
// initializer, with their optimizer state and the BSP aggregation buffer.
// Each stripe finds rows through a SortedIndex (requests carry sorted keys, so
// lookups and inserts walk memory in order) and keeps them in one HugeArray;
// both live in the table's HugePageArena: huge pages, growth without copying.
//
// Threading: thread-safe. Rows are spread over lock stripes by a hash of the
// key (bits independent of the shard choice); a request takes each stripe's
// lock once, visiting stripes from a rotating start and passing over those
// another request holds (it blocks only when all it still needs are held),
// so concurrent large requests do not convoy. No lock covers the whole
// table. Each calling thread keeps the scratch of its largest request
// (regrouped by stripe, up to 64 MiB) for reuse. Callers validate keys first (sorted,
// unique, owned by this shard).
#ifndef TESSERA_SERVER_SPARSE_TABLE_H_
#define TESSERA_SERVER_SPARSE_TABLE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/config.h"
#include "common/huge_page_arena.h"
#include "common/initializer.h"
#include "proto/replication.pb.h"
#include "server/optimizer.h"
#include "server/sorted_index.h"

namespace tessera {

class SparseTable {
 public:
  // `optimizer` must outlive the table. Reserves memory for `reserve_rows`
  // rows (this shard's share of the table's reserve_rows) and faults it in
  // before returning, so that creating that many rows faults no page.
  SparseTable(const TableConfig& config, const Optimizer* optimizer, uint32_t num_stripes,
              uint64_t reserve_rows = 0);

  // Memory a reserved row takes (values, optimizer slots, index entry and its
  // share of the delta), before rounding to block sizes.
  static uint64_t ReservedBytesPerRow(uint32_t dim, int num_slots) {
    return uint64_t{4} * dim * (1 + num_slots) + 12 + 3;
  }

  const std::string& name() const { return name_; }
  uint32_t dim() const { return dim_; }
  int num_slots() const { return static_cast<int>(num_slots_); }

  // Copies the rows of `keys` into out (keys.size() * dim floats, row after
  // row), creating missing rows; with `create` false a missing row is
  // answered with its initial values and not kept.
  // REQUIRES: out.size() == keys.size() * dim().
  void Read(absl::Span<const uint64_t> keys, absl::Span<float> out, bool create = true);

  // How many of `keys` have no row yet (a request's cost against
  // server.max_sparse_rows). Takes the stripes' locks one at a time.
  uint64_t CountMissing(absl::Span<const uint64_t> keys);

  // As DenseTable::FirstNonFinite: the first key whose row (values or
  // slots) Apply of `grads` would make non-finite, computed on copies (a
  // missing row as it would be created); with `accumulate`, of the buffered
  // sum applied at scale 1. nullopt when every row stays finite.
  std::optional<uint64_t> FirstNonFinite(absl::Span<const uint64_t> keys,
                                         absl::Span<const float> grads, float scale,
                                         bool accumulate, float max_value);

  // Applies the optimizer to each row with gradient scale * its dim floats of grads.
  // REQUIRES: grads.size() == keys.size() * dim().
  void Apply(absl::Span<const uint64_t> keys, absl::Span<const float> grads, float scale);

  // Adds grads into the aggregation buffer (rows are created when applied).
  void Accumulate(absl::Span<const uint64_t> keys, absl::Span<const float> grads);

  // Applies scale * (buffered sum) once per buffered row, then clears the buffer.
  void ApplyAccumulated(float scale);
  // Replication, server.pull_creates_rows: from now on the rows that reads
  // create are recorded, and ExportCreated hands them over (increasing,
  // recorded ones cleared); ImportCreated creates such rows on a standby's
  // table (INVALID_ARGUMENT, nothing created, unless they increase).
  // RecordCreatedRows may be called while the table serves: a row created
  // after it returns is recorded (the stripe's lock orders the two).
  void RecordCreatedRows() { record_created_.store(true, std::memory_order_relaxed); }
  void ExportCreated(v1::TableAggregate* out);
  absl::Status ImportCreated(const v1::TableAggregate& in);
  // Replication (BSP with aggregation): the buffered keys (increasing) and
  // their summed gradients, appended to *out; and, on a standby's table
  // whose buffer is empty, the inverse. INVALID_ARGUMENT (nothing changed)
  // when `in` does not fit: keys not increasing, or not dim() values each.
  // REQUIRES: ExportAccumulated while no push accumulates.
  void ExportAccumulated(v1::TableAggregate* out) const;
  // Whether `in` fits this table (keys, created keys, values), changing nothing.
  absl::Status CheckAggregate(const v1::TableAggregate& in) const;
  absl::Status ImportAccumulated(const v1::TableAggregate& in);

  uint64_t rows() const;
  // Rows created so far, without taking a lock (may lag a request in flight).
  uint64_t approximate_rows() const { return row_count_.load(std::memory_order_relaxed); }

  // Checkpoints: every row's key and its row_floats() floats (values, then
  // the optimizer's slots), each stripe copied under its lock, and the
  // table's optimizer update count. Rows a pull creates meanwhile may or
  // may not be in; they hold initial values either way. Written straight
  // into memory that `allocate(bytes)` returns: the n keys, then the n rows
  // in the same order (n * (8 + 4 * row_floats()) bytes used, of the more
  // asked for: the rows are counted first and a few created meanwhile fit
  // in the slack; should more appear, allocate is asked again and the copy
  // starts over). Returns n. Memory beyond the table: that buffer and one
  // stripe's index, not the two copies a vector of keys and one of rows
  // would take on their way into a checkpoint's buffer.
  size_t row_floats() const { return row_floats_; }
  uint64_t Snapshot(const std::function<char*(uint64_t bytes)>& allocate, int64_t* step) const;
  // Loads n rows (any order) into an empty table: n keys (8 bytes each) at
  // `keys`, their rows (row_floats() floats each) at `rows`, at any
  // alignment (a checkpoint's mapping). INVALID_ARGUMENT, with nothing
  // loaded, when a key appears twice. REQUIRES: no concurrent access
  // (start-up).
  absl::Status Restore(const char* keys, const char* rows, uint64_t n, int64_t step);
  uint64_t pushes() const { return pushes_.load(std::memory_order_relaxed); }
  uint64_t pulls() const { return pulls_.load(std::memory_order_relaxed); }

 private:
  struct Stripe {
    explicit Stripe(HugePageArena* arena) : index(arena), data(arena) {}

    absl::Mutex mu;
    // key -> row number; row r occupies data[r * row_floats, (r + 1) * row_floats):
    // dim values, then num_slots slots of dim floats each. index.size() rows.
    SortedIndex index ABSL_GUARDED_BY(mu);
    HugeArray<float> data ABSL_GUARDED_BY(mu);
    absl::flat_hash_map<uint64_t, uint32_t> pending ABSL_GUARDED_BY(mu);  // key -> accum row
    std::vector<float> accum ABSL_GUARDED_BY(mu);
    std::vector<uint64_t> created ABSL_GUARDED_BY(mu);  // by reads, while recorded
  };

  // One stripe's share of a request, gathered contiguous: its n keys (in
  // request order, so increasing) and either each key's dim values (a push)
  // or each key's position in the request (a pull).
  struct StripeBatch {
    const uint64_t* keys;
    const uint32_t* idx;    // without values only
    const float* values;    // with values only
    size_t n;
  };

  uint32_t StripeOf(uint64_t key) const;
  // Row numbers of keys[0, n) in `stripe`, creating the missing rows (in
  // request order, so a later request for the same keys reads memory in
  // order). REQUIRES: keys strictly increasing. `created` (optional) gets
  // the keys of the rows created.
  void FindOrCreateAll(Stripe& stripe, const uint64_t* keys, size_t n,
                       std::vector<uint32_t>* rows, std::vector<uint64_t>* created = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(stripe.mu);
  float* RowData(Stripe& stripe, uint32_t row) ABSL_EXCLUSIVE_LOCKS_REQUIRED(stripe.mu) {
    return stripe.data.data() + row * row_floats_;
  }
  // Calls fn(stripe, batch) once per stripe that holds keys, holding the
  // stripe's lock. Gathering each stripe's keys (and values: dim per key)
  // first makes the per-stripe work stream through memory instead of
  // striding across the whole request.
  template <typename Fn>
  void ForEachByStripe(absl::Span<const uint64_t> keys, absl::Span<const float> values, Fn fn);
  // Applies the optimizer to rows[j] with grads[j * dim, (j + 1) * dim).
  void ApplyToRows(Stripe& stripe, const std::vector<uint32_t>& rows, const float* grads,
                   int64_t step, float scale) ABSL_EXCLUSIVE_LOCKS_REQUIRED(stripe.mu);

  // const after construction
  const std::string name_;
  const uint32_t dim_;
  const Optimizer* const optimizer_;
  const uint32_t num_slots_;
  const size_t row_floats_;
  const Initializer init_;
  HugePageArena arena_;  // every stripe's index and rows; outlives the stripes
  std::vector<std::unique_ptr<Stripe>> stripes_;

  std::atomic<uint32_t> next_start_{0};
  // Optimizer steps of the table. Like PyTorch's SparseAdam and TF's lazy Adam,
  // bias correction counts the table's updates, not each row's.
  std::atomic<int64_t> step_{0};
  std::atomic<uint64_t> pushes_{0};
  std::atomic<uint64_t> pulls_{0};
  std::atomic<uint64_t> row_count_{0};  // rows created (FindOrCreateAll, Restore)
  std::atomic<bool> record_created_{false};  // read under a stripe's lock
};

}  // namespace tessera

#endif  // TESSERA_SERVER_SPARSE_TABLE_H_
