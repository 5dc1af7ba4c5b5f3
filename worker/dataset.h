// Training data for the workers: Fashion-MNIST from its gzip'd IDX files
// (Debian package dataset-fashion-mnist), or a synthetic, learnable data set
// for tests. Pixels are scaled to [0, 1].
//
//   auto data = LoadDataset(config.data, /*train=*/true);
//   Batcher batcher(data->size(), rank, workers, batch, seed);
//
// A Dataset is immutable after loading; share it read-only across threads.
#ifndef TESSERA_WORKER_DATASET_H_
#define TESSERA_WORKER_DATASET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config.h"

namespace tessera {

struct Dataset {
  uint32_t features = 0;  // floats per example
  uint32_t classes = 0;
  std::vector<float> x;    // size() * features, row-major
  std::vector<int32_t> y;  // size() labels in [0, classes)
  size_t size() const { return y.size(); }
  const float* example(size_t i) const { return x.data() + i * features; }
};

// Loads the training or test split named by config.dataset.
// NOT_FOUND (naming the package to install) when Fashion-MNIST is missing;
// DATA_LOSS for a truncated or malformed file.
absl::StatusOr<Dataset> LoadDataset(const DataConfig& config, bool train);

// Reads one gzip'd IDX file: images (magic 2051) or labels (magic 2049).
absl::StatusOr<std::vector<uint8_t>> ReadIdxGz(const std::string& path, uint32_t expected_magic,
                                               std::vector<uint32_t>* dims);

// A synthetic classification problem: `classes` Gaussian clusters in
// `features` dimensions, squashed into [0, 1]; linearly separable enough
// that softmax regression and an MLP both learn it.
Dataset SyntheticDataset(uint32_t n, uint32_t features, uint32_t classes, uint64_t seed);

// Which examples a worker trains on, and in what order.
// Worker `rank` of W owns the examples i with i % W == rank; every epoch it
// visits them in a fresh order drawn from (seed, epoch, rank). All workers
// take the same number of steps per epoch (the smallest shard's), so that
// BSP clocks line up.
class Batcher {
 public:
  Batcher(size_t dataset_size, uint32_t rank, uint32_t workers, uint32_t batch, uint64_t seed,
          bool shuffle = true);

  size_t steps_per_epoch() const { return steps_per_epoch_; }
  // The example indices of step `step` of `epoch`. REQUIRES: step < steps_per_epoch().
  std::vector<uint32_t> Batch(uint32_t epoch, size_t step);

 private:
  void Shuffle(uint32_t epoch);

  const uint32_t batch_;
  const uint64_t seed_;
  const uint32_t rank_;
  const bool shuffle_;
  std::vector<uint32_t> shard_;  // this worker's examples
  size_t steps_per_epoch_ = 0;
  uint32_t shuffled_epoch_ = ~0u;
  std::vector<uint32_t> order_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_DATASET_H_
