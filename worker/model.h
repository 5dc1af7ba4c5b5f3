// Mlp: a multi-layer perceptron (dense layers, ReLU between them, softmax
// cross-entropy at the end), written once against Backend. Softmax
// regression is the MLP with no hidden layer.
//
// Parameters are the job's tables in JobConfig::Tables() order:
// fc{i}.weight (inputs x outputs, row-major) and fc{i}.bias, as flat host
// vectors; gradients come back in the same shape.
//
//   Mlp model(config.model.layers, backend.get(), batch);
//   float loss = model.TrainStep(params, x, y, n, &grads, &correct);
//
// Threading: one thread; it owns the backend buffers it allocated.
#ifndef TESSERA_WORKER_MODEL_H_
#define TESSERA_WORKER_MODEL_H_

#include <cstdint>
#include <vector>

#include "worker/backend.h"
#include "worker/dataset.h"

namespace tessera {

// One flat host vector per table, in JobConfig::Tables() order.
using ParameterSet = std::vector<std::vector<float>>;

class Mlp {
 public:
  // layers: widths, inputs first, classes last. Allocates every buffer for
  // batches of up to max_batch rows now, none later.
  Mlp(std::vector<uint32_t> layers, Backend* backend, uint32_t max_batch);

  // Forward and backward on n examples (x: n x inputs, y: n labels).
  // Writes d(mean loss)/d(parameter) into *grads (resized as needed) and
  // returns the mean loss; adds correct predictions to *correct.
  // REQUIRES: n <= max_batch; params shaped as described above.
  float TrainStep(const ParameterSet& params, const float* x, const int32_t* y, uint32_t n,
                  ParameterSet* grads, int64_t* correct);

  // Accuracy and mean loss of `params` on the whole data set.
  void Evaluate(const ParameterSet& params, const Dataset& data, double* accuracy, double* loss);

  // Shapes of the parameter tables, for callers that build ParameterSets.
  std::vector<size_t> TableSizes() const;

 private:
  void Upload(const ParameterSet& params);
  // Runs the layers on n rows already in acts_[0]; returns the logits tensor.
  Tensor Forward(uint32_t n);

  const std::vector<uint32_t> layers_;
  Backend* const backend_;
  const uint32_t max_batch_;
  std::vector<Tensor> weights_, biases_;  // backend copies of the parameters
  std::vector<Tensor> weight_grads_, bias_grads_;
  std::vector<Tensor> acts_;    // acts_[0] input, acts_[i+1] output of layer i
  std::vector<Tensor> deltas_;  // d loss / d acts_[i+1]
  std::vector<int32_t> labels_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_MODEL_H_
