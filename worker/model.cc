#include "worker/model.h"

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_map.h"
#include "common/status.h"

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

absl::Status Model::Evaluate(const ParameterSet& params, ExampleStream& data, double* accuracy,
                             double* loss) {
  Upload(params);
  uploaded_version_ = 0;
  int64_t correct = 0, seen = 0;
  double total_loss = 0.0;
  Dataset part;
  TESSERA_RETURN_IF_ERROR(data.Seek(0, 0));
  while (true) {
    TESSERA_RETURN_IF_ERROR(data.Next(max_batch_, &part));
    const uint32_t n = static_cast<uint32_t>(part.size());
    if (n == 0) break;
    backend_->CopyIn(absl::MakeConstSpan(part.x.data(), size_t(n) * part.features),
                     input_.Rows(0, n));
    Tensor logits = Forward(n);
    total_loss += double(backend_->SoftmaxCrossEntropy(logits, part.y.data(), dlogits_.Rows(0, n),
                                                       &correct)) *
                  n;
    seen += n;
  }
  *accuracy = seen ? double(correct) / seen : 0.0;
  *loss = seen ? total_loss / seen : 0.0;
  return absl::OkStatus();
}

void Model::Evaluate(const ParameterSet& params, const Dataset& data, double* accuracy,
                     double* loss) {
  // A stream over memory does not fail.
  Evaluate(params, *StreamOf(&data, 0, 1, 0, /*shuffle=*/false), accuracy, loss).IgnoreError();
}

void CtrRows::Build(const Dataset& batch) {
  // Reused between batches: the map keeps its buckets.
  thread_local absl::flat_hash_map<uint64_t, int64_t> row_of;
  row_of.clear();
  keys.clear();
  const size_t n = batch.size();
  slots.resize(n * batch.fields);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t* ids = batch.example_ids(i);
    for (uint32_t f = 0; f < batch.fields; ++f) {
      const uint64_t key = CtrKey(f, ids[f]);
      auto [it, fresh] = row_of.try_emplace(key, static_cast<int64_t>(keys.size()));
      if (fresh) keys.push_back(key);
      slots[i * batch.fields + f] = it->second;
    }
  }
}

class CtrModel::Impl {
 public:
  Impl(const ModelConfig& config, Backend* backend, uint32_t max_batch)
      : backend_(backend),
        fields_(config.fields),
        dim_(config.embedding_dim),
        dense_(config.dense_features),
        width_(config.layers.front()),
        max_rows_(int64_t{max_batch} * config.fields) {
    std::vector<uint32_t> rest(config.layers.begin(), config.layers.end());
    rest.push_back(2);
    stack_ = std::make_unique<DenseStack>(rest, backend, max_batch);
    const int64_t in = int64_t{dense_} + int64_t{fields_} * dim_;
    w0_ = backend->Allocate(in, width_);
    b0_ = backend->Allocate(1, width_);
    dw0_ = backend->Allocate(in, width_);
    db0_ = backend->Allocate(1, width_);
    x_ = backend->Allocate(max_batch, std::max<int64_t>(dense_, 1));
    h_ = backend->Allocate(max_batch, width_);
    dh_ = backend->Allocate(max_batch, width_);
    rows_ = backend->Allocate(max_rows_, dim_);
    drows_ = backend->Allocate(max_rows_, dim_);
    wide_ = backend->Allocate(max_rows_, 1);
    dwide_ = backend->Allocate(max_rows_, 1);
    gathered_ = backend->Allocate(max_rows_, dim_);
    dgathered_ = backend->Allocate(max_rows_, dim_);
    gathered_wide_ = backend->Allocate(max_rows_, 1);
    dgathered_wide_ = backend->Allocate(max_rows_, 1);
    dlogits_ = backend->Allocate(max_batch, 2);
    // Adds the sum of an example's wide rows to its click logit (column 1).
    to_click_ = backend->Allocate(fields_, 2);
    std::vector<float> m(size_t(fields_) * 2, 0.0f);
    for (uint32_t f = 0; f < fields_; ++f) m[size_t(f) * 2 + 1] = 1.0f;
    backend->CopyIn(m, to_click_);
    zeros_.assign(size_t(max_rows_) * dim_, 0.0f);
  }

