// ParameterSet: a model's dense tables as flat host vectors, one per table in
// JobConfig::Tables() order (a sparse table's entry stays empty). What a
// worker pulls, computes gradients into and pushes.
#ifndef TESSERA_WORKER_PARAMETER_SET_H_
#define TESSERA_WORKER_PARAMETER_SET_H_

#include <vector>

namespace tessera {

using ParameterSet = std::vector<std::vector<float>>;

}  // namespace tessera

#endif  // TESSERA_WORKER_PARAMETER_SET_H_
