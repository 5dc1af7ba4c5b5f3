#include "server/shard_metrics.h"

#include <algorithm>

#include "absl/container/inlined_vector.h"
#include "absl/strings/str_cat.h"
#include "server/staleness_tracker.h"

namespace tessera {
namespace {

const char* const kMethodNames[] = {"Register", "Pull", "Push", "Clock", "Finish", "Stats", "Plan"};

// gRPC's canonical names, as grpc-go and the Prometheus gRPC middleware
// label them.
const char* const kCodeNames[] = {
    "OK",       "Canceled",       "Unknown",          "InvalidArgument",   "DeadlineExceeded",
    "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
    "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
    "DataLoss", "Unauthenticated"};

}  // namespace

ShardMetrics::ShardMetrics(const JobConfig& config)
    : calls_(std::make_unique<std::atomic<uint64_t>[]>(kNumMethods * kNumCodes)) {
  for (const TableConfig& t : config.Tables()) {
    index_.emplace(t.name, static_cast<uint32_t>(tables_.size()));
    tables_.push_back(t.name);
    push_seconds_.push_back(std::make_unique<Histogram>(LatencyBounds()));
    pull_seconds_.push_back(std::make_unique<Histogram>(LatencyBounds()));
  }
  for (int i = 0; i < kNumMethods * kNumCodes; ++i) calls_[i].store(0);
}

void ShardMetrics::Record(Method method, absl::StatusCode code, double seconds,
                          const google::protobuf::RepeatedPtrField<v1::Slice>* slices) {
  const int c = static_cast<int>(code);
  calls_[method * kNumCodes + (c >= 0 && c < kNumCodes ? c : 2)].fetch_add(
      1, std::memory_order_relaxed);
  if (slices == nullptr || (method != kPush && method != kPull)) return;
  auto& histograms = method == kPush ? push_seconds_ : pull_seconds_;
  absl::InlinedVector<uint32_t, 8> seen;
  for (const v1::Slice& slice : *slices) {
    auto it = index_.find(slice.table());
    if (it == index_.end()) continue;
    if (std::find(seen.begin(), seen.end(), it->second) != seen.end()) continue;
    seen.push_back(it->second);
    histograms[it->second]->Observe(seconds);
  }
}

void ShardMetrics::Collect(const Shard& shard, Exposition& e) const {
  v1::StatsResponse stats;
  shard.Stats(&stats);

  e.Family("tessera_shard_requests_total", "counter",
           "Calls answered, by method and gRPC status code (code != OK: refused or failed).");
  for (int m = 0; m < kNumMethods; ++m) {
    for (int c = 0; c < kNumCodes; ++c) {
      const uint64_t n = calls_[m * kNumCodes + c].load(std::memory_order_relaxed);
      // OK always (a zero is a fact); other codes once they happened.
      if (n == 0 && c != 0) continue;
      e.Sample("tessera_shard_requests_total",
               {{"method", kMethodNames[m]}, {"code", kCodeNames[c]}}, static_cast<double>(n));
    }
  }
  e.Family("tessera_shard_push_duration_seconds", "histogram",
           "Push calls' time from arrival to answer, by table pushed (fused pulls included).");
  for (size_t t = 0; t < tables_.size(); ++t) {
    e.HistogramSeries("tessera_shard_push_duration_seconds", {{"table", tables_[t]}},
                      *push_seconds_[t]);
  }
  e.Family("tessera_shard_pull_duration_seconds", "histogram",
           "Pull calls' time from arrival to answer, by table: parked time on the clock included.");
  for (size_t t = 0; t < tables_.size(); ++t) {
    e.HistogramSeries("tessera_shard_pull_duration_seconds", {{"table", tables_[t]}},
                      *pull_seconds_[t]);
  }

  struct TableFamily {
    const char* name;
    const char* type;
    const char* help;
    double (*value)(const v1::TableStats&);
  };
  const TableFamily table_families[] = {
      {"tessera_shard_pushes_total", "counter", "Pushes applied to the table's part on this shard.",
       [](const v1::TableStats& t) { return double(t.pushes()); }},
      {"tessera_shard_pulls_total", "counter",
       "Pulls answered from the table's part on this shard.",
       [](const v1::TableStats& t) { return double(t.pulls()); }},
      {"tessera_shard_push_bytes_total", "counter",
       "Gradient bytes pushed to the table, at wire precision (shared memory included).",
       [](const v1::TableStats& t) { return double(t.push_bytes()); }},
      {"tessera_shard_pull_bytes_total", "counter",
       "Value bytes pulled from the table, at wire precision (shared memory included).",
       [](const v1::TableStats& t) { return double(t.pull_bytes()); }},
      {"tessera_shard_push_raw_bytes_total", "counter",
       "What the pushes to the table would have been as float32 (push_bytes over this is the "
       "compression).",
       [](const v1::TableStats& t) { return double(t.push_raw_bytes()); }},
      {"tessera_shard_pull_raw_bytes_total", "counter",
       "What the pulls from the table would have been as float32.",
       [](const v1::TableStats& t) { return double(t.pull_raw_bytes()); }},
      {"tessera_shard_table_rows", "gauge", "Rows of a sparse table held on this shard (dense: 0).",
       [](const v1::TableStats& t) { return double(t.rows()); }},
      {"tessera_shard_table_bytes", "gauge",
       "Bytes of parameter values the table holds on this shard (fp32).",
       [](const v1::TableStats& t) { return double(t.values()) * 4; }},
  };
  for (const TableFamily& f : table_families) {
    e.Family(f.name, f.type, f.help);
    for (const v1::TableStats& t : stats.tables())
      e.Sample(f.name, {{"table", t.name()}}, f.value(t));
  }

  e.Scalar("tessera_shard_min_clock", "gauge",
           "The published min clock: every worker has finished the clocks below it.",
           static_cast<double>(stats.min_clock()));
  e.Family("tessera_shard_worker_clock", "gauge",
           "Each worker's clock on this shard (-1: not registered yet).");
  for (int w = 0; w < stats.worker_clocks_size(); ++w) {
    e.Sample("tessera_shard_worker_clock", {{"rank", absl::StrCat(w)}},
             static_cast<double>(stats.worker_clocks(w)));
  }
  e.Scalar("tessera_shard_parked_pulls", "gauge", "Pulls waiting on the clock now.",
           static_cast<double>(stats.parked_pulls()));
  e.Scalar("tessera_shard_pulls_expired_total", "counter",
           "Parked pulls that failed DEADLINE_EXCEEDED.",
           static_cast<double>(stats.pulls_expired()));
  e.Scalar("tessera_shard_workers_finished", "gauge", "Workers that have called Finish.",
           stats.workers_finished());
  e.Scalar("tessera_shard_evicted_workers", "gauge",
           "Workers dropped from the barrier (consistency.evict_after_s).",
           stats.evicted_workers_size());

  // Push staleness, in updates (docs/STALENESS.md).
  e.Family("tessera_shard_push_staleness_updates", "histogram",
           "Updates published between the values a push was computed on and its arrival.");
  std::vector<uint64_t> counts(stats.push_staleness_buckets().begin(),
                               stats.push_staleness_buckets().end());
  std::vector<double> bounds = StalenessTracker::Bounds();
  if (counts.size() != bounds.size() + 1) counts.assign(bounds.size() + 1, 0);
  e.HistogramSeries("tessera_shard_push_staleness_updates", {}, bounds, counts,
                    static_cast<double>(stats.push_staleness_sum()));
  e.Scalar("tessera_shard_push_staleness_unmeasured_total", "counter",
           "Pushes that named no values the shard knows (their staleness is unknown).",
           static_cast<double>(stats.push_staleness_unknown()));
  e.Scalar("tessera_shard_updates_published_total", "counter",
           "Updates published: the versions staleness is counted in.",
           static_cast<double>(stats.updates_published()));
  e.Scalar("tessera_shard_optimizer_applies_total", "counter",
           "Optimizer applications (an aggregated BSP clock counts once per table).",
           static_cast<double>(stats.updates_applied()));
  e.Scalar("tessera_shard_duplicate_pushes_total", "counter",
           "Retried push pieces acknowledged without applying them again.",
           static_cast<double>(stats.duplicate_pushes()));
  e.Scalar("tessera_shard_lost_clocks_total", "counter",
           "Clocks of updates lost to checkpoint restores.",
           static_cast<double>(stats.lost_clocks()));
  e.Scalar("tessera_shard_compensation_floats", "gauge",
           "Floats held for delay compensation (optimizer.staleness_compensation dc).",
           static_cast<double>(stats.compensation_floats()));

  e.Scalar("tessera_shard_standby", "gauge",
           "1 while this daemon is a standby (follows a primary), 0 while it serves workers.",
           stats.standby() ? 1.0 : 0.0);
  e.Scalar("tessera_shard_term", "gauge",
           "The term this daemon serves (primary) or follows (standby); 0 without etcd.",
           static_cast<double>(stats.term()));
  e.Scalar("tessera_shard_replication_sequence", "gauge",
           "The last mutation sent (primary) or held (standby): a standby's lag is its "
           "primary's value minus its own.",
           static_cast<double>(stats.replication_sequence()));
  e.Scalar("tessera_shard_replicated_bytes_total", "counter",
           "Bytes of mutations this primary sent to its standby.",
           static_cast<double>(stats.replicated_bytes()));
  e.Scalar("tessera_shard_promotions_total", "counter",
           "Times this daemon took over as primary from the one it followed.",
           static_cast<double>(stats.promotions()));

  e.Scalar("tessera_shard_checkpoints_written_total", "counter", "Checkpoints written.",
           static_cast<double>(stats.checkpoints_written()));
  // The last checkpoint's families are always declared; their samples come
  // once one has been written.
  const bool written = stats.last_checkpoint_clock() >= 0;
  auto last = [&](const char* name, const char* help, double value) {
    e.Family(name, "gauge", help);
    if (written) e.Sample(name, value);
  };
  last("tessera_shard_last_checkpoint_age_seconds",
       "Seconds since the last checkpoint was written.", stats.last_checkpoint_age_s());
  last("tessera_shard_last_checkpoint_duration_seconds",
       "How long writing the last checkpoint took.", stats.last_checkpoint_seconds());
  last("tessera_shard_last_checkpoint_bytes", "Size of the last checkpoint.",
       static_cast<double>(stats.last_checkpoint_bytes()));
  last("tessera_shard_last_checkpoint_clock", "Clock of the last checkpoint.",
       static_cast<double>(stats.last_checkpoint_clock()));
}

}  // namespace tessera
