// SortedIndex against a std::map reference, and SparseTable rows staying
// attached to their keys across many requests, delta merges included.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "server/optimizer.h"
#include "server/sorted_index.h"
#include "server/sparse_table.h"

namespace tessera {
namespace {

std::vector<uint64_t> SortedUnique(std::vector<uint64_t> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

TEST_CASE("SortedIndex finds what was inserted, through many delta merges") {
  std::mt19937_64 rng(17);
  SortedIndex index;
  std::map<uint64_t, uint32_t> reference;
  uint32_t next_row = 0;
  for (int request = 0; request < 200; ++request) {
    // Mostly keys from a small range (repeats), sometimes a large fresh batch.
    const size_t n = request % 20 == 0 ? 5000 : 1 + rng() % 300;
    std::vector<uint64_t> keys(n);
    for (auto& k : keys) k = request % 20 == 0 ? rng() : rng() % 20000;
    keys = SortedUnique(keys);
    std::vector<uint32_t> idx(keys.size()), rows(keys.size());
    for (uint32_t i = 0; i < idx.size(); ++i) idx[i] = i;
    size_t missing = index.Find(keys.data(), idx.data(), keys.size(), rows.data());
    size_t expected_missing = 0;
    std::vector<uint32_t> new_idx, new_rows;
    for (size_t j = 0; j < keys.size(); ++j) {
      auto it = reference.find(keys[j]);
      if (it == reference.end()) {
        REQUIRE(rows[j] == SortedIndex::kMissing);
        ++expected_missing;
        new_idx.push_back(static_cast<uint32_t>(j));
        new_rows.push_back(next_row);
        reference[keys[j]] = next_row++;
      } else {
        REQUIRE(rows[j] == it->second);
      }
    }
    REQUIRE(missing == expected_missing);
    index.Insert(keys.data(), new_idx.data(), new_rows.data(), new_idx.size());
    REQUIRE(index.size() == reference.size());
  }
  CHECK(reference.size() > 20000);  // enough to have merged the delta many times
}

TEST_CASE("SparseTable keeps every row with its key across requests") {
  OptimizerConfig sgd{.type = "sgd", .lr = 1.0f};
  auto opt = MakeOptimizer(sgd);
  TableConfig config{.name = "emb", .kind = TableKind::kSparse, .dim = 2};
  config.init = InitConfig{.type = "uniform", .low = -1, .high = 1, .seed = 3};
  SparseTable table(config, opt.get(), 8);
  Initializer init(config.init, "emb");
  std::mt19937_64 rng(5);
  std::map<uint64_t, float> pushes;  // key -> total gradient pushed to value 0
  for (int request = 0; request < 50; ++request) {
    std::vector<uint64_t> keys(2000);
    for (auto& k : keys) k = rng() % 30000;
    keys = SortedUnique(keys);
    std::vector<float> grads(keys.size() * 2);
    for (size_t j = 0; j < keys.size(); ++j) {
      grads[2 * j] = 1.0f;  // exact in float
      pushes[keys[j]] += 1.0f;
    }
    table.Apply(keys, grads, 1.0f);
  }
  std::vector<uint64_t> all;
  for (const auto& [k, total] : pushes) all.push_back(k);
  std::vector<float> out(all.size() * 2);
  table.Read(all, absl::MakeSpan(out));
  for (size_t j = 0; j < all.size(); ++j) {
    INFO("key " << all[j]);
    REQUIRE(out[2 * j] == Approx(init.ValueAt(all[j] * 2) - pushes[all[j]]));
    REQUIRE(out[2 * j + 1] == Approx(init.ValueAt(all[j] * 2 + 1)));
  }
  CHECK(table.rows() == all.size());
}

}  // namespace
}  // namespace tessera