  std::vector<size_t> TableSizes() const {
    std::vector<size_t> sizes = {0, 0, size_t(w0_.size()), size_t(b0_.size())};
    stack_->TableSizes(&sizes);
    return sizes;
  }

  void Upload(const ParameterSet& params, uint64_t version) {
    if (version != 0 && version == uploaded_version_) return;
    backend_->CopyIn(params[2], w0_);
    backend_->CopyIn(params[3], b0_);
    stack_->Upload(params, 4);
    uploaded_version_ = version;
  }

  Tensor Forward(const Batch& batch) {
    const uint32_t n = batch.n;
    const int64_t unique = static_cast<int64_t>(batch.rows->keys.size());
    const int64_t slots = int64_t{n} * fields_;
    const int64_t* ids = batch.rows->slots.data();
    backend_->CopyIn(absl::MakeConstSpan(batch.embedding, unique * dim_), rows_.Rows(0, unique));
    backend_->CopyIn(absl::MakeConstSpan(batch.wide, unique), wide_.Rows(0, unique));
    backend_->EmbeddingGather(rows_.Rows(0, unique), ids, gathered_.Rows(0, slots));
    backend_->EmbeddingGather(wide_.Rows(0, unique), ids, gathered_wide_.Rows(0, slots));
    // h = relu([dense, embeddings] . w0 + b0) as two products into h.
    Tensor h = h_.Rows(0, n);
    if (dense_ > 0) {
      backend_->CopyIn(absl::MakeConstSpan(batch.dense, size_t(n) * dense_), x_.Rows(0, n));
      backend_->Gemm(false, false, 1.0f, x_.Rows(0, n), W0Dense(w0_), 0.0f, h);
    }
    backend_->Gemm(false, false, 1.0f, Embedded(gathered_, n), W0Embedded(w0_),
                   dense_ > 0 ? 1.0f : 0.0f, h);
    backend_->BiasActivation(h, b0_, /*relu=*/true);
    Tensor logits = stack_->Forward(h, n);
    backend_->Gemm(false, false, 1.0f, WidePerExample(gathered_wide_, n), to_click_, 1.0f, logits);
    return logits;
  }

  float TrainStep(const ParameterSet& params, const Batch& batch, ParameterSet* grads,
                  std::vector<float>* embedding_grad, std::vector<float>* wide_grad,
                  int64_t* correct, uint64_t version) {
    Upload(params, version);
    const uint32_t n = batch.n;
    const int64_t unique = static_cast<int64_t>(batch.rows->keys.size());
    const int64_t slots = int64_t{n} * fields_;
    const int64_t* ids = batch.rows->slots.data();
    Tensor logits = Forward(batch);
    Tensor dlogits = dlogits_.Rows(0, n);
    const float loss = backend_->SoftmaxCrossEntropy(logits, batch.labels, dlogits, correct);
    // The MLP, down to d(loss)/d(h) (through the first layer's ReLU).
    Tensor h = h_.Rows(0, n), dh = dh_.Rows(0, n);
    stack_->Backward(h, n, dlogits, &dh);
    backend_->ReluBackwardBiasGrad(h, dh, db0_);
    if (dense_ > 0) backend_->Gemm(true, false, 1.0f, x_.Rows(0, n), dh, 0.0f, W0Dense(dw0_));
    backend_->Gemm(true, false, 1.0f, Embedded(gathered_, n), dh, 0.0f, W0Embedded(dw0_));
    // Embeddings: per example, then summed into each unique row.
    backend_->Gemm(false, true, 1.0f, dh, W0Embedded(w0_), 0.0f, Embedded(dgathered_, n));
    backend_->CopyIn(absl::MakeConstSpan(zeros_.data(), unique * dim_), drows_.Rows(0, unique));
    backend_->EmbeddingScatterAdd(dgathered_.Rows(0, slots), ids, drows_.Rows(0, unique));
    // Wide rows: each gets its example's d(loss)/d(click logit).
    backend_->Gemm(false, true, 1.0f, dlogits, to_click_, 0.0f,
                   WidePerExample(dgathered_wide_, n));
    backend_->CopyIn(absl::MakeConstSpan(zeros_.data(), unique), dwide_.Rows(0, unique));
    backend_->EmbeddingScatterAdd(dgathered_wide_.Rows(0, slots), ids, dwide_.Rows(0, unique));
    // Download.
    const std::vector<size_t> sizes = TableSizes();
    grads->resize(sizes.size());
    (*grads)[0].clear();
    (*grads)[1].clear();
    (*grads)[2].resize(dw0_.size());
    (*grads)[3].resize(db0_.size());
    backend_->CopyOut(dw0_, absl::MakeSpan((*grads)[2]));
    backend_->CopyOut(db0_, absl::MakeSpan((*grads)[3]));
    stack_->Download(grads, 4);
    embedding_grad->resize(size_t(unique) * dim_);
    wide_grad->resize(unique);
    backend_->CopyOut(drows_.Rows(0, unique), absl::MakeSpan(*embedding_grad));
    backend_->CopyOut(dwide_.Rows(0, unique), absl::MakeSpan(*wide_grad));
    backend_->Synchronize();
    return loss;
  }

