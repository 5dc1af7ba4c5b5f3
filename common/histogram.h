// Histogram: counts of observations in fixed buckets, for the numbers a
// daemon reports about itself (a shard's push staleness in Stats, and the
// metrics endpoints). Bucket i counts observations v with
// bounds[i-1] < v <= bounds[i]; one last bucket counts those above the last
// bound (Prometheus' "le" buckets, kept per bucket rather than cumulative).
//
//   Histogram h({0, 1, 2, 4, 8});
//   h.Observe(3);                 // the "<= 4" bucket
//   Histogram::Quantile(h.bounds(), h.Counts(), 0.99);
//
// Threading: thread-safe; Observe uses relaxed atomics, so a reader sees each
// count exact but may see the counts and the sum at slightly different moments.
#ifndef TESSERA_COMMON_HISTOGRAM_H_
#define TESSERA_COMMON_HISTOGRAM_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace tessera {

class Histogram {
 public:
  // REQUIRES: bounds sorted ascending.
  explicit Histogram(std::vector<double> bounds);

  void Observe(double value);

  const std::vector<double>& bounds() const { return bounds_; }
  // bounds().size() + 1 counts, the last for values above every bound.
  std::vector<uint64_t> Counts() const;
  uint64_t Count() const;
  double Sum() const { return sum_.load(std::memory_order_relaxed); }

  // The bound of the first bucket by which a fraction q of the observations
  // has been counted (infinity when that is the last bucket; 0 with none).
  static double Quantile(const std::vector<double>& bounds, const std::vector<uint64_t>& counts,
                         double q);

 private:
  const std::vector<double> bounds_;
  const std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<double> sum_{0};
};

}  // namespace tessera

#endif  // TESSERA_COMMON_HISTOGRAM_H_
