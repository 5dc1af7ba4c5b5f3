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
#include "absl/status/status.h"
#include "worker/dataset.h"
#include "worker/example_stream.h"
#include "worker/parameter_set.h"

namespace tessera {

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

  // Accuracy and mean loss of `params` on every example of `data` (read
  // from its start), or of a data set in memory.
  absl::Status Evaluate(const ParameterSet& params, ExampleStream& data, double* accuracy,
                        double* loss);
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
// REQUIRES: a validated config whose type is softmax, mlp or cnn.
std::unique_ptr<Model> MakeModel(const ModelConfig& config, Backend* backend, uint32_t max_batch);

// The sparse rows one batch of a click log touches. Keys are de-duplicated:
// every (example, field) id becomes key CtrKey(field, id), `keys` holds each
// key once (in first-seen order) and slots[i * fields + f] the row of
// example i's field f among them. The embedding and the wide table are
// keyed alike, so one key list serves both.
struct CtrRows {
  std::vector<uint64_t> keys;
  std::vector<int64_t> slots;  // n * fields
  // From every example of `batch`, in order.
  void Build(const Dataset& batch);
};

// The click-through-rate model of model.type ctr ("wide & deep"): each of F
// fields' ids looks up a row of the sparse table "embedding" (dim d); the F
// rows and the dense features go through an MLP (ReLU, `layers` hidden
// widths) to 2 logits; each id's row of the sparse table "wide" (dim 1) is
// added to the click logit. The loss is the softmax cross-entropy over
// {no click, click}, i.e. the logistic loss of logit[1] - logit[0].
//
// The rows travel as the batch's unique rows (CtrRows): the backend gathers
// them per example (EmbeddingGather) and sums the gradients of repeated keys
// back into one row each (EmbeddingScatterAdd). The first layer's weight is
// one table ((dense + F*d) x width) applied as two products, so the inputs
// are never concatenated.
//
//   CtrModel model(config.model, backend, batch);
//   loss = model.TrainStep(params, batch, &grads, &row_grads, &correct);
//
// Threading: one thread; every backend buffer is allocated at construction.
class CtrModel {
 public:
  struct Batch {
    uint32_t n = 0;
    const float* dense = nullptr;     // n * dense_features
    const int32_t* labels = nullptr;  // n labels in {0, 1}
    const CtrRows* rows = nullptr;
    const float* embedding = nullptr;  // rows->keys.size() * embedding_dim: the pulled rows
    const float* wide = nullptr;       // rows->keys.size(): the pulled rows

    // Every example of `examples` (labels included), with `rows` built from
    // them and the pulled values of those rows.
    static Batch Of(const Dataset& examples, const CtrRows& rows, const float* embedding,
                    const float* wide) {
      return Batch{static_cast<uint32_t>(examples.size()), examples.x.data(), examples.y.data(),
                   &rows, embedding, wide};
    }
  };
  // REQUIRES: a validated ctr config; batches of at most max_batch.
  CtrModel(const ModelConfig& config, Backend* backend, uint32_t max_batch);

  // Forward and backward; returns the mean loss. *grads: the dense tables'
  // gradients in JobConfig::Tables() order (the two sparse entries empty);
  // *embedding_grad / *wide_grad: d(mean loss)/d(row) of each unique row.
  // `params_version` as Model::TrainStep.
  float TrainStep(const ParameterSet& params, const Batch& batch, ParameterSet* grads,
                  std::vector<float>* embedding_grad, std::vector<float>* wide_grad,
                  int64_t* correct, uint64_t params_version = 0);
  // Click probabilities of the batch's examples into p[0..n).
  void Predict(const ParameterSet& params, const Batch& batch, float* p);

  // The dense tables' sizes in Tables() order, 0 for the two sparse ones.
  std::vector<size_t> TableSizes() const;

  ~CtrModel();

 private:
  class Impl;  // model.cc: the backend buffers and the layers
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_MODEL_H_
