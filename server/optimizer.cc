#include "server/optimizer.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>

namespace tessera {
namespace {

using Vec = Eigen::Map<Eigen::ArrayXf>;
using ConstVec = Eigen::Map<const Eigen::ArrayXf>;

// Updates run over blocks that fit in L1/L2, so that an update written as
// several Eigen expressions still streams each array through memory once.
constexpr size_t kBlock = 2048;

template <typename Body>
void ForEachBlock(size_t n, Body body) {
  for (size_t begin = 0; begin < n; begin += kBlock) body(begin, std::min(kBlock, n - begin));
}

// The learning rate of update `step` (>= 1): constant, or cosine from lr at
// step 1 to min_lr at step decay_steps + 1 and after.
class LearningRate {
 public:
  explicit LearningRate(const OptimizerConfig& c)
      : lr_(c.lr),
        min_(c.min_lr),
        decay_steps_(c.lr_schedule == LrSchedule::kCosine ? c.decay_steps : 0) {}

  float At(int64_t step) const {
    if (decay_steps_ <= 0) return lr_;
    const double done = static_cast<double>(std::clamp<int64_t>(step - 1, 0, decay_steps_)) /
                        static_cast<double>(decay_steps_);
    return static_cast<float>(min_ + 0.5 * (lr_ - min_) * (1.0 + std::cos(M_PI * done)));
  }

 private:
  const double lr_, min_;
  const int64_t decay_steps_;
};

class Sgd : public Optimizer {
 public:
  explicit Sgd(const OptimizerConfig& c) : lr_(c) {}
  int num_slots() const override { return 0; }
  void Apply(float* w, const float* g, float*, size_t, size_t n, int64_t step, float scale,
             float lr_factor) const override {
    Vec(w, n) -= (lr_.At(step) * lr_factor * scale) * ConstVec(g, n);
  }

 private:
  const LearningRate lr_;
};

// v = mu * v + g;  w -= lr * v  (Nesterov: w -= lr * (g + mu * v)).
class Momentum : public Optimizer {
 public:
  explicit Momentum(const OptimizerConfig& c) : lr_(c), mu_(c.momentum), nesterov_(c.nesterov) {}
  int num_slots() const override { return 1; }
  void Apply(float* w, const float* g, float* slots, size_t, size_t n, int64_t step, float scale,
             float lr_factor) const override {
    const float lr = lr_.At(step) * lr_factor;
    ForEachBlock(n, [&](size_t b, size_t len) {
      Vec wb(w + b, len), vb(slots + b, len);
      ConstVec gb(g + b, len);
      vb = mu_ * vb + scale * gb;
      if (nesterov_) {
        wb -= lr * (scale * gb + mu_ * vb);
      } else {
        wb -= lr * vb;
      }
    });
  }

 private:
  const LearningRate lr_;
  const float mu_;
  const bool nesterov_;
};

// acc += g^2;  w -= lr * g / (sqrt(acc) + eps).
class Adagrad : public Optimizer {
 public:
  explicit Adagrad(const OptimizerConfig& c)
      : lr_(c), eps_(c.epsilon), init_(c.initial_accumulator) {}
  int num_slots() const override { return 1; }
  void InitSlots(absl::Span<float> slots) const override {
    std::fill(slots.begin(), slots.end(), init_);
  }
  void Apply(float* w, const float* g, float* slots, size_t, size_t n, int64_t step, float scale,
             float lr_factor) const override {
    const float lr = lr_.At(step) * lr_factor;
    ForEachBlock(n, [&](size_t b, size_t len) {
      Vec wb(w + b, len), acc(slots + b, len);
      ConstVec gb(g + b, len);
      acc += (scale * gb).square();
      wb -= lr * scale * gb / (acc.sqrt() + eps_);
    });
  }

 private:
  const LearningRate lr_;
  const float eps_, init_;
};

// Kingma & Ba, with the bias corrections folded into the step size:
// m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
// w -= lr_t m / (sqrt(v) + eps_t),  lr_t = lr sqrt(1-b2^t)/(1-b1^t),
// eps_t = eps sqrt(1-b2^t): exactly lr * mhat / (sqrt(vhat) + eps).
class Adam : public Optimizer {
 public:
  explicit Adam(const OptimizerConfig& c)
      : lr_(c),
        b1_(c.beta1),
        b2_(c.beta2),
        eps_(c.epsilon),
        lazy_(c.lazy),
        freeze_after_(c.freeze_variance_after) {}
  int num_slots() const override { return 2; }
  void Apply(float* w, const float* g, float* slots, size_t slot_stride, size_t n, int64_t step,
             float scale, float lr_factor) const override {
    float lr_t, eps_t;
    StepConstants(step, &lr_t, &eps_t);
    lr_t *= lr_factor;
    float* m = slots;
    float* v = slots + slot_stride;
    const bool frozen = Frozen(step);
    ForEachBlock(n, [&](size_t b, size_t len) {
      Vec wb(w + b, len), mb(m + b, len), vb(v + b, len);
      ConstVec gb(g + b, len);
      if (frozen) {
        // v stays; a value with a zero gradient under lazy keeps m and w.
        if (lazy_) {
          const auto sent = gb != 0.0f;
          mb = sent.select(b1_ * mb + ((1.0f - b1_) * scale) * gb, mb);
          wb = sent.select(wb - lr_t * mb / (vb.sqrt() + eps_t), wb);
        } else {
          mb = b1_ * mb + ((1.0f - b1_) * scale) * gb;
          wb -= lr_t * mb / (vb.sqrt() + eps_t);
        }
        return;
      }
      if (lazy_) {
        // Values with a zero gradient keep their moments and their value.
        const auto sent = gb != 0.0f;
        mb = sent.select(b1_ * mb + ((1.0f - b1_) * scale) * gb, mb);
        vb = sent.select(b2_ * vb + ((1.0f - b2_) * scale * scale) * gb.square(), vb);
        wb = sent.select(wb - lr_t * mb / (vb.sqrt() + eps_t), wb);
        return;
      }
      mb = b1_ * mb + ((1.0f - b1_) * scale) * gb;
      vb = b2_ * vb + ((1.0f - b2_) * scale * scale) * gb.square();
      wb -= lr_t * mb / (vb.sqrt() + eps_t);
    });
  }

