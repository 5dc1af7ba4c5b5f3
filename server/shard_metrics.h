// ShardMetrics: what a shard's GET /metrics reports. The service records
// each call as it finishes (method, status code, latency; a push's or pull's
// latency per table it touched); Collect writes those and the shard's Stats
// (clocks, parked pulls, staleness, tables, checkpoints) as Prometheus
// families named tessera_shard_* (docs/OBSERVABILITY.md lists them).
//
//   ShardMetrics metrics(config);
//   metrics.Record(ShardMetrics::kPush, absl::StatusCode::kOk, 0.0012, &request.slices());
//   registry.Add([&](Exposition& e) { metrics.Collect(*shard, e); });
//
// A pull's latency runs from its arrival to its answer, so it includes the
// time it stayed parked waiting on the clock (the consistency model's wait).
//
// Threading: Record from any thread, lock-free (relaxed atomics); Collect
// from any thread (it calls Shard::Stats, which is thread-safe).
#ifndef TESSERA_SERVER_SHARD_METRICS_H_
#define TESSERA_SERVER_SHARD_METRICS_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "common/config.h"
#include "common/histogram.h"
#include "common/metrics.h"
#include "proto/tessera.pb.h"
#include "server/shard.h"

namespace tessera {

class ShardMetrics {
 public:
  enum Method { kRegister, kPull, kPush, kClock, kFinish, kStats, kPlan, kNumMethods };

  explicit ShardMetrics(const JobConfig& config);

  // A call of `method` answered `code` after `seconds`. With `slices`, the
  // latency also goes into the histogram of each table they name (once per
  // table; names that are not the job's tables are skipped).
  void Record(Method method, absl::StatusCode code, double seconds,
              const google::protobuf::RepeatedPtrField<v1::Slice>* slices = nullptr);

  void Collect(const Shard& shard, Exposition& e) const;

 private:
  static constexpr int kNumCodes = 17;  // gRPC's status codes, OK to UNAUTHENTICATED

  std::vector<std::string> tables_;
  absl::flat_hash_map<std::string, uint32_t> index_;  // table name -> tables_ index
  // By table: push and pull latency, seconds.
  std::vector<std::unique_ptr<Histogram>> push_seconds_, pull_seconds_;
  std::unique_ptr<std::atomic<uint64_t>[]> calls_;  // [method * kNumCodes + code]
};

}  // namespace tessera

#endif  // TESSERA_SERVER_SHARD_METRICS_H_
