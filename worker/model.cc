#include "worker/model.h"

#include <algorithm>
#include <cmath>

namespace tessera {
namespace {

// The same memory seen with another shape. REQUIRES: rows * cols fits.
Tensor Reshape(Tensor t, int64_t rows, int64_t cols) { return {t.data, rows, cols}; }

// Dense layers: widths[0] inputs -> ... -> widths.back() outputs, ReLU after
// every layer but the last. Its tables are two per layer, weight then bias.
class DenseStack {
 public:
  DenseStack(const std::vector<uint32_t>& widths, Backend* backend, uint32_t max_batch)
      : backend_(backend) {
    for (size_t i = 0; i + 1 < widths.size(); ++i) {
      Layer l;
      l.w = backend->Allocate(widths[i], widths[i + 1]);
      l.b = backend->Allocate(1, widths[i + 1]);
      l.dw = backend->Allocate(widths[i], widths[i + 1]);
      l.db = backend->Allocate(1, widths[i + 1]);
      l.out = backend->Allocate(max_batch, widths[i + 1]);
      l.delta = backend->Allocate(max_batch, widths[i + 1]);
      layers_.push_back(l);
    }
  }

  size_t num_tables() const { return 2 * layers_.size(); }
  void TableSizes(std::vector<size_t>* sizes) const {
    for (const Layer& l : layers_) {
      sizes->push_back(l.w.size());
      sizes->push_back(l.b.size());
    }
  }
  void Upload(const ParameterSet& params, size_t first_table) {
    for (size_t i = 0; i < layers_.size(); ++i) {
      backend_->CopyIn(params[first_table + 2 * i], layers_[i].w);
      backend_->CopyIn(params[first_table + 2 * i + 1], layers_[i].b);
    }
  }
  void Download(ParameterSet* grads, size_t first_table) {
    for (size_t i = 0; i < layers_.size(); ++i) {
      auto& gw = (*grads)[first_table + 2 * i];
      auto& gb = (*grads)[first_table + 2 * i + 1];
      gw.resize(layers_[i].dw.size());
      gb.resize(layers_[i].db.size());
      backend_->CopyOut(layers_[i].dw, absl::MakeSpan(gw));
      backend_->CopyOut(layers_[i].db, absl::MakeSpan(gb));
    }
  }
  // Returns the logits (n rows).
  Tensor Forward(Tensor in, uint32_t n) {
    for (size_t i = 0; i < layers_.size(); ++i) {
      Tensor out = layers_[i].out.Rows(0, n);
      backend_->Gemm(false, false, 1.0f, i == 0 ? in.Rows(0, n) : layers_[i - 1].out.Rows(0, n),
                     layers_[i].w, 0.0f, out);
      backend_->BiasActivation(out, layers_[i].b, /*relu=*/i + 1 != layers_.size());
    }
    return layers_.back().out.Rows(0, n);
  }
  // dlogits (n rows) -> weight and bias gradients, and d(loss)/d(in) into
  // din when it is not null.
  void Backward(Tensor in, uint32_t n, Tensor dlogits, Tensor* din) {
    Tensor delta = dlogits;
    backend_->BiasGrad(delta, layers_.back().db);  // the logits have no ReLU
    for (size_t i = layers_.size(); i-- > 0;) {
      Tensor below_act = i == 0 ? in.Rows(0, n) : layers_[i - 1].out.Rows(0, n);
      backend_->Gemm(true, false, 1.0f, below_act, delta, 0.0f, layers_[i].dw);
      if (i == 0 && din == nullptr) break;
      Tensor below = i == 0 ? din->Rows(0, n) : layers_[i - 1].delta.Rows(0, n);
      backend_->Gemm(false, true, 1.0f, delta, layers_[i].w, 0.0f, below);
      // Back through the ReLU below, with that layer's bias gradient, in one pass.
      if (i > 0) backend_->ReluBackwardBiasGrad(below_act, below, layers_[i - 1].db);
      delta = below;
    }
  }

 private:
  struct Layer {
    Tensor w, b, dw, db, out, delta;
  };
  Backend* const backend_;
  std::vector<Layer> layers_;
};

class Mlp : public Model {
 public:
  Mlp(const std::vector<uint32_t>& layers, Backend* backend, uint32_t max_batch)
      : Model(backend, max_batch, layers.front(), layers.back()),
        stack_(layers, backend, max_batch) {}
  std::vector<size_t> TableSizes() const override {
    std::vector<size_t> sizes;
    stack_.TableSizes(&sizes);
    return sizes;
  }

