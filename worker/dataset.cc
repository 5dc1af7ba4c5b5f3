#include "worker/dataset.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/partition.h"
#include "common/status.h"

namespace tessera {
namespace {

uint32_t BigEndian(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}

}  // namespace

absl::StatusOr<std::vector<uint8_t>> ReadIdxGz(const std::string& path, uint32_t expected_magic,
                                               std::vector<uint32_t>* dims) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("cannot open ", path,
                     ": Fashion-MNIST is missing; install it with "
                     "`apt-get install dataset-fashion-mnist` (or run scripts/install_deps.sh), "
                     "or point data.dir at a folder holding the four *-ubyte.gz files"));
  }
  std::vector<uint8_t> bytes;
  uint8_t buffer[1 << 16];
  int n;
  while ((n = gzread(file, buffer, sizeof(buffer))) > 0)
    bytes.insert(bytes.end(), buffer, buffer + n);
  int err = 0;
  const char* message = gzerror(file, &err);
  gzclose(file);
  if (n < 0 || (err != Z_OK && err != Z_STREAM_END)) {
    return absl::DataLossError(absl::StrCat(path, ": gzip error: ", message));
  }
  if (bytes.size() < 8 || BigEndian(bytes.data()) != expected_magic) {
    return absl::DataLossError(absl::StrCat(path, ": not an IDX file with magic ", expected_magic));
  }
  const uint32_t num_dims = bytes[3];
  if (bytes.size() < 4 + 4 * num_dims) return absl::DataLossError(path + ": truncated header");
  uint64_t count = 1;
  dims->clear();
  for (uint32_t d = 0; d < num_dims; ++d) {
    dims->push_back(BigEndian(bytes.data() + 4 + 4 * d));
    count *= dims->back();
  }
  const size_t header = 4 + 4 * num_dims;
  if (bytes.size() != header + count) {
    return absl::DataLossError(
        absl::StrCat(path, ": expected ", count, " bytes of data, found ", bytes.size() - header));
  }
  return std::vector<uint8_t>(bytes.begin() + header, bytes.end());
}

absl::StatusOr<Dataset> LoadDataset(const DataConfig& config, bool train) {
  if (config.dataset == DatasetKind::kSynthetic) {
    return SyntheticDataset(train ? config.synthetic_train : config.synthetic_test, 784, 10,
                            config.synthetic_seed + (train ? 0 : 1'000'003));
  }
  const std::string prefix = config.dir + "/" + (train ? "train" : "t10k");
  std::vector<uint32_t> image_dims, label_dims;
  TESSERA_ASSIGN_OR_RETURN(auto images,
                           ReadIdxGz(prefix + "-images-idx3-ubyte.gz", 2051, &image_dims));
  TESSERA_ASSIGN_OR_RETURN(auto labels,
                           ReadIdxGz(prefix + "-labels-idx1-ubyte.gz", 2049, &label_dims));
  if (image_dims.size() != 3 || label_dims.size() != 1 || image_dims[0] != label_dims[0]) {
    return absl::DataLossError(absl::StrCat(prefix, ": images and labels do not match"));
  }
  Dataset d;
  d.features = image_dims[1] * image_dims[2];
  d.classes = 10;
  d.x.resize(images.size());
  for (size_t i = 0; i < images.size(); ++i) d.x[i] = images[i] * (1.0f / 255.0f);
  d.y.assign(labels.begin(), labels.end());
  for (int32_t label : d.y) {
    if (label < 0 || label >= 10) return absl::DataLossError(prefix + ": label outside 0..9");
  }
  return d;
}

Dataset SyntheticDataset(uint32_t n, uint32_t features, uint32_t classes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  // Class centres are fixed by a constant seed so train and test agree.
  std::mt19937_64 centre_rng(12345);
  std::vector<float> centres(size_t(classes) * features);
  for (float& c : centres) c = normal(centre_rng);
  Dataset d;
  d.features = features;
  d.classes = classes;
  d.x.resize(size_t(n) * features);
  d.y.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    int32_t label = static_cast<int32_t>(rng() % classes);
    d.y[i] = label;
    for (uint32_t f = 0; f < features; ++f) {
      float z = centres[size_t(label) * features + f] + 1.5f * normal(rng);
      d.x[size_t(i) * features + f] = 1.0f / (1.0f + std::exp(-z));  // into [0, 1]
    }
  }
  return d;
}

Batcher::Batcher(size_t dataset_size, uint32_t rank, uint32_t workers, uint32_t batch,
                 uint64_t seed, bool shuffle)
    : batch_(batch), seed_(seed), rank_(rank), shuffle_(shuffle) {
  for (size_t i = rank; i < dataset_size; i += workers) shard_.push_back(static_cast<uint32_t>(i));
  const size_t smallest = dataset_size / workers;  // every shard holds at least this many
  steps_per_epoch_ = smallest / batch;
  order_ = shard_;
}

void Batcher::Shuffle(uint32_t epoch) {
  if (epoch == shuffled_epoch_) return;
  order_ = shard_;
  if (shuffle_) {
    std::mt19937_64 rng(SplitMix64(seed_ ^ SplitMix64(epoch * 4096ull + rank_)));
    std::shuffle(order_.begin(), order_.end(), rng);
  }
  shuffled_epoch_ = epoch;
}

std::vector<uint32_t> Batcher::Batch(uint32_t epoch, size_t step) {
  Shuffle(epoch);
  return std::vector<uint32_t>(order_.begin() + step * batch_,
                               order_.begin() + (step + 1) * batch_);
}

}  // namespace tessera
