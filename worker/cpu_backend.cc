// CpuBackend: the Backend on Eigen, single-threaded per worker (one worker per
// core is the deployment unit on CPU machines).
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <vector>

#include "worker/backend.h"

namespace tessera {
namespace {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<Matrix>;
using RowVector = Eigen::Map<Eigen::RowVectorXf>;

MatrixMap View(Tensor t) { return MatrixMap(t.data, t.rows, t.cols); }

class CpuBackend : public Backend {
 public:
  std::string name() const override { return "cpu"; }

  Tensor Allocate(int64_t rows, int64_t cols) override {
    buffers_.emplace_back(static_cast<size_t>(rows * cols), 0.0f);
    return {buffers_.back().data(), rows, cols};
  }

  void CopyIn(absl::Span<const float> host, Tensor t) override {
    std::memcpy(t.data, host.data(), host.size() * sizeof(float));
  }
  void CopyOut(Tensor t, absl::Span<float> host) override {
    std::memcpy(host.data(), t.data, host.size() * sizeof(float));
  }

  void Gemm(bool ta, bool tb, float alpha, Tensor a, Tensor b, float beta, Tensor c) override {
    auto C = View(c);
    auto A = View(a);
    auto B = View(b);
    if (beta == 0.0f)
      C.setZero();
    else if (beta != 1.0f)
      C *= beta;
    if (!ta && !tb)
      C.noalias() += alpha * A * B;
    else if (ta && !tb)
      C.noalias() += alpha * A.transpose() * B;
    else if (!ta && tb)
      C.noalias() += alpha * A * B.transpose();
    else
      C.noalias() += alpha * A.transpose() * B.transpose();
  }

  void BiasActivation(Tensor x, Tensor bias, bool relu) override {
    auto X = View(x);
    X.rowwise() += RowVector(bias.data, bias.cols);
    if (relu) X = X.cwiseMax(0.0f);
  }

  void ReluBackward(Tensor y, Tensor dy) override {
    auto Y = View(y).array();
    auto DY = View(dy).array();
    DY = (Y > 0.0f).select(DY, 0.0f);
  }

  void BiasGrad(Tensor dy, Tensor db) override {
    RowVector(db.data, db.cols) = View(dy).colwise().sum();
  }

  float SoftmaxCrossEntropy(Tensor logits, const int32_t* labels, Tensor dlogits,
                            int64_t* correct) override {
    auto Z = View(logits);
    auto D = View(dlogits);
    double loss = 0.0;
    const float inv_n = 1.0f / static_cast<float>(logits.rows);
    for (int64_t r = 0; r < logits.rows; ++r) {
      Eigen::Index argmax;
      const float max = Z.row(r).maxCoeff(&argmax);
      D.row(r) = (Z.row(r).array() - max).exp().matrix();
      const float sum = D.row(r).sum();
      loss += std::log(sum) - (Z(r, labels[r]) - max);
      D.row(r) *= inv_n / sum;
      D(r, labels[r]) -= inv_n;
      if (argmax == labels[r]) ++*correct;
    }
    return static_cast<float>(loss / logits.rows);
  }

 private:
  std::deque<std::vector<float>> buffers_;  // stable addresses
};

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend() { return std::make_unique<CpuBackend>(); }

}  // namespace tessera
