// SortedIndex against a std::map reference (in-place merges into the delta
// and the main array included), and SparseTable rows staying attached to
// their keys across many requests.
#include "server/sparse_table.h"

#include <algorithm>
#include <cstring>
#include <catch2/catch.hpp>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "server/optimizer.h"
#include "server/sorted_index.h"

namespace tessera {
namespace {

std::vector<uint64_t> SortedUnique(std::vector<uint64_t> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

TEST_CASE("SortedIndex finds what was inserted, through many delta merges") {
  std::mt19937_64 rng(17);
  HugePageArena arena;
  SortedIndex index(&arena);
  std::map<uint64_t, uint32_t> reference;
  uint32_t next_row = 0;
  for (int request = 0; request < 200; ++request) {
    // Mostly keys from a small range (repeats), sometimes a large fresh batch.
    const size_t n = request % 20 == 0 ? 5000 : 1 + rng() % 300;
    std::vector<uint64_t> keys(n);
    for (auto& k : keys) k = request % 20 == 0 ? rng() : rng() % 20000;
    keys = SortedUnique(keys);
    std::vector<uint32_t> rows(keys.size());
    size_t missing = index.Find(keys.data(), keys.size(), rows.data());
    size_t expected_missing = 0;
    std::vector<uint64_t> new_keys;
    std::vector<uint32_t> new_rows;
    for (size_t j = 0; j < keys.size(); ++j) {
      auto it = reference.find(keys[j]);
      if (it == reference.end()) {
        REQUIRE(rows[j] == SortedIndex::kMissing);
        ++expected_missing;
        new_keys.push_back(keys[j]);
        new_rows.push_back(next_row);
        reference[keys[j]] = next_row++;
      } else {
        REQUIRE(rows[j] == it->second);
      }
    }
    REQUIRE(missing == expected_missing);
    index.Insert(new_keys.data(), new_rows.data(), new_keys.size());
    REQUIRE(index.size() == reference.size());
  }
  CHECK(reference.size() > 20000);  // enough to have merged the delta many times
  // Every key ever inserted, in one request: nothing lost or mismatched.
  std::vector<uint64_t> all;
  for (const auto& [key, row] : reference) all.push_back(key);
  std::vector<uint32_t> rows(all.size());
  REQUIRE(index.Find(all.data(), all.size(), rows.data()) == 0);
  for (size_t j = 0; j < all.size(); ++j) REQUIRE(rows[j] == reference[all[j]]);
}

TEST_CASE("SortedIndex stays exact once its arrays outgrow a huge page") {
  // 40 batches of 12,500 fresh keys: the main key array passes 2 MiB (own
  // mapping, grown by mremap) while batches interleave with what is there.
  std::mt19937_64 rng(29);
  HugePageArena arena;
  SortedIndex index(&arena);
  std::vector<uint64_t> all;
  uint32_t next_row = 0;
  for (int batch = 0; batch < 40; ++batch) {
    std::vector<uint64_t> keys(12'500);
    for (auto& k : keys) k = rng();
    keys = SortedUnique(keys);
    std::vector<uint32_t> rows(keys.size());
    for (auto& r : rows) r = next_row++;
    index.Insert(keys.data(), rows.data(), keys.size());
    all.insert(all.end(), keys.begin(), keys.end());
  }
  // Rows were numbered in insertion order: all[i] -> i.
  std::vector<uint32_t> order(all.size());
  for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return all[a] < all[b]; });
  std::vector<uint64_t> sorted(all.size());
  for (size_t j = 0; j < order.size(); ++j) sorted[j] = all[order[j]];
  std::vector<uint32_t> rows(all.size());
  REQUIRE(index.Find(sorted.data(), sorted.size(), rows.data()) == 0);
  for (size_t j = 0; j < order.size(); ++j) REQUIRE(rows[j] == order[j]);
  CHECK(index.size() == all.size());
  // Keys between the stored ones are reported missing.
  std::vector<uint64_t> probes;
  for (size_t j = 0; j + 1 < order.size(); j += 1000) {
    if (all[order[j]] + 1 < all[order[j + 1]]) probes.push_back(all[order[j]] + 1);
  }
  std::vector<uint32_t> prows(probes.size());
  CHECK(index.Find(probes.data(), probes.size(), prows.data()) == probes.size());
}

TEST_CASE("SparseTable keeps every row with its key across requests") {
  // Reserved for none, fewer than the ~27,000 rows created (it grows past the
  // reserve), or more; rows of one float (gathered by value) or of three.
  const uint64_t reserve = GENERATE(0, 8000, 100000);
  const uint32_t dim = GENERATE(1, 3);
  INFO("reserve_rows " << reserve << ", dim " << dim);
  OptimizerConfig sgd{.type = OptimizerType::kSgd, .lr = 1.0f};
  auto opt = MakeOptimizer(sgd);
  TableConfig config{.name = "emb", .kind = TableKind::kSparse, .dim = dim};
  config.init = InitConfig{.type = InitType::kUniform, .low = -1, .high = 1, .seed = 3};
  SparseTable table(config, opt.get(), 8, reserve);
  Initializer init(config.init, "emb");
  // Each key's gradient differs by key and by component (small integers, so
  // float sums are exact): a gradient applied to the wrong row shows.
  auto grad_of = [](uint64_t key, uint32_t d) { return static_cast<float>((key + 3 * d) % 7 + 1); };
  std::mt19937_64 rng(5);
  std::map<uint64_t, int> pushes;  // key -> times pushed
  for (int request = 0; request < 50; ++request) {
    std::vector<uint64_t> keys(2000);
    for (auto& k : keys) k = rng() % 30000;
    keys = SortedUnique(keys);
    std::vector<float> grads(keys.size() * dim);
    for (size_t j = 0; j < keys.size(); ++j) {
      for (uint32_t d = 0; d < dim; ++d) grads[j * dim + d] = grad_of(keys[j], d);
      ++pushes[keys[j]];
    }
    table.Apply(keys, grads, 1.0f);
  }
  std::vector<uint64_t> all;
  for (const auto& [k, times] : pushes) all.push_back(k);
  std::vector<float> out(all.size() * dim);
  table.Read(all, absl::MakeSpan(out));
  for (size_t j = 0; j < all.size(); ++j) {
    INFO("key " << all[j]);
    for (uint32_t d = 0; d < dim; ++d) {
      REQUIRE(out[j * dim + d] ==
              Approx(init.ValueAt(all[j] * dim + d) - pushes[all[j]] * grad_of(all[j], d)));
    }
  }
  CHECK(table.rows() == all.size());
}

TEST_CASE("SparseTable snapshots into one buffer, keys then rows, rows created meanwhile included") {
  OptimizerConfig adagrad{.type = OptimizerType::kAdagrad, .lr = 0.5f};
  auto opt = MakeOptimizer(adagrad);
  TableConfig config{.name = "emb", .kind = TableKind::kSparse, .dim = 3};
  config.init = InitConfig{.type = InitType::kUniform, .low = -1, .high = 1, .seed = 3};
  SparseTable table(config, opt.get(), 8);
  std::vector<uint64_t> keys(20000);
  for (size_t i = 0; i < keys.size(); ++i) keys[i] = i * 7919;
  std::vector<float> grads(keys.size() * 3, 0.25f);
  table.Apply(keys, grads, 1.0f);
  const size_t row_bytes = table.row_floats() * sizeof(float);
  REQUIRE(table.row_floats() == 6);  // 3 values, 3 Adagrad slots

  // The first buffer is outgrown by 5,000 rows a pull creates while the
  // snapshot counts: it asks again and takes them all.
  std::vector<std::vector<char>> buffers;
  std::vector<uint64_t> fresh(5000);
  for (size_t i = 0; i < fresh.size(); ++i) fresh[i] = 1'000'000'007ull + i;
  int64_t step = -1;
  const uint64_t n = table.Snapshot(
      [&](uint64_t size) {
        if (buffers.empty()) {
          std::vector<float> out(fresh.size() * 3);
          table.Read(fresh, absl::MakeSpan(out));
        }
        buffers.emplace_back(size);
        return buffers.back().data();
      },
      &step);
  CHECK(buffers.size() == 2);
  CHECK(step == 1);
  REQUIRE(n == 25000);
  REQUIRE(buffers.back().size() >= n * (8 + row_bytes));
  const char* data = buffers.back().data();
  std::vector<uint64_t> got(n);
  std::memcpy(got.data(), data, n * 8);
  std::vector<uint64_t> expected = keys;
  expected.insert(expected.end(), fresh.begin(), fresh.end());
  CHECK(SortedUnique(got) == SortedUnique(expected));

  // The rows, restored into another table, read back as the original's.
  SparseTable copy(config, opt.get(), 4);
  REQUIRE(copy.Restore(data, data + n * 8, n, step).ok());
  // A key twice is refused, and nothing of it is loaded.
  if (n >= 2) {
    std::string twice(data, n * (8 + row_bytes));
    std::memcpy(&twice[8], &twice[0], 8);
    SparseTable other(config, opt.get(), 4);
    CHECK(other.Restore(twice.data(), twice.data() + n * 8, n, step).code() ==
          absl::StatusCode::kInvalidArgument);
    CHECK(other.rows() == 0);
  }
  std::vector<float> a(got.size() * 3), b(got.size() * 3);
  std::vector<uint64_t> sorted = SortedUnique(got);
  table.Read(sorted, absl::MakeSpan(a));
  copy.Read(sorted, absl::MakeSpan(b));
  CHECK(a == b);
  // Optimizer slots came along: the same push moves both tables alike.
  std::vector<float> g(sorted.size() * 3, 1.0f);
  table.Apply(sorted, g, 1.0f);
  copy.Apply(sorted, g, 1.0f);
  table.Read(sorted, absl::MakeSpan(a));
  copy.Read(sorted, absl::MakeSpan(b));
  CHECK(a == b);
}

TEST_CASE("SparseTable: concurrent requests on shared stripes equal the sequential result") {
  // Threads push and pull overlapping keys at once; a request passes over
  // stripes other requests hold and comes back to them. SGD with integer
  // gradients: any interleaving gives the same exact values.
  const int kThreads = 4, kRequests = 60;
  OptimizerConfig sgd{.type = OptimizerType::kSgd, .lr = 1.0f};
  auto opt = MakeOptimizer(sgd);
  TableConfig config{.name = "emb", .kind = TableKind::kSparse, .dim = 1};
  SparseTable table(config, opt.get(), 16);  // zeros
  std::vector<std::map<uint64_t, int>> pushed(kThreads);
  std::vector<std::thread> threads;  // Catch2's assertions stay on this thread
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(100 + t);
      for (int r = 0; r < kRequests; ++r) {
        std::vector<uint64_t> keys(3000);
        for (auto& k : keys) k = rng() % 8000;
        keys = SortedUnique(keys);
        std::vector<float> grads(keys.size(), 1.0f), out(keys.size());
        table.Apply(keys, grads, 1.0f);
        table.Read(keys, absl::MakeSpan(out));
        for (uint64_t k : keys) ++pushed[t][k];
      }
    });
  }
  for (auto& th : threads) th.join();
  std::map<uint64_t, int> total;
  for (const auto& m : pushed) {
    for (const auto& [k, n] : m) total[k] += n;
  }
  std::vector<uint64_t> all;
  for (const auto& [k, n] : total) all.push_back(k);
  std::vector<float> out(all.size());
  table.Read(all, absl::MakeSpan(out));
  for (size_t j = 0; j < all.size(); ++j) {
    INFO("key " << all[j]);
    REQUIRE(out[j] == -static_cast<float>(total[all[j]]));
  }
  CHECK(table.rows() == all.size());
}

}  // namespace
}  // namespace tessera
