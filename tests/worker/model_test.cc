// Models on the CPU backend: gradients against finite differences (MLP and
// CNN), the convolution and pooling primitives, and learning on synthetic data.
#include "worker/model.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "common/initializer.h"

namespace tessera {
namespace {

ModelConfig Mlp(std::vector<uint32_t> layers) {
  ModelConfig c;
  c.type = ModelType::kMlp;
  c.layers = std::move(layers);
  return c;
}

ModelConfig Cnn(std::vector<uint32_t> layers, std::vector<uint32_t> channels, uint32_t kernel) {
  ModelConfig c;
  c.type = ModelType::kCnn;
  c.layers = std::move(layers);
  c.conv_channels = std::move(channels);
  c.kernel = kernel;
  return c;
}

ParameterSet RandomParams(const Model& model, uint64_t seed, float scale = 0.5f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  ParameterSet p;
  for (size_t size : model.TableSizes()) {
    p.emplace_back(size);
    for (float& v : p.back()) v = normal(rng);
  }
  return p;
}

// Checks every third parameter's gradient against central differences.
void CheckGradients(const ModelConfig& config, uint32_t features, uint32_t classes) {
  auto backend = MakeCpuBackend();
  auto model = MakeModel(config, backend.get(), 8);
  ParameterSet params = RandomParams(*model, 11);
  Dataset data = SyntheticDataset(6, features, classes, 2);
  ParameterSet grads;
  int64_t correct = 0;
  model->TrainStep(params, data.x.data(), data.y.data(), 6, &grads, &correct);
  REQUIRE(grads.size() == params.size());
  const double h = 1e-3;
  for (size_t t = 0; t < params.size(); ++t) {
    for (size_t i = 0; i < params[t].size(); i += 3) {
      ParameterSet plus = params, minus = params, unused;
      plus[t][i] += h;
      minus[t][i] -= h;
      double lp = model->TrainStep(plus, data.x.data(), data.y.data(), 6, &unused, &correct);
      double lm = model->TrainStep(minus, data.x.data(), data.y.data(), 6, &unused, &correct);
      INFO("table " << t << " index " << i);
      REQUIRE(grads[t][i] == Approx((lp - lm) / (2 * h)).margin(3e-3));
    }
  }
}

TEST_CASE("MLP backprop matches finite differences") {
  CheckGradients(Mlp({5, 3}), 5, 3);
  CheckGradients(Mlp({5, 7, 4, 3}), 5, 3);
}

TEST_CASE("a step with the previous step's parameter version skips the upload") {
  auto backend = MakeCpuBackend();
  auto model = MakeModel(Mlp({5, 7, 3}), backend.get(), 8);
  ParameterSet a = RandomParams(*model, 1), b = RandomParams(*model, 2);
  Dataset data = SyntheticDataset(6, 5, 3, 2);
  ParameterSet ga, gb, again, fresh;
  int64_t correct = 0;
  const float la = model->TrainStep(a, data.x.data(), data.y.data(), 6, &ga, &correct, 7);
  const float lb = model->TrainStep(b, data.x.data(), data.y.data(), 6, &gb, &correct, 0);
  CHECK(la != lb);
  // Version 7 again, but the values of b: the model still holds b (uploaded last).
  model->TrainStep(a, data.x.data(), data.y.data(), 6, &again, &correct, 7);
  CHECK(again == ga);  // version 0 in between forced the upload of b, then 7 uploads a
  // Same version as the step before: the upload is skipped, b's values stay unused.
  const float skipped = model->TrainStep(b, data.x.data(), data.y.data(), 6, &fresh, &correct, 7);
  CHECK(skipped == la);
  CHECK(fresh == ga);
  // A new version uploads.
  CHECK(model->TrainStep(b, data.x.data(), data.y.data(), 6, &fresh, &correct, 8) == lb);
  CHECK(fresh == gb);
}

TEST_CASE("CNN backprop matches finite differences") {
  // 8x8 image, conv 3x3 -> 2 channels, pool, conv 3x3 -> 3 channels, pool, head 12 -> 5 -> 3.
  CheckGradients(Cnn({64, 5, 3}, {2, 3}, 3), 64, 3);
}

TEST_CASE("CNN tables follow the config") {
  ModelConfig c = Cnn({784, 100, 10}, {32, 64}, 5);
  auto backend = MakeCpuBackend();
  auto model = MakeModel(c, backend.get(), 4);
  CHECK(model->TableSizes() == std::vector<size_t>{5 * 5 * 1 * 32, 32, 5 * 5 * 32 * 64, 64,
                                                   7 * 7 * 64 * 100, 100, 100 * 10, 10});
}

TEST_CASE("Im2Col and Col2Im are adjoint; padding reads zeros") {
  auto backend = MakeCpuBackend();
  Backend::ConvShape sh{2, 4, 5, 3, 3, 1};
  Tensor x = backend->Allocate(2, 4 * 5 * 3);
  Tensor cols = backend->Allocate(2 * sh.out_height() * sh.out_width(), sh.patch());
  Tensor y = backend->Allocate(cols.rows, cols.cols);
  Tensor back = backend->Allocate(2, 4 * 5 * 3);
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal;
  for (int64_t i = 0; i < x.size(); ++i) x.data[i] = normal(rng);
  for (int64_t i = 0; i < y.size(); ++i) y.data[i] = normal(rng);
  backend->Im2Col(x, sh, cols);
  backend->Col2Im(y, sh, back);
  double lhs = 0, rhs = 0;  // <Im2Col(x), y> == <x, Col2Im(y)>
  for (int64_t i = 0; i < cols.size(); ++i) lhs += double(cols.data[i]) * y.data[i];
  for (int64_t i = 0; i < x.size(); ++i) rhs += double(x.data[i]) * back.data[i];
  CHECK(lhs == Approx(rhs).epsilon(1e-5));
  // Output pixel (0,0) of image 0: its top-left 3x3 patch lies half outside.
  CHECK(cols.data[0] == 0.0f);                     // (r=0,s=0) is padding
  CHECK(cols.data[(1 * 3 + 1) * 3] == x.data[0]);  // (r=1,s=1) is pixel (0,0), channel 0
}

TEST_CASE("2x2 max-pooling picks each window's maximum and routes the gradient to it") {
  auto backend = MakeCpuBackend();
  Backend::ConvShape sh{1, 2, 4, 1, 0, 0};
  Tensor x = backend->Allocate(1, 8), y = backend->Allocate(1, 2), mask = backend->Allocate(1, 8);
  Tensor dy = backend->Allocate(1, 2), dx = backend->Allocate(1, 8);
  float image[8] = {1, 5, 2, 0,   // row 0
                    3, 4, 9, 2};  // row 1
  std::copy(image, image + 8, x.data);
  backend->MaxPool2x2(x, sh, y, mask);
  CHECK(y.data[0] == 5);
  CHECK(y.data[1] == 9);
  dy.data[0] = 10;
  dy.data[1] = 20;
  backend->MaxPool2x2Backward(dy, mask, sh, dx);
  CHECK(std::vector<float>(dx.data, dx.data + 8) == std::vector<float>{0, 10, 0, 0, 0, 0, 20, 0});
}

// The initial parameters a job would start from (its tables' initializers).
ParameterSet InitialParams(const ModelConfig& model) {
  JobConfig job;
  job.cluster.servers = {"local:1"};
  job.model = model;
  ParameterSet params;
  for (const TableConfig& t : job.Tables()) {
    params.emplace_back(t.size);
    Initializer(t.init, t.name).Fill(0, absl::MakeSpan(params.back()));
  }
  return params;
}

// Plain SGD on the model from the job's initial parameters; returns test
// accuracy before and after.
std::pair<double, double> Learn(const ModelConfig& config, uint32_t features, int epochs,
                                float lr) {
  auto backend = MakeCpuBackend();
  auto model = MakeModel(config, backend.get(), 64);
  ParameterSet params = InitialParams(config);
  REQUIRE(params.size() == model->TableSizes().size());
  for (size_t t = 0; t < params.size(); ++t) REQUIRE(params[t].size() == model->TableSizes()[t]);
  Dataset train = SyntheticDataset(1024, features, 10, 1);
  Dataset test = SyntheticDataset(256, features, 10, 2);
  double before, after, loss;
  model->Evaluate(params, test, &before, &loss);
  ParameterSet grads;
  for (int epoch = 0; epoch < epochs; ++epoch) {
    for (size_t first = 0; first + 64 <= train.size(); first += 64) {
      int64_t correct = 0;
      model->TrainStep(params, train.example(first), train.y.data() + first, 64, &grads, &correct);
      for (size_t t = 0; t < params.size(); ++t) {
        for (size_t i = 0; i < params[t].size(); ++i) params[t][i] -= lr * grads[t][i];
      }
    }
  }
  model->Evaluate(params, test, &after, &loss);
  return {before, after};
}

TEST_CASE("SGD on the MLP and the CNN learns the synthetic problem") {
  auto [mlp_before, mlp_after] = Learn(Mlp({784, 32, 10}), 784, 3, 0.1f);
  CHECK(mlp_before < 0.3);
  CHECK(mlp_after > 0.9);
  auto [cnn_before, cnn_after] = Learn(Cnn({784, 16, 10}, {4}, 3), 784, 5, 0.1f);
  CHECK(cnn_before < 0.3);
  CHECK(cnn_after > 0.85);
}

}  // namespace
}  // namespace tessera
