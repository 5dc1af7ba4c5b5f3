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
  if (config.ctr()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data.dataset = '", NameOf(config.dataset),
        "': a click log is read as a stream (OpenExamples in worker/example_stream.h), not "
        "loaded whole"));
  }
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

void GatherExamples(const Dataset& data, const uint32_t* indices, uint32_t n, Dataset* out) {
  out->features = data.features;
  out->classes = data.classes;
  out->fields = data.fields;
  out->x.resize(size_t(n) * data.features);
  out->y.resize(n);
  out->ids.resize(size_t(n) * data.fields);
  out->p.resize(data.p.empty() ? 0 : n);
  for (uint32_t i = 0; i < n; ++i) {
    const size_t k = indices[i];
    std::copy_n(data.example(k), data.features, out->x.data() + size_t(i) * data.features);
    std::copy_n(data.example_ids(k), data.fields, out->ids.data() + size_t(i) * data.fields);
    out->y[i] = data.y[k];
    if (!data.p.empty()) out->p[i] = data.p[k];
  }
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

const std::vector<uint32_t>& Batcher::Order(uint32_t epoch) {
  Shuffle(epoch);
  return order_;
}

std::vector<uint32_t> Batcher::Batch(uint32_t epoch, size_t step) {
  Shuffle(epoch);
  return std::vector<uint32_t>(order_.begin() + step * batch_,
                               order_.begin() + (step + 1) * batch_);
}

}  // namespace tessera

