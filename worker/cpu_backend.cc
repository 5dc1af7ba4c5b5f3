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

  void BiasGrad(Tensor dy, Tensor db) override {
    RowVector(db.data, db.cols) = View(dy).colwise().sum();
  }

  void ReluBackwardBiasGrad(Tensor y, Tensor dy, Tensor db) override {
    auto Y = View(y).array();
    auto DY = View(dy).array();
    DY = (Y > 0.0f).select(DY, 0.0f);
    BiasGrad(dy, db);
  }

  void Im2Col(Tensor x, const ConvShape& sh, Tensor cols) override {
    const int64_t oh = sh.out_height(), ow = sh.out_width(), k = sh.kernel, c = sh.channels;
    for (int64_t n = 0; n < sh.batch; ++n) {
      const float* img = x.data + n * x.cols;
      for (int64_t y = 0; y < oh; ++y) {
        for (int64_t xo = 0; xo < ow; ++xo) {
          float* row = cols.data + ((n * oh + y) * ow + xo) * sh.patch();
          for (int64_t r = 0; r < k; ++r) {
            const int64_t iy = y + r - sh.pad;
            for (int64_t s = 0; s < k; ++s) {
              const int64_t ix = xo + s - sh.pad;
              float* dst = row + (r * k + s) * c;
              if (iy < 0 || iy >= sh.height || ix < 0 || ix >= sh.width) {
                std::fill(dst, dst + c, 0.0f);
              } else {
                std::memcpy(dst, img + (iy * sh.width + ix) * c, c * sizeof(float));
              }
            }
          }
        }
      }
    }
  }

  void Col2Im(Tensor cols, const ConvShape& sh, Tensor dx) override {
    const int64_t oh = sh.out_height(), ow = sh.out_width(), k = sh.kernel, c = sh.channels;
    std::fill(dx.data, dx.data + sh.batch * dx.cols, 0.0f);
    for (int64_t n = 0; n < sh.batch; ++n) {
      float* img = dx.data + n * dx.cols;
      for (int64_t y = 0; y < oh; ++y) {
        for (int64_t xo = 0; xo < ow; ++xo) {
          const float* row = cols.data + ((n * oh + y) * ow + xo) * sh.patch();
          for (int64_t r = 0; r < k; ++r) {
            const int64_t iy = y + r - sh.pad;
            if (iy < 0 || iy >= sh.height) continue;
            for (int64_t s = 0; s < k; ++s) {
              const int64_t ix = xo + s - sh.pad;
              if (ix < 0 || ix >= sh.width) continue;
              const float* src = row + (r * k + s) * c;
              float* dst = img + (iy * sh.width + ix) * c;
              for (int64_t ch = 0; ch < c; ++ch) dst[ch] += src[ch];
            }
          }
        }
      }
    }
  }

  void MaxPool2x2(Tensor x, const ConvShape& sh, Tensor y, Tensor mask) override {
    const int64_t h2 = sh.height / 2, w2 = sh.width / 2, c = sh.channels;
    std::fill(mask.data, mask.data + sh.batch * mask.cols, 0.0f);
    for (int64_t n = 0; n < sh.batch; ++n) {
      const float* img = x.data + n * x.cols;
      float* m = mask.data + n * mask.cols;
      float* out = y.data + n * y.cols;
      for (int64_t py = 0; py < h2; ++py) {
        for (int64_t px = 0; px < w2; ++px) {
          for (int64_t ch = 0; ch < c; ++ch) {
            int64_t best = ((2 * py) * sh.width + 2 * px) * c + ch;
            for (int64_t d = 1; d < 4; ++d) {
              int64_t at = ((2 * py + d / 2) * sh.width + 2 * px + d % 2) * c + ch;
              if (img[at] > img[best]) best = at;
            }
            out[(py * w2 + px) * c + ch] = img[best];
            m[best] = 1.0f;
          }
        }
      }
    }
  }

  void MaxPool2x2Backward(Tensor dy, Tensor mask, const ConvShape& sh, Tensor dx) override {
    const int64_t w2 = sh.width / 2, c = sh.channels;
    for (int64_t n = 0; n < sh.batch; ++n) {
      const float* g = dy.data + n * dy.cols;
      const float* m = mask.data + n * mask.cols;
      float* out = dx.data + n * dx.cols;
      for (int64_t iy = 0; iy < sh.height; ++iy) {
        for (int64_t ix = 0; ix < sh.width; ++ix) {
          for (int64_t ch = 0; ch < c; ++ch) {
            const int64_t at = (iy * sh.width + ix) * c + ch;
            out[at] = m[at] * g[((iy / 2) * w2 + ix / 2) * c + ch];
          }
        }
      }
    }
  }

  void EmbeddingGather(Tensor table, const int64_t* ids, Tensor out) override {
    for (int64_t i = 0; i < out.rows; ++i) {
      std::memcpy(out.data + i * out.cols, table.data + ids[i] * table.cols,
                  out.cols * sizeof(float));
    }
  }

  void EmbeddingScatterAdd(Tensor dout, const int64_t* ids, Tensor dtable) override {
    for (int64_t i = 0; i < dout.rows; ++i) {
      RowVector(dtable.data + ids[i] * dtable.cols, dtable.cols) +=
          RowVector(dout.data + i * dout.cols, dout.cols);
    }
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