  void ApplyRows(absl::Span<float* const> rows, absl::Span<const float* const> grads, uint32_t dim,
                 int64_t step, float scale) const override {
    float lr_t, eps_t;
    StepConstants(step, &lr_t, &eps_t);
    const float a1 = (1.0f - b1_) * scale;
    const float a2 = Frozen(step) ? 0.0f : (1.0f - b2_) * scale * scale;
    const float keep = Frozen(step) ? 1.0f : b2_;
    for (size_t r = 0; r < rows.size(); ++r) {
      float* w = rows[r];
      float* m = w + dim;
      float* v = m + dim;
      const float* g = grads[r];
      for (uint32_t j = 0; j < dim; ++j) {
        m[j] = b1_ * m[j] + a1 * g[j];
        v[j] = keep * v[j] + a2 * g[j] * g[j];
        w[j] -= lr_t * m[j] / (std::sqrt(v[j]) + eps_t);
      }
    }
  }

 private:
  bool Frozen(int64_t step) const { return freeze_after_ > 0 && step > freeze_after_; }

  // v's bias correction counts only the updates v took (freeze_after_ once
  // frozen); m's counts them all.
  void StepConstants(int64_t step, float* lr_t, float* eps_t) const {
    const double t = static_cast<double>(std::max<int64_t>(step, 1));
    const double tv = Frozen(step) ? static_cast<double>(freeze_after_) : t;
    const double c2 = std::sqrt(1.0 - std::pow(b2_, tv));
    *lr_t = static_cast<float>(lr_.At(step) * c2 / (1.0 - std::pow(b1_, t)));
    *eps_t = static_cast<float>(eps_ * c2);
  }

  const LearningRate lr_;
  const float b1_, b2_, eps_;
  const bool lazy_;
  const int64_t freeze_after_;  // 0: never
};

// FTRL-proximal (McMahan et al., "Ad click prediction: a view from the
// trenches", KDD 2013, Algorithm 1), per value, slots z and n:
//   sigma = (sqrt(n + g^2) - sqrt(n)) / alpha;  z += g - sigma w;  n += g^2;
//   w = 0 if |z| <= l1, else -(z - sign(z) l1) / ((beta + sqrt(n)) / alpha + l2).
// Values are a function of the state: sparse solutions (w exactly 0) come
// from l1.
class Ftrl : public Optimizer {
 public:
  explicit Ftrl(const OptimizerConfig& c) : alpha_(c.alpha), beta_(c.beta), l1_(c.l1), l2_(c.l2) {}
  int num_slots() const override { return 2; }
  void Apply(float* w, const float* g, float* slots, size_t slot_stride, size_t n, int64_t,
             float scale, float) const override {
    float* z = slots;
    float* acc = slots + slot_stride;
    for (size_t i = 0; i < n; ++i) Update(w + i, scale * g[i], z + i, acc + i);
  }
  void ApplyRows(absl::Span<float* const> rows, absl::Span<const float* const> grads, uint32_t dim,
                 int64_t, float scale) const override {
    for (size_t r = 0; r < rows.size(); ++r) {
      float* w = rows[r];
      for (uint32_t j = 0; j < dim; ++j)
        Update(w + j, scale * grads[r][j], w + dim + j, w + 2 * dim + j);
    }
  }

 private:
  void Update(float* w, float g, float* z, float* n) const {
    const double n_new = double(*n) + double(g) * g;
    const double sigma = (std::sqrt(n_new) - std::sqrt(double(*n))) / alpha_;
    const double z_new = double(*z) + g - sigma * *w;
    *z = static_cast<float>(z_new);
    *n = static_cast<float>(n_new);
    if (std::abs(z_new) <= l1_) {
      *w = 0.0f;
    } else {
      const double sign = z_new < 0 ? -1.0 : 1.0;
      *w = static_cast<float>(-(z_new - sign * l1_) / ((beta_ + std::sqrt(n_new)) / alpha_ + l2_));
    }
  }

  const double alpha_, beta_, l1_, l2_;
};

}  // namespace

void Optimizer::ApplyRows(absl::Span<float* const> rows, absl::Span<const float* const> grads,
                          uint32_t dim, int64_t step, float scale) const {
  for (size_t r = 0; r < rows.size(); ++r) {
    Apply(rows[r], grads[r], rows[r] + dim, dim, dim, step, scale, 1.0f);
  }
}

void Optimizer::InitSlots(absl::Span<float> slots) const {
  std::fill(slots.begin(), slots.end(), 0.0f);
}

std::unique_ptr<Optimizer> MakeOptimizer(const OptimizerConfig& config) {
  if (config.type == OptimizerType::kMomentum) return std::make_unique<Momentum>(config);
  if (config.type == OptimizerType::kAdagrad) return std::make_unique<Adagrad>(config);
  if (config.type == OptimizerType::kAdam) return std::make_unique<Adam>(config);
  if (config.type == OptimizerType::kFtrl) return std::make_unique<Ftrl>(config);
  return std::make_unique<Sgd>(config);
}

}  // namespace tessera