 protected:
  void Upload(const ParameterSet& params) override { stack_.Upload(params, 0); }
  Tensor Forward(uint32_t n) override { return stack_.Forward(input_, n); }
  void Backward(uint32_t n, Tensor dlogits) override {
    stack_.Backward(input_, n, dlogits, nullptr);
  }
  void DownloadGrads(ParameterSet* grads) override {
    grads->resize(stack_.num_tables());
    stack_.Download(grads, 0);
  }

 private:
  DenseStack stack_;
};

// conv(k x k, pad k/2) + ReLU + 2x2 max-pool blocks on a square one-channel
// image, then a DenseStack head on the flattened (NHWC) features.
class Cnn : public Model {
 public:
  Cnn(const ModelConfig& config, Backend* backend, uint32_t max_batch)
      : Model(backend, max_batch, config.layers.front(), config.layers.back()) {
    int64_t side = static_cast<int64_t>(std::lround(std::sqrt(double(config.layers.front()))));
    int64_t channels = 1;
    for (uint32_t out_channels : config.conv_channels) {
      Conv c;
      c.shape = {max_batch, side, side, channels, config.kernel, config.kernel / 2};
      c.pooled_shape = {max_batch, side, side, out_channels, 0, 0};
      const int64_t pixels = side * side;  // stride 1, "same" padding
      c.w = backend->Allocate(c.shape.patch(), out_channels);
      c.b = backend->Allocate(1, out_channels);
      c.dw = backend->Allocate(c.shape.patch(), out_channels);
      c.db = backend->Allocate(1, out_channels);
      c.cols = backend->Allocate(max_batch * pixels, c.shape.patch());
      c.out = backend->Allocate(max_batch, pixels * out_channels);
      c.mask = backend->Allocate(max_batch, pixels * out_channels);
      c.dout = backend->Allocate(max_batch, pixels * out_channels);
      c.pooled = backend->Allocate(max_batch, pixels / 4 * out_channels);
      c.dpooled = backend->Allocate(max_batch, pixels / 4 * out_channels);
      convs_.push_back(c);
      side /= 2;
      channels = out_channels;
    }
    std::vector<uint32_t> head = {static_cast<uint32_t>(side * side * channels)};
    head.insert(head.end(), config.layers.begin() + 1, config.layers.end());
    head_ = std::make_unique<DenseStack>(head, backend, max_batch);
  }

  std::vector<size_t> TableSizes() const override {
    std::vector<size_t> sizes;
    for (const Conv& c : convs_) {
      sizes.push_back(c.w.size());
      sizes.push_back(c.b.size());
    }
    head_->TableSizes(&sizes);
    return sizes;
  }

 protected:
  void Upload(const ParameterSet& params) override {
    for (size_t i = 0; i < convs_.size(); ++i) {
      backend_->CopyIn(params[2 * i], convs_[i].w);
      backend_->CopyIn(params[2 * i + 1], convs_[i].b);
    }
    head_->Upload(params, 2 * convs_.size());
  }

  Tensor Forward(uint32_t n) override {
    Tensor in = input_;
    for (Conv& c : convs_) {
      Backend::ConvShape sh = c.shape;
      sh.batch = n;
      const int64_t rows = n * sh.out_height() * sh.out_width();
      backend_->Im2Col(in.Rows(0, n), sh, c.cols.Rows(0, rows));
      Tensor out = Reshape(c.out, rows, c.w.cols);
      backend_->Gemm(false, false, 1.0f, c.cols.Rows(0, rows), c.w, 0.0f, out);
      backend_->BiasActivation(out, c.b, /*relu=*/true);
      Backend::ConvShape pool = c.pooled_shape;
      pool.batch = n;
      backend_->MaxPool2x2(c.out.Rows(0, n), pool, c.pooled.Rows(0, n), c.mask.Rows(0, n));
      in = c.pooled;
    }
    return head_->Forward(in, n);
  }

