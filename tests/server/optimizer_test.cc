// Each optimizer against steps computed by hand.
#include "server/optimizer.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

namespace tessera {
namespace {

struct Run {
  std::vector<float> w, slots;
  std::unique_ptr<Optimizer> opt;
  Run(const OptimizerConfig& c, std::vector<float> w0) : w(std::move(w0)), opt(MakeOptimizer(c)) {
    slots.resize(opt->num_slots() * w.size());
    opt->InitSlots(absl::MakeSpan(slots));
  }
  void Step(const std::vector<float>& g, int64_t t, float scale = 1.0f) {
    opt->Apply(w.data(), g.data(), slots.data(), w.size(), w.size(), t, scale, 1.0f);
  }
};

TEST_CASE("sgd: w -= lr * scale * g") {
  Run r({.type = OptimizerType::kSgd, .lr = 0.1f}, {1.0f, -2.0f});
  CHECK(r.opt->num_slots() == 0);
  r.Step({0.5f, -1.0f}, 1);
  CHECK(r.w[0] == Approx(0.95f));
  CHECK(r.w[1] == Approx(-1.9f));
  r.Step({1.0f, 1.0f}, 2, 0.5f);
  CHECK(r.w[0] == Approx(0.90f));
}

TEST_CASE("momentum: v = mu v + g; w -= lr v") {
  Run r({.type = OptimizerType::kMomentum, .lr = 0.1f, .momentum = 0.9f}, {1.0f});
  r.Step({1.0f}, 1);  // v = 1, w = 0.9
  CHECK(r.w[0] == Approx(0.9f));
  r.Step({1.0f}, 2);  // v = 1.9, w = 0.71
  CHECK(r.slots[0] == Approx(1.9f));
  CHECK(r.w[0] == Approx(0.71f));
}

TEST_CASE("nesterov: w -= lr (g + mu v)") {
  Run r({.type = OptimizerType::kMomentum, .lr = 0.1f, .momentum = 0.9f, .nesterov = true}, {1.0f});
  r.Step({1.0f}, 1);  // v = 1, w = 1 - 0.1 * (1 + 0.9) = 0.81
  CHECK(r.w[0] == Approx(0.81f));
  r.Step({1.0f}, 2);  // v = 1.9, w = 0.81 - 0.1 * (1 + 1.71) = 0.539
  CHECK(r.w[0] == Approx(0.539f));
}

TEST_CASE("adagrad: acc += g^2; w -= lr g / (sqrt(acc) + eps)") {
  Run r(
      {.type = OptimizerType::kAdagrad, .lr = 0.5f, .epsilon = 1e-6f, .initial_accumulator = 0.1f},
      {1.0f});
  CHECK(r.slots[0] == Approx(0.1f));
  r.Step({2.0f}, 1);  // acc = 4.1
  CHECK(r.slots[0] == Approx(4.1f));
  CHECK(r.w[0] == Approx(1.0f - 0.5f * 2.0f / (std::sqrt(4.1f) + 1e-6f)));
}

TEST_CASE("adam matches the textbook update with bias correction") {
  OptimizerConfig c{
      .type = OptimizerType::kAdam, .lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.999f, .epsilon = 1e-8f};
  Run r(c, {0.5f, -0.5f, 0.0f});
  double w[3] = {0.5, -0.5, 0.0}, m[3] = {0, 0, 0}, v[3] = {0, 0, 0};
  std::vector<std::vector<float>> grads = {
      {0.1f, -0.2f, 0.0f}, {0.3f, 0.1f, -1.0f}, {-0.2f, 0.2f, 2.0f}};
  for (int t = 1; t <= 3; ++t) {
    r.Step(grads[t - 1], t);
    for (int i = 0; i < 3; ++i) {
      double g = grads[t - 1][i];
      m[i] = 0.9 * m[i] + 0.1 * g;
      v[i] = 0.999 * v[i] + 0.001 * g * g;
      double mhat = m[i] / (1 - std::pow(0.9, t)), vhat = v[i] / (1 - std::pow(0.999, t));
      w[i] -= 0.01 * mhat / (std::sqrt(vhat) + 1e-8);
    }
  }
  for (int i = 0; i < 3; ++i) CHECK(r.w[i] == Approx(w[i]).epsilon(1e-5));
  // First Adam step moves each value by ~lr in the sign of its gradient.
  Run first(c, {0.0f});
  first.Step({123.0f}, 1);
  CHECK(first.w[0] == Approx(-0.01f).epsilon(1e-4));
}

TEST_CASE("lazy adam: a zero gradient leaves the value and its moments as they were") {
  OptimizerConfig c{.type = OptimizerType::kAdam, .lr = 0.01f};
  c.lazy = true;
  Run lazy(c, {0.5f, -0.5f});
  c.lazy = false;
  Run eager(c, {0.5f, -0.5f});
  for (Run* r : {&lazy, &eager}) {
    r->Step({0.1f, 0.3f}, 1);
    r->Step({0.0f, 0.2f}, 2);  // value 0 not sent this update
  }
  const std::vector<float> after_first = [&] {
    Run once(c, {0.5f, -0.5f});
    once.Step({0.1f, 0.3f}, 1);
    return once.w;
  }();
  CHECK(lazy.w[0] == after_first[0]);          // kept
  CHECK(lazy.slots[0] == Approx(0.01f));       // m: (1 - b1) g, not decayed
  CHECK(eager.w[0] < after_first[0]);          // moved again by its momentum
  CHECK(eager.slots[0] == Approx(0.009f));     // decayed
  CHECK(lazy.w[1] == Approx(eager.w[1]));      // a sent value: the same update
}

TEST_CASE("adam with a frozen variance: v and its correction stop at the freeze, m goes on") {
  OptimizerConfig c{
      .type = OptimizerType::kAdam, .lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.999f, .epsilon = 1e-8f};
  c.freeze_variance_after = 2;
  Run r(c, {0.5f, -0.5f});
  double w[2] = {0.5, -0.5}, m[2] = {0, 0}, v[2] = {0, 0};
  const std::vector<std::vector<float>> grads = {
      {0.1f, -0.2f}, {0.3f, 0.1f}, {-2.0f, 4.0f}, {5.0f, -0.5f}};
  for (int t = 1; t <= 4; ++t) {
    r.Step(grads[t - 1], t);
    const int tv = std::min(t, 2);
    for (int i = 0; i < 2; ++i) {
      const double g = grads[t - 1][i];
      m[i] = 0.9 * m[i] + 0.1 * g;
      if (t <= 2) v[i] = 0.999 * v[i] + 0.001 * g * g;
      const double mhat = m[i] / (1 - std::pow(0.9, t)), vhat = v[i] / (1 - std::pow(0.999, tv));
      w[i] -= 0.01 * mhat / (std::sqrt(vhat) + 1e-8);
    }
    for (int i = 0; i < 2; ++i) {
      INFO("t " << t << " i " << i);
      CHECK(r.w[i] == Approx(w[i]).epsilon(1e-5));
      // v after the freeze: as at t = 2 (float32 rounding of 1 - b2: 1e-4 relative)
      CHECK(r.slots[2 + i] == Approx(v[i]).epsilon(1e-3));
    }
  }
  // Sparse rows follow the same rule.
  std::vector<float> row = {0.5f, 0.0f, 0.0f};  // w, m, v of one 1-wide row
  auto opt = MakeOptimizer(c);
  for (int t = 1; t <= 4; ++t) {
    const float g = grads[t - 1][0];
    float* rows[] = {row.data()};
    const float* gs[] = {&g};
    opt->ApplyRows(rows, gs, 1, t, 1.0f);
  }
  CHECK(row[0] == Approx(w[0]).epsilon(1e-5));
  CHECK(row[2] == Approx(v[0]).epsilon(1e-3));
}

TEST_CASE("cosine schedule: lr at step 1, half way at T/2 + 1, min_lr from T + 1 on") {
  // SGD with g = 1 moves w by exactly the step's learning rate.
  OptimizerConfig c{.type = OptimizerType::kSgd, .lr = 0.4f};
  c.lr_schedule = LrSchedule::kCosine;
  c.decay_steps = 4;
  c.min_lr = 0.1f;
  Run r(c, {0.0f});
  const std::vector<float> want = {0.4f,  // step 1: nothing decayed yet
                                   float(0.1 + 0.15 * (1 + std::cos(M_PI * 0.25))),  // step 2
                                   0.25f,                                        // step 3: half way
                                   float(0.1 + 0.15 * (1 + std::cos(M_PI * 0.75))),  // step 4
                                   0.1f,
                                   0.1f};  // steps 5, 6: min_lr
  float w = 0.0f;
  for (size_t t = 0; t < want.size(); ++t) {
    r.Step({1.0f}, static_cast<int64_t>(t + 1));
    w -= want[t];
    CHECK(r.w[0] == Approx(w));
  }
}

TEST_CASE("cosine schedule scales Adam's step too; constant leaves every rule as it was") {
  OptimizerConfig c{
      .type = OptimizerType::kAdam, .lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.999f, .epsilon = 1e-8f};
  Run constant(c, {0.5f});
  c.lr_schedule = LrSchedule::kCosine;
  c.decay_steps = 2;
  Run cosine(c, {0.5f});
  constant.Step({1.0f}, 1);
  cosine.Step({1.0f}, 1);
  CHECK(cosine.w[0] == constant.w[0]);  // step 1 uses the full lr
  const float before = cosine.w[0];
  constant.Step({1.0f}, 2);
  cosine.Step({1.0f}, 2);  // lr halved: Adam's normalized step is half as long
  CHECK(before - cosine.w[0] == Approx((before - constant.w[0]) / 2).epsilon(1e-4));
  cosine.Step({1.0f}, 3);  // min_lr 0: no move
  CHECK(cosine.w[0] == Approx(before - (before - constant.w[0]) / 2).epsilon(1e-6));
}

TEST_CASE("slot stride lets a sub-range update its own state") {
  // Adam over values [2, 4) of a 6-value table: state at slots[k*6 + i].
  auto opt = MakeOptimizer({.type = OptimizerType::kAdam, .lr = 0.1f});
  std::vector<float> w(6, 1.0f), slots(12, 0.0f);
  std::vector<float> g = {1.0f, -1.0f};
  opt->Apply(w.data() + 2, g.data(), slots.data() + 2, 6, 2, 1, 1.0f, 1.0f);
  CHECK(w[0] == 1.0f);
  CHECK(w[2] == Approx(0.9f).epsilon(1e-4));
  CHECK(w[3] == Approx(1.1f).epsilon(1e-4));
  CHECK(slots[2] == Approx(0.1f));                      // m of value 2
  CHECK(slots[6 + 2] == Approx(0.001f).epsilon(1e-4));  // v of value 2
  CHECK(slots[6 + 3] == Approx(0.001f).epsilon(1e-4));
  CHECK(slots[0] == 0.0f);
}

TEST_CASE("large arrays (several blocks) update every value") {
  const size_t n = 10000;
  auto opt = MakeOptimizer({.type = OptimizerType::kAdam, .lr = 0.1f});
  std::vector<float> w(n, 0.0f), slots(2 * n, 0.0f), g(n, 1.0f);
  opt->Apply(w.data(), g.data(), slots.data(), n, n, 1, 1.0f, 1.0f);
  for (size_t i = 0; i < n; ++i) REQUIRE(w[i] == Approx(-0.1f).epsilon(1e-4));
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

OptimizerConfig Ftrl(float alpha, float beta, float l1, float l2) {
  OptimizerConfig c;
  c.type = OptimizerType::kFtrl;
  c.alpha = alpha;
  c.beta = beta;
  c.l1 = l1;
  c.l2 = l2;
  return c;
}

TEST_CASE("ftrl-proximal matches McMahan et al.'s Algorithm 1 by hand") {
  // alpha 0.5, beta 1, l1 0.1, l2 0.2; w starts at 0, z = n = 0.
  Run r(Ftrl(0.5f, 1.0f, 0.1f, 0.2f), {0.0f, 0.0f});
  CHECK(r.opt->num_slots() == 2);
  // Value 0: g = 1. sigma = (1 - 0)/0.5 = 2; z = 1 - 2*0 = 1; n = 1;
  // w = -(1 - 0.1) / ((1 + 1)/0.5 + 0.2) = -0.9 / 4.2.
  // Value 1: g = 0.05: sigma = 0.1; z = 0.05 <= l1: w = 0 (sparsity).
  r.Step({1.0f, 0.05f}, 1);
  CHECK(r.slots[0] == Approx(1.0f));  // z of value 0
  CHECK(r.slots[2] == Approx(1.0f));  // n of value 0 (slot 1 at stride 2)
  CHECK(r.w[0] == Approx(-0.9 / 4.2));
  CHECK(r.w[1] == 0.0f);
  CHECK(r.slots[1] == Approx(0.05f));
  // Value 0 again, g = -0.5: n' = 1.25, sigma = (sqrt(1.25) - 1)/0.5,
  // z' = 1 - 0.5 - sigma * w, w' = -(z' - 0.1)/((1 + sqrt(1.25))/0.5 + 0.2).
  const double w1 = -0.9 / 4.2;
  const double sigma = (std::sqrt(1.25) - 1.0) / 0.5;
  const double z2 = 1.0 - 0.5 - sigma * w1;
  const double w2 = -(z2 - 0.1) / ((1.0 + std::sqrt(1.25)) / 0.5 + 0.2);
  r.Step({-0.5f, 0.0f}, 2);
  CHECK(r.slots[0] == Approx(z2));
  CHECK(r.w[0] == Approx(w2));
  // A negative z beyond l1 gives a positive weight.
  Run neg(Ftrl(0.5f, 1.0f, 0.1f, 0.0f), {0.0f});
  neg.Step({-2.0f}, 1);  // z = -2, n = 4: w = (2 - 0.1) / ((1 + 2)/0.5)
  CHECK(neg.w[0] == Approx(1.9 / 6.0));
}

TEST_CASE("ftrl on sparse rows: ApplyRows equals Apply value by value") {
  const OptimizerConfig c = Ftrl(0.1f, 1.0f, 0.01f, 0.1f);
  auto opt = MakeOptimizer(c);
  const uint32_t dim = 3;
  // One row: dim values, then z (dim), then n (dim).
  std::vector<float> row(dim * 3, 0.0f), flat_w(dim, 0.0f), flat_slots(2 * dim, 0.0f);
  const std::vector<float> g = {0.3f, -0.2f, 0.005f};
  for (int step = 1; step <= 3; ++step) {
    float* rows[] = {row.data()};
    const float* grads[] = {g.data()};
    opt->ApplyRows(rows, grads, dim, step, 0.5f);
    opt->Apply(flat_w.data(), g.data(), flat_slots.data(), dim, dim, step, 0.5f, 1.0f);
  }
  for (uint32_t j = 0; j < dim; ++j) {
    CHECK(row[j] == Approx(flat_w[j]));
    CHECK(row[dim + j] == Approx(flat_slots[j]));
    CHECK(row[2 * dim + j] == Approx(flat_slots[dim + j]));
  }
  CHECK(row[2] == 0.0f);  // |z| of the small gradient stays under l1
  CHECK(row[0] != 0.0f);
}

TEST_CASE("lr_factor scales one update's learning rate, as a smaller lr would") {
  for (OptimizerType type : {OptimizerType::kSgd, OptimizerType::kMomentum, OptimizerType::kAdagrad,
                             OptimizerType::kAdam}) {
    INFO(NameOf(type));
    OptimizerConfig full{.type = type, .lr = 0.1f};
    OptimizerConfig quarter = full;
    quarter.lr = 0.025f;
    Run a(full, {1.0f, -2.0f}), b(quarter, {1.0f, -2.0f});
    const std::vector<float> g = {0.5f, -1.0f};
    a.opt->Apply(a.w.data(), g.data(), a.slots.data(), 2, 2, 1, 1.0f, 0.25f);
    b.Step(g, 1);
    CHECK(a.w[0] == Approx(b.w[0]).epsilon(1e-6));
    CHECK(a.w[1] == Approx(b.w[1]).epsilon(1e-6));
    CHECK(a.w[0] != Approx(1.0f));
  }
}

}  // namespace
}  // namespace tessera
