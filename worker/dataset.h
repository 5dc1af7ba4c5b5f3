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
  // Click logs (model.type ctr): `fields` categorical ids per example, and
  // where a teacher made the labels, each example's true click probability.
  uint32_t fields = 0;
  std::vector<uint64_t> ids;  // size() * fields, row-major; field f's id < model.vocab
  std::vector<float> p;       // size() probabilities, or empty
  size_t size() const { return y.size(); }
  const float* example(size_t i) const { return x.data() + i * features; }
  const uint64_t* example_ids(size_t i) const { return ids.data() + i * fields; }
};

// Examples indices[0, n) of `data`, copied into *out as one batch of n
// (their true click probabilities too, where `data` has them).
void GatherExamples(const Dataset& data, const uint32_t* indices, uint32_t n, Dataset* out);

// Loads the training or test split named by config.dataset (fashion_mnist
// or synthetic; the click logs are streams: worker/example_stream.h).
// NOT_FOUND (naming the package to install) when Fashion-MNIST is missing;
// DATA_LOSS for a truncated or malformed file; INVALID_ARGUMENT for a click log.
absl::StatusOr<Dataset> LoadDataset(const DataConfig& config, bool train);

// Reads one gzip'd IDX file: images (magic 2051) or labels (magic 2049).
absl::StatusOr<std::vector<uint8_t>> ReadIdxGz(const std::string& path, uint32_t expected_magic,
                                               std::vector<uint32_t>* dims);

// A synthetic classification problem: `classes` Gaussian clusters in
// `features` dimensions, squashed into [0, 1]; linearly separable enough
// that softmax regression and an MLP both learn it.
Dataset SyntheticDataset(uint32_t n, uint32_t features, uint32_t classes, uint64_t seed);

// A click log with a planted teacher (data.dataset synthetic_ctr). Each of
// model.fields fields draws an id in [0, model.vocab) from a Zipf law of
// data.zipf_exponent (id 0 the most frequent); model.dense_features floats
// are standard normal. A fixed teacher drawn from data.synthetic_seed (the
// same for both splits) gives each example its click probability
//   p = sigmoid(bias + sum_f wide_f(id) + dense . v + mlp(teacher embeddings, dense))
// whose per-id terms shrink as 1 / (1 + rank / 100) (a long tail of ids
// that barely matter, as in real click logs), and the label is drawn from
// Bernoulli(p). Deterministic given the config; the splits use different
// example streams. Example i of a split is a pure function of (config,
// split, i), so a worker makes its batches as it trains
// (worker/example_stream.h) and holds none of the data set.
//
// Threading: Make() one thread at a time (it keeps scratch).
class SyntheticCtrGenerator {
 public:
  SyntheticCtrGenerator(const ModelConfig& model, const DataConfig& data, bool train);
  uint32_t size() const { return size_; }  // examples in the split
  // Example i: dense features x[0, dense_features), ids[0, fields), its
  // label and its true click probability.
  void Make(uint64_t i, float* x, uint64_t* ids, int32_t* y, float* p);

 private:
  static constexpr int kTeacherDim = 4;      // teacher embedding width
  static constexpr int kTeacherHidden = 16;  // teacher MLP width
  static constexpr size_t kTermsSlots = size_t{1} << 16;

  // The teacher's terms of one (field, id): its wide weight and embedding.
  // Pure functions of (seed, field, id), remembered in a direct-mapped
  // cache: Zipf ids repeat, and each costs five normal draws.
  struct IdTerms {
    uint64_t key = 0;  // CtrKey + 1; 0: empty
    double wide = 0;
    double embedding[kTeacherDim] = {};
  };
  const IdTerms& TermsOf(uint32_t field, uint64_t id);

  const uint32_t size_, fields_, dense_;
  const uint64_t vocab_;
  const double zipf_exponent_;
  const uint64_t seed_, stream_;
  const uint32_t teacher_in_;
  std::vector<double> linear_, w1_, w2_;  // the teacher's dense parts
  std::vector<double> in_, hidden_;       // scratch
  std::vector<IdTerms> terms_;            // kTermsSlots
};

// The whole split at once (tests; small splits).
Dataset SyntheticCtrDataset(const ModelConfig& model, const DataConfig& data, bool train);

// Mean log loss of predicting `q` for labels `y` (0/1), q clamped to
// [1e-7, 1 - 1e-7]. And the mean binary entropy of p: the expected log loss
// of the Bayes-optimal predictor, which knows p.
double LogLoss(const std::vector<float>& q, const std::vector<int32_t>& y);
double MeanBinaryEntropy(const std::vector<float>& p);
// Area under the ROC curve of scores `q` for labels `y` (ties count half);
// 0.5 when one class is absent.
double Auc(const std::vector<float>& q, const std::vector<int32_t>& y);

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
  // Every example of this worker in `epoch`'s order (the batches, end to end,
  // then the examples no batch takes).
  const std::vector<uint32_t>& Order(uint32_t epoch);

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
