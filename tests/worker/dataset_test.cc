// Data: IDX/gzip reading and its errors, Fashion-MNIST from the Debian package,
// worker shards and batches.
#include "worker/dataset.h"

#include <zlib.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <set>

namespace tessera {
namespace {

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name;
}

void WriteGz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

TEST_CASE("IDX files are read with their dimensions") {
  std::string path = TempPath("labels-idx1-ubyte.gz");
  WriteGz(path, {0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 9});
  std::vector<uint32_t> dims;
  auto data = ReadIdxGz(path, 2049, &dims);
  REQUIRE(data.ok());
  CHECK(dims == std::vector<uint32_t>{3});
  CHECK(*data == std::vector<uint8_t>{7, 2, 9});
}

TEST_CASE("click logs are streams, not loaded whole: LoadDataset says so") {
  for (DatasetKind kind : {DatasetKind::kSyntheticCtr, DatasetKind::kCriteoTsv}) {
    DataConfig config;
    config.dataset = kind;
    auto d = LoadDataset(config, true);
    REQUIRE_FALSE(d.ok());
    CHECK(d.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(d.status().message()).find("worker/example_stream.h") != std::string::npos);
  }
}

TEST_CASE("bad IDX files are DATA_LOSS; a missing file names the package") {
  std::string path = TempPath("bad.gz");
  std::vector<uint32_t> dims;
  WriteGz(path, {0, 0, 8, 1, 0, 0, 0, 5, 1, 2});  // says 5 labels, holds 2
  CHECK(ReadIdxGz(path, 2049, &dims).status().code() == absl::StatusCode::kDataLoss);
  WriteGz(path, {0, 0, 8, 3, 0, 0, 0, 1});  // images magic, asked for labels
  CHECK(ReadIdxGz(path, 2049, &dims).status().code() == absl::StatusCode::kDataLoss);
  auto missing = ReadIdxGz("/nonexistent/train-labels-idx1-ubyte.gz", 2049, &dims);
  CHECK(missing.status().code() == absl::StatusCode::kNotFound);
  CHECK(missing.status().message().find("apt-get install dataset-fashion-mnist") !=
        std::string::npos);
}

TEST_CASE("Fashion-MNIST loads from the Debian package") {
  DataConfig config;
  auto train = LoadDataset(config, true);
  auto test = LoadDataset(config, false);
  REQUIRE(train.ok());
  REQUIRE(test.ok());
  CHECK(train->size() == 60000);
  CHECK(test->size() == 10000);
  CHECK(train->features == 784);
  float lo = 1, hi = 0;
  for (float v : train->x) lo = std::min(lo, v), hi = std::max(hi, v);
  CHECK(lo == 0.0f);
  CHECK(hi == 1.0f);
  std::set<int32_t> labels(test->y.begin(), test->y.end());
  CHECK(labels.size() == 10);
}

TEST_CASE("workers' shards are disjoint, cover the data and take equal steps") {
  const size_t n = 1003;
  std::set<uint32_t> seen;
  size_t steps = 0;
  for (uint32_t rank = 0; rank < 3; ++rank) {
    Batcher b(n, rank, 3, 10, 7);
    if (rank == 0) steps = b.steps_per_epoch();
    CHECK(b.steps_per_epoch() == steps);
    CHECK(steps == 33);  // floor(floor(1003 / 3) / 10)
    std::set<uint32_t> epoch0;
    for (size_t s = 0; s < b.steps_per_epoch(); ++s) {
      for (uint32_t i : b.Batch(0, s)) {
        CHECK(i % 3 == rank);            // only its own shard
        CHECK(epoch0.insert(i).second);  // no example twice in an epoch
        seen.insert(i);
      }
    }
  }
  CHECK(seen.size() == 3 * 33 * 10);
}

TEST_CASE("each epoch is shuffled afresh, reproducibly") {
  Batcher a(1000, 0, 1, 100, 5), b(1000, 0, 1, 100, 5);
  CHECK(a.Batch(0, 0) == b.Batch(0, 0));
  CHECK(a.Batch(1, 0) != a.Batch(0, 0));
  Batcher ordered(1000, 0, 1, 100, 5, /*shuffle=*/false);
  CHECK(ordered.Batch(0, 1)[0] == 100);
}

TEST_CASE("the synthetic data set is balanced and in [0, 1]") {
  Dataset d = SyntheticDataset(2000, 16, 4, 3);
  CHECK(d.size() == 2000);
  std::vector<int> count(4, 0);
  for (int32_t y : d.y) ++count[y];
  for (int c : count) CHECK(std::abs(c - 500) < 100);
  for (float v : d.x) REQUIRE((v >= 0.0f && v <= 1.0f));
}

}  // namespace
}  // namespace tessera
