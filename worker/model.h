// Models, written once against Backend: an MLP (dense layers, ReLU between
// them; softmax regression is the MLP with no hidden layer) and a CNN (conv
// 5x5 + ReLU + 2x2 max-pool blocks, then a dense head). Both end in softmax
// cross-entropy.
//
// Parameters are the job's tables in JobConfig::Tables() order (conv{i}.weight
// as (k*k*in) x out, conv{i}.bias, fc{i}.weight as in x out, fc{i}.bias), as
// flat host vectors; gradients come back in the same shape.
//
//   auto model = MakeModel(config.model, backend.get(), batch);
//   float loss = model->TrainStep(params, x, y, n, &grads, &correct);
//
// Threading: one thread; a model owns the backend buffers it allocated, all
// of them allocated at construction (none per step).
#ifndef TESSERA_WORKER_MODEL_H_
#define TESSERA_WORKER_MODEL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "common/config.h"
#include "worker/backend.h"
#include "worker/dataset.h"

namespace tessera {

// One flat host vector per table, in JobConfig::Tables() order.
using ParameterSet = std::vector<std::vector<float>>;

class Model {
 public:
  virtual ~Model() = default;

  // Forward and backward on n examples (x: n x inputs, y: n labels).
  // Writes d(mean loss)/d(parameter) into *grads (resized as needed) and
  // returns the mean loss; adds correct predictions to *correct.
  // REQUIRES: n <= max_batch; params shaped as TableSizes().
  // `params_version` (non-zero) names the values: when it equals the
  // previous step's, they are already on the backend and are not copied
  // again (SSP steps that reuse the cache). 0: always copy.
  float TrainStep(const ParameterSet& params, const float* x, const int32_t* y, uint32_t n,
                  ParameterSet* grads, int64_t* correct, uint64_t params_version = 0);

  // Accuracy and mean loss of `params` on the whole data set.
  void Evaluate(const ParameterSet& params, const Dataset& data, double* accuracy, double* loss);

  // Floats per parameter table, in table order.
  virtual std::vector<size_t> TableSizes() const = 0;

 protected:
  Model(Backend* backend, uint32_t max_batch, uint32_t inputs, uint32_t classes);

  virtual void Upload(const ParameterSet& params) = 0;
  // Runs the model on rows [0, n) of input_; returns the logits.
  virtual Tensor Forward(uint32_t n) = 0;
  // Back-propagates dlogits (n rows) into the backend's gradient buffers.
  virtual void Backward(uint32_t n, Tensor dlogits) = 0;
  virtual void DownloadGrads(ParameterSet* grads) = 0;

  Backend* const backend_;
  const uint32_t max_batch_;
  Tensor input_;                   // max_batch x inputs
  Tensor dlogits_;                 // max_batch x classes
  uint64_t uploaded_version_ = 0;  // of the parameters on the backend; 0: unknown
};

// Builds the model named by config.type (softmax, mlp, cnn).
// REQUIRES: a validated config whose type is not "tables".
std::unique_ptr<Model> MakeModel(const ModelConfig& config, Backend* backend, uint32_t max_batch);

}  // namespace tessera

#endif  // TESSERA_WORKER_MODEL_H_
