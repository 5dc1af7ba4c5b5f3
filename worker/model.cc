#include "worker/model.h"

#include <algorithm>

namespace tessera {

Mlp::Mlp(std::vector<uint32_t> layers, Backend* backend, uint32_t max_batch)
    : layers_(std::move(layers)), backend_(backend), max_batch_(max_batch) {
  acts_.push_back(backend_->Allocate(max_batch_, layers_[0]));
  for (size_t i = 0; i + 1 < layers_.size(); ++i) {
    weights_.push_back(backend_->Allocate(layers_[i], layers_[i + 1]));
    biases_.push_back(backend_->Allocate(1, layers_[i + 1]));
    weight_grads_.push_back(backend_->Allocate(layers_[i], layers_[i + 1]));
    bias_grads_.push_back(backend_->Allocate(1, layers_[i + 1]));
    acts_.push_back(backend_->Allocate(max_batch_, layers_[i + 1]));
    deltas_.push_back(backend_->Allocate(max_batch_, layers_[i + 1]));
  }
}

std::vector<size_t> Mlp::TableSizes() const {
  std::vector<size_t> sizes;
  for (size_t i = 0; i + 1 < layers_.size(); ++i) {
    sizes.push_back(size_t(layers_[i]) * layers_[i + 1]);
    sizes.push_back(layers_[i + 1]);
  }
  return sizes;
}

void Mlp::Upload(const ParameterSet& params) {
  for (size_t i = 0; i < weights_.size(); ++i) {
    backend_->CopyIn(params[2 * i], weights_[i]);
    backend_->CopyIn(params[2 * i + 1], biases_[i]);
  }
}

Tensor Mlp::Forward(uint32_t n) {
  const size_t last = weights_.size() - 1;
  for (size_t i = 0; i < weights_.size(); ++i) {
    Tensor out = acts_[i + 1].Rows(0, n);
    backend_->Gemm(false, false, 1.0f, acts_[i].Rows(0, n), weights_[i], 0.0f, out);
    backend_->BiasActivation(out, biases_[i], /*relu=*/i != last);
  }
  return acts_.back().Rows(0, n);
}

float Mlp::TrainStep(const ParameterSet& params, const float* x, const int32_t* y, uint32_t n,
                     ParameterSet* grads, int64_t* correct) {
  Upload(params);
  backend_->CopyIn(absl::MakeConstSpan(x, size_t(n) * layers_[0]), acts_[0].Rows(0, n));
  Tensor logits = Forward(n);
  const size_t last = weights_.size() - 1;
  float loss = backend_->SoftmaxCrossEntropy(logits, y, deltas_[last].Rows(0, n), correct);
  for (size_t i = weights_.size(); i-- > 0;) {
    Tensor delta = deltas_[i].Rows(0, n);
    // dW = act_in^T * delta; db = column sums of delta.
    backend_->Gemm(true, false, 1.0f, acts_[i].Rows(0, n), delta, 0.0f, weight_grads_[i]);
    backend_->BiasGrad(delta, bias_grads_[i]);
    if (i > 0) {
      Tensor below = deltas_[i - 1].Rows(0, n);
      backend_->Gemm(false, true, 1.0f, delta, weights_[i], 0.0f, below);
      backend_->ReluBackward(acts_[i].Rows(0, n), below);
    }
  }
  grads->resize(2 * weights_.size());
  for (size_t i = 0; i < weights_.size(); ++i) {
    (*grads)[2 * i].resize(weight_grads_[i].size());
    (*grads)[2 * i + 1].resize(bias_grads_[i].size());
    backend_->CopyOut(weight_grads_[i], absl::MakeSpan((*grads)[2 * i]));
    backend_->CopyOut(bias_grads_[i], absl::MakeSpan((*grads)[2 * i + 1]));
  }
  return loss;
}

void Mlp::Evaluate(const ParameterSet& params, const Dataset& data, double* accuracy,
                   double* loss) {
  Upload(params);
  int64_t correct = 0;
  double total_loss = 0.0;
  const size_t last = weights_.size() - 1;
  for (size_t first = 0; first < data.size(); first += max_batch_) {
    const uint32_t n = static_cast<uint32_t>(std::min<size_t>(max_batch_, data.size() - first));
    backend_->CopyIn(absl::MakeConstSpan(data.example(first), size_t(n) * data.features),
                     acts_[0].Rows(0, n));
    Tensor logits = Forward(n);
    total_loss += double(backend_->SoftmaxCrossEntropy(logits, data.y.data() + first,
                                                       deltas_[last].Rows(0, n), &correct)) *
                  n;
  }
  *accuracy = data.size() ? double(correct) / data.size() : 0.0;
  *loss = data.size() ? total_loss / data.size() : 0.0;
}

}  // namespace tessera