namespace tessera {
namespace {

// A uniform double in (0, 1) from a 64-bit hash.
double Uniform(uint64_t h) { return (static_cast<double>(h >> 11) + 0.5) * 0x1.0p-53; }

// A standard normal that is a pure function of (a, b, c): the teacher's
// weights are looked up, not stored (vocabularies of millions per field).
double HashNormal(uint64_t a, uint64_t b, uint64_t c) {
  const uint64_t h = SplitMix64(a ^ SplitMix64(b ^ SplitMix64(c)));
  const double u1 = Uniform(h), u2 = Uniform(SplitMix64(h));
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// An id in [0, vocab) from a Zipf law of exponent s: the inverse CDF of the
// continuous power law on [1, vocab + 1), floored (exact enough for ranks;
// constant time for any vocabulary).
uint64_t ZipfId(double u, uint64_t vocab, double s) {
  const double v = static_cast<double>(vocab) + 1.0;
  double x;
  if (std::abs(s - 1.0) < 1e-9) {
    x = std::exp(u * std::log(v));
  } else {
    const double a = 1.0 - s;
    x = std::pow((std::pow(v, a) - 1.0) * u + 1.0, 1.0 / a);
  }
  const uint64_t id = static_cast<uint64_t>(x) - 1;
  return std::min<uint64_t>(id, vocab - 1);
}

}  // namespace

SyntheticCtrGenerator::SyntheticCtrGenerator(const ModelConfig& model, const DataConfig& data,
                                             bool train)
    : size_(train ? data.synthetic_train : data.synthetic_test),
      fields_(model.fields),
      dense_(model.dense_features),
      vocab_(model.vocab),
      zipf_exponent_(data.zipf_exponent),
      seed_(data.synthetic_seed),
      stream_(SplitMix64(seed_ ^ (train ? 0x7261696eull : 0x74657374ull))),
      teacher_in_(fields_ * kTeacherDim + dense_),
      linear_(dense_),
      w1_(size_t(teacher_in_) * kTeacherHidden),
      w2_(kTeacherHidden),
      in_(teacher_in_),
      hidden_(kTeacherHidden),
      terms_(kTermsSlots) {
  // The teacher's dense parts (small, stored): a linear term on the dense
  // features, and a one-hidden-layer tanh MLP over [embeddings, dense].
  for (uint32_t j = 0; j < dense_; ++j) linear_[j] = 0.3 * HashNormal(seed_, 1, j);
  for (size_t j = 0; j < w1_.size(); ++j) {
    w1_[j] = HashNormal(seed_, 2, j) * std::sqrt(1.0 / (fields_ + dense_ / double(kTeacherDim)));
  }
  for (int j = 0; j < kTeacherHidden; ++j) w2_[j] = 0.5 * HashNormal(seed_, 3, j);
}

const SyntheticCtrGenerator::IdTerms& SyntheticCtrGenerator::TermsOf(uint32_t field,
                                                                    uint64_t id) {
  const uint64_t key = CtrKey(field, id) + 1;  // 0: an empty slot
  IdTerms& t = terms_[SplitMix64(key) & (kTermsSlots - 1)];
  if (t.key == key) return t;
  t.key = key;
  // Per-id effects shrink along the tail as 1 / (1 + rank / 100): rank 0 full
  // size, rank 900 a tenth, rank 10^4 a hundredth. As in real click logs,
  // the rare ids are most of the rows and little of the signal.
  const double shrink = 1.0 / (1.0 + static_cast<double>(id) / 100.0);
  constexpr double kWideScale = 0.35;
  t.wide = kWideScale * shrink * HashNormal(seed_, 4 + field, id);
  for (int k = 0; k < kTeacherDim; ++k) {
    t.embedding[k] = shrink * HashNormal(seed_ ^ 0x656d62ull, field * 64 + k, id);
  }
  return t;
}

void SyntheticCtrGenerator::Make(uint64_t i, float* x, uint64_t* ids, int32_t* y, float* p) {
  constexpr double kBias = -1.2;  // a click rate near 0.25
  const uint64_t example = SplitMix64(stream_ + i);
  double logit = kBias;
  for (uint32_t f = 0; f < fields_; ++f) {
    const uint64_t id = ZipfId(Uniform(SplitMix64(example ^ (f + 1))), vocab_, zipf_exponent_);
    ids[f] = id;
    const IdTerms& terms = TermsOf(f, id);
    logit += terms.wide;
    std::copy_n(terms.embedding, kTeacherDim, in_.data() + size_t(f) * kTeacherDim);
  }
  for (uint32_t j = 0; j < dense_; ++j) {
    const double z = HashNormal(example, 5, j);
    x[j] = static_cast<float>(z);
    in_[size_t(fields_) * kTeacherDim + j] = z;
    logit += linear_[j] * z;
  }
  for (int h = 0; h < kTeacherHidden; ++h) {
    double sum = 0;
    for (uint32_t j = 0; j < teacher_in_; ++j) sum += in_[j] * w1_[size_t(j) * kTeacherHidden + h];
    hidden_[h] = std::tanh(sum);
    logit += w2_[h] * hidden_[h];
  }
  const double q = 1.0 / (1.0 + std::exp(-logit));
  *p = static_cast<float>(q);
  *y = Uniform(SplitMix64(example ^ 0xc11c4ull)) < q ? 1 : 0;
}

Dataset SyntheticCtrDataset(const ModelConfig& model, const DataConfig& data, bool train) {
  SyntheticCtrGenerator generator(model, data, train);
  const uint32_t n = generator.size();
  Dataset d;
  d.features = model.dense_features;
  d.classes = 2;
  d.fields = model.fields;
  d.x.resize(size_t(n) * d.features);
  d.y.resize(n);
  d.ids.resize(size_t(n) * d.fields);
  d.p.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    generator.Make(i, d.x.data() + size_t(i) * d.features, d.ids.data() + size_t(i) * d.fields,
                   &d.y[i], &d.p[i]);
  }
  return d;
}

double LogLoss(const std::vector<float>& q, const std::vector<int32_t>& y) {
  double sum = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    const double c = std::clamp<double>(q[i], 1e-7, 1 - 1e-7);
    sum -= y[i] ? std::log(c) : std::log1p(-c);
  }
  return q.empty() ? 0 : sum / q.size();
}

double MeanBinaryEntropy(const std::vector<float>& p) {
  double sum = 0;
  for (float v : p) {
    const double c = std::clamp<double>(v, 1e-7, 1 - 1e-7);
    sum -= c * std::log(c) + (1 - c) * std::log1p(-c);
  }
  return p.empty() ? 0 : sum / p.size();
}

double Auc(const std::vector<float>& q, const std::vector<int32_t>& y) {
  std::vector<size_t> order(q.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return q[a] < q[b]; });
  // Mann-Whitney: the sum of the positives' ranks (average rank on ties).
  double positive_rank_sum = 0;
  uint64_t positives = 0;
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j < order.size() && q[order[j]] == q[order[i]]) ++j;
    const double rank = (i + 1 + j) / 2.0;  // ranks i+1 .. j averaged
    for (size_t k = i; k < j; ++k) {
      if (y[order[k]]) {
        positive_rank_sum += rank;
        ++positives;
      }
    }
    i = j;
  }
  const uint64_t negatives = q.size() - positives;
  if (positives == 0 || negatives == 0) return 0.5;
  return (positive_rank_sum - positives * (positives + 1) / 2.0) /
         (static_cast<double>(positives) * negatives);
}

}  // namespace tessera
