// RowCache: the sparse rows a worker pulled, reused while the consistency
// rule allows — the distributed parameter cache of the specification, for
// rows. A row pulled with guarantee g (the shards' min_clock: it holds every
// update of the clocks below g) serves a step at clock c while g >= c - s
// under SSP with staleness s, exactly as ParameterCache serves dense values.
// BSP (s = 0) and ASP never reuse a row across clocks, so the cache is off
// there. Like ParameterCache it does not replay the worker's own pushes.
//
// All tables of a RowSet share one key list (a ctr model's embedding and
// wide rows), so one entry holds a key's rows of every table.
//
//   RowCache cache(config.consistency, config.worker.row_cache_rows);
//   std::vector<uint32_t> missing = cache.Serve(clock, &rows);   // hits filled in
//   ... pull the keys at `missing` into those positions ...
//   cache.Store(rows, missing, guaranteed);
//
// Memory: at most max_rows entries of the RowSet's total width (floats); when
// a Store would pass that, entries no longer fresh go first, then all.
//
// Threading: one thread (the worker's training thread).
#ifndef TESSERA_WORKER_ROW_CACHE_H_
#define TESSERA_WORKER_ROW_CACHE_H_

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "common/config.h"
#include "worker/ps_client.h"

namespace tessera {

class RowCache {
 public:
  RowCache(const ConsistencyConfig& consistency, uint64_t max_rows);

  // Whether rows can be reused at all (SSP with s >= 1, max_rows > 0).
  bool enabled() const { return enabled_; }

  // Sizes every rows[t].values to its keys and fills the rows of keys held
  // fresh for `clock`; returns the positions (in rows[0].keys) of the others,
  // in order. REQUIRES: every rows[t].keys equal.
  std::vector<uint32_t> Serve(int64_t clock, RowSet* rows);

  // Keeps the rows at `positions`, pulled with guarantee `guaranteed`.
  void Store(const RowSet& rows, const std::vector<uint32_t>& positions, int64_t guaranteed);

  // Forgets every row (after a reconnect: the shards may have been restored).
  void Invalidate();

  int64_t hits() const { return hits_; }
  int64_t misses() const { return misses_; }
  size_t size() const { return index_.size(); }

 private:
  struct Entry {
    int64_t guaranteed;
    uint32_t slot;  // floats [slot * width_, (slot + 1) * width_) of slab_
  };
  bool Fresh(const Entry& e, int64_t clock) const { return e.guaranteed >= clock - staleness_; }
  // Drops entries not fresh for `clock`; everything when that is not enough.
  void MakeRoom(size_t wanted, int64_t clock);

  const bool enabled_;
  const int64_t staleness_;
  const uint64_t max_rows_;
  uint32_t width_ = 0;  // floats per entry, set by the first Store
  absl::flat_hash_map<uint64_t, Entry> index_;
  std::vector<float> slab_;
  std::vector<uint32_t> free_slots_;
  int64_t last_clock_ = 0;
  int64_t hits_ = 0, misses_ = 0;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_ROW_CACHE_H_
