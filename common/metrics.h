// Metrics in the Prometheus text exposition format (version 0.0.4), for the
// daemons' GET /metrics (common/metrics_server.h).
//
// A daemon's numbers live where they are counted (atomics, Histogram, the
// shard's Stats); at each scrape a MetricsRegistry runs its collectors, each
// writing families into one Exposition:
//
//   MetricsRegistry registry({{"job", "mnist"}, {"shard", "0"}});
//   registry.Add([&](Exposition& e) {
//     e.Family("tessera_shard_parked_pulls", "gauge", "Pulls waiting on the clock now.");
//     e.Sample("tessera_shard_parked_pulls", shard->parked());
//   });
//   std::string text = registry.Render();
//
// Conventions (https://prometheus.io/docs/practices/naming/): base units
// (seconds, bytes), counters end in _total, histograms are cumulative "le"
// buckets with _sum and _count. Every sample carries the registry's common
// labels (job; shard or rank); other label values come from bounded sets
// (table names, methods, status codes, ranks below cluster.workers).
//
// Threading: Exposition is single-threaded (one per scrape). MetricsRegistry:
// Add before serving, from one thread; Render from any thread, concurrently
// (collectors must be thread-safe; each reads atomics or takes its source's
// own short locks).
#ifndef TESSERA_COMMON_METRICS_H_
#define TESSERA_COMMON_METRICS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/histogram.h"

namespace tessera {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Exposition {
 public:
  explicit Exposition(Labels common = {}) : common_(std::move(common)) {}

  // # HELP and # TYPE lines; type is "counter", "gauge" or "histogram".
  void Family(absl::string_view name, absl::string_view type, absl::string_view help);
  // One sample line: the common labels, then `labels`.
  void Sample(absl::string_view name, const Labels& labels, double value);
  void Sample(absl::string_view name, double value) { Sample(name, {}, value); }
  // A family of one unlabelled sample: Family, then Sample.
  void Scalar(absl::string_view name, absl::string_view type, absl::string_view help,
              double value) {
    Family(name, type, help);
    Sample(name, value);
  }
  // A histogram's series from per-bucket counts (Histogram::Counts: the last
  // above every bound): name_bucket{le=...} cumulative, +Inf, _sum, _count.
  void HistogramSeries(absl::string_view name, const Labels& labels,
                       const std::vector<double>& bounds, const std::vector<uint64_t>& counts,
                       double sum);
  void HistogramSeries(absl::string_view name, const Labels& labels, const Histogram& h) {
    HistogramSeries(name, labels, h.bounds(), h.Counts(), h.Sum());
  }

  const std::string& text() const { return out_; }

 private:
  void AppendLabels(const Labels& labels, absl::string_view le);

  Labels common_;
  std::string out_;
};

// A sample value as Prometheus reads it: integers exactly, +Inf/-Inf/NaN.
std::string FormatMetricValue(double value);
// A label value with \, " and newline escaped.
std::string EscapeLabelValue(absl::string_view value);

class MetricsRegistry {
 public:
  using Collector = std::function<void(Exposition&)>;

  explicit MetricsRegistry(Labels common) : common_(std::move(common)) {}

  void Add(Collector collector) { collectors_.push_back(std::move(collector)); }
  // Every collector's families, then the process's and the build's.
  std::string Render() const;
  const Labels& common() const { return common_; }

 private:
  Labels common_;
  std::vector<Collector> collectors_;
};

// Latency buckets in seconds, 50 us to 10 s (about 2.5 per decade).
const std::vector<double>& LatencyBounds();

// process_* (resident and virtual memory, CPU seconds, threads, open file
// descriptors, start time) from /proc/self, as Prometheus' client libraries
// name them, and tessera_build_info{version, backend, revision} 1.
void WriteProcessMetrics(Exposition& e);
void WriteBuildInfo(Exposition& e);

}  // namespace tessera

#endif  // TESSERA_COMMON_METRICS_H_
