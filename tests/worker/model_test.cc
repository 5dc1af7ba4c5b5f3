// The MLP on the CPU backend: gradients against finite differences, and
// learning on synthetic data.
#include "worker/model.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <random>

namespace tessera {
namespace {

ParameterSet RandomParams(const Mlp& model, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  ParameterSet p;
  for (size_t size : model.TableSizes()) {
    p.emplace_back(size);
    for (float& v : p.back()) v = normal(rng);
  }
  return p;
}

TEST_CASE("backprop matches finite differences") {
  auto backend = MakeCpuBackend();
  for (std::vector<uint32_t> layers : {std::vector<uint32_t>{5, 3}, {5, 7, 4, 3}}) {
    Mlp model(layers, backend.get(), 8);
    ParameterSet params = RandomParams(model, 11);
    Dataset data = SyntheticDataset(6, 5, 3, 2);
    ParameterSet grads;
    int64_t correct = 0;
    model.TrainStep(params, data.x.data(), data.y.data(), 6, &grads, &correct);
    const double h = 1e-3;
    for (size_t t = 0; t < params.size(); ++t) {
      for (size_t i = 0; i < params[t].size(); i += 3) {
        ParameterSet plus = params, minus = params;
        plus[t][i] += h;
        minus[t][i] -= h;
        ParameterSet unused;
        double lp = model.TrainStep(plus, data.x.data(), data.y.data(), 6, &unused, &correct);
        double lm = model.TrainStep(minus, data.x.data(), data.y.data(), 6, &unused, &correct);
        INFO("table " << t << " index " << i);
        CHECK(grads[t][i] == Approx((lp - lm) / (2 * h)).margin(2e-3));
      }
    }
  }
}

TEST_CASE("SGD on the MLP learns the synthetic problem") {
  auto backend = MakeCpuBackend();
  Mlp model({784, 32, 10}, backend.get(), 64);
  ParameterSet params = RandomParams(model, 3);
  for (auto& t : params)
    for (float& v : t) v *= 0.1f;
  Dataset train = SyntheticDataset(2048, 784, 10, 1), test = SyntheticDataset(512, 784, 10, 2);
  double before, loss;
  model.Evaluate(params, test, &before, &loss);
  ParameterSet grads;
  for (int epoch = 0; epoch < 3; ++epoch) {
    for (size_t first = 0; first + 64 <= train.size(); first += 64) {
      int64_t correct = 0;
      model.TrainStep(params, train.example(first), train.y.data() + first, 64, &grads, &correct);
      for (size_t t = 0; t < params.size(); ++t) {
        for (size_t i = 0; i < params[t].size(); ++i) params[t][i] -= 0.1f * grads[t][i];
      }
    }
  }
  double after;
  model.Evaluate(params, test, &after, &loss);
  CHECK(before < 0.3);
  CHECK(after > 0.9);
}

}  // namespace
}  // namespace tessera