  void Backward(uint32_t n, Tensor dlogits) override {
    Tensor dfeatures = convs_.back().dpooled;
    head_->Backward(convs_.back().pooled, n, dlogits, &dfeatures);
    for (size_t i = convs_.size(); i-- > 0;) {
      Conv& c = convs_[i];
      Backend::ConvShape sh = c.shape, pool = c.pooled_shape;
      sh.batch = pool.batch = n;
      const int64_t rows = n * sh.out_height() * sh.out_width();
      backend_->MaxPool2x2Backward(c.dpooled.Rows(0, n), c.mask.Rows(0, n), pool,
                                   c.dout.Rows(0, n));
      Tensor dout = Reshape(c.dout, rows, c.w.cols);
      backend_->ReluBackwardBiasGrad(Reshape(c.out, rows, c.w.cols), dout, c.db);
      backend_->Gemm(true, false, 1.0f, c.cols.Rows(0, rows), dout, 0.0f, c.dw);
      if (i == 0) break;  // no gradient for the input image
      // d(cols) reuses the cols buffer: its forward values are no longer needed.
      backend_->Gemm(false, true, 1.0f, dout, c.w, 0.0f, c.cols.Rows(0, rows));
      backend_->Col2Im(c.cols.Rows(0, rows), sh, convs_[i - 1].dpooled.Rows(0, n));
    }
  }

  void DownloadGrads(ParameterSet* grads) override {
    grads->resize(2 * convs_.size() + head_->num_tables());
    for (size_t i = 0; i < convs_.size(); ++i) {
      auto& gw = (*grads)[2 * i];
      auto& gb = (*grads)[2 * i + 1];
      gw.resize(convs_[i].dw.size());
      gb.resize(convs_[i].db.size());
      backend_->CopyOut(convs_[i].dw, absl::MakeSpan(gw));
      backend_->CopyOut(convs_[i].db, absl::MakeSpan(gb));
    }
    head_->Download(grads, 2 * convs_.size());
  }

 private:
  struct Conv {
    Backend::ConvShape shape;         // input of the convolution
    Backend::ConvShape pooled_shape;  // input of the pool (conv output)
    Tensor w, b, dw, db, cols, out, mask, dout, pooled, dpooled;
  };
  std::vector<Conv> convs_;
  std::unique_ptr<DenseStack> head_;
};

}  // namespace

Model::Model(Backend* backend, uint32_t max_batch, uint32_t inputs, uint32_t classes)
    : backend_(backend),
      max_batch_(max_batch),
      input_(backend->Allocate(max_batch, inputs)),
      dlogits_(backend->Allocate(max_batch, classes)) {}

float Model::TrainStep(const ParameterSet& params, const float* x, const int32_t* y, uint32_t n,
                       ParameterSet* grads, int64_t* correct, uint64_t params_version) {
  if (params_version == 0 || params_version != uploaded_version_) Upload(params);
  uploaded_version_ = params_version;
  backend_->CopyIn(absl::MakeConstSpan(x, size_t(n) * input_.cols), input_.Rows(0, n));
  Tensor logits = Forward(n);
  Tensor dlogits = dlogits_.Rows(0, n);
  float loss = backend_->SoftmaxCrossEntropy(logits, y, dlogits, correct);
  Backward(n, dlogits);
  DownloadGrads(grads);
  backend_->Synchronize();  // the gradients are on the host from here
  return loss;
}

void Model::Evaluate(const ParameterSet& params, const Dataset& data, double* accuracy,
                     double* loss) {
  Upload(params);
  uploaded_version_ = 0;
  int64_t correct = 0;
  double total_loss = 0.0;
  for (size_t first = 0; first < data.size(); first += max_batch_) {
    const uint32_t n = static_cast<uint32_t>(std::min<size_t>(max_batch_, data.size() - first));
    backend_->CopyIn(absl::MakeConstSpan(data.example(first), size_t(n) * data.features),
                     input_.Rows(0, n));
    Tensor logits = Forward(n);
    total_loss += double(backend_->SoftmaxCrossEntropy(logits, data.y.data() + first,
                                                       dlogits_.Rows(0, n), &correct)) *
                  n;
  }
  *accuracy = data.size() ? double(correct) / data.size() : 0.0;
  *loss = data.size() ? total_loss / data.size() : 0.0;
}

std::unique_ptr<Model> MakeModel(const ModelConfig& config, Backend* backend, uint32_t max_batch) {
  if (config.type == ModelType::kCnn) return std::make_unique<Cnn>(config, backend, max_batch);
  return std::make_unique<Mlp>(config.layers, backend, max_batch);
}

}  // namespace tessera