  void Predict(const ParameterSet& params, const Batch& batch, float* p) {
    Upload(params, 0);
    uploaded_version_ = 0;
    Tensor logits = Forward(batch);
    std::vector<float> host(size_t(batch.n) * 2);
    backend_->CopyOut(logits, absl::MakeSpan(host));
    backend_->Synchronize();
    for (uint32_t i = 0; i < batch.n; ++i) {
      p[i] = 1.0f / (1.0f + std::exp(host[2 * i] - host[2 * i + 1]));
    }
  }

 private:
  // Views. w0 is (dense + F*d) x width: the dense features' rows first.
  Tensor W0Dense(Tensor w) const { return {w.data, dense_, width_}; }
  Tensor W0Embedded(Tensor w) const {
    return {w.data + int64_t{dense_} * width_, int64_t{fields_} * dim_, width_};
  }
  // n*F gathered rows seen as n examples of F*d (or F) values.
  Tensor Embedded(Tensor t, uint32_t n) const { return {t.data, n, int64_t{fields_} * dim_}; }
  Tensor WidePerExample(Tensor t, uint32_t n) const { return {t.data, n, fields_}; }

  Backend* const backend_;
  const uint32_t fields_, dim_, dense_, width_;
  const int64_t max_rows_;
  std::unique_ptr<DenseStack> stack_;  // hidden layers after the first, then the 2 logits
  Tensor w0_, b0_, dw0_, db0_, x_, h_, dh_;
  Tensor rows_, drows_, wide_, dwide_, gathered_, dgathered_, gathered_wide_, dgathered_wide_;
  Tensor dlogits_, to_click_;
  std::vector<float> zeros_;
  uint64_t uploaded_version_ = 0;
};

CtrModel::CtrModel(const ModelConfig& config, Backend* backend, uint32_t max_batch)
    : impl_(std::make_unique<Impl>(config, backend, max_batch)) {}
CtrModel::~CtrModel() = default;

float CtrModel::TrainStep(const ParameterSet& params, const Batch& batch, ParameterSet* grads,
                          std::vector<float>* embedding_grad, std::vector<float>* wide_grad,
                          int64_t* correct, uint64_t params_version) {
  return impl_->TrainStep(params, batch, grads, embedding_grad, wide_grad, correct,
                          params_version);
}

void CtrModel::Predict(const ParameterSet& params, const Batch& batch, float* p) {
  impl_->Predict(params, batch, p);
}

std::vector<size_t> CtrModel::TableSizes() const { return impl_->TableSizes(); }

std::unique_ptr<Model> MakeModel(const ModelConfig& config, Backend* backend, uint32_t max_batch) {
  if (config.type == ModelType::kCnn) return std::make_unique<Cnn>(config, backend, max_batch);
  return std::make_unique<Mlp>(config.layers, backend, max_batch);
}

}  // namespace tessera
