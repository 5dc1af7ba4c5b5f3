// Deterministic initial values for table entries.
//
// The value at (table, index) is a pure function of the InitConfig (type,
// parameters, seed), the table's name and the index, computed with a counter-
// based generator. A table therefore starts the same however it is split over
// shards, and a one-process baseline can reproduce a PS run's initial model.
// Sparse rows use index = key * dim + j.
//
// Pure functions; safe from any thread.
#ifndef TESSERA_COMMON_INITIALIZER_H_
#define TESSERA_COMMON_INITIALIZER_H_

#include <cstdint>
#include <string>

#include "absl/types/span.h"
#include "common/config.h"

namespace tessera {

class Initializer {
 public:
  Initializer(const InitConfig& config, const std::string& table_name);

  // Fills out[i] with the value of index first + i.
  void Fill(uint64_t first, absl::Span<float> out) const;
  // Sparse rows in one call: row k (dim floats at rows + k * stride) gets the
  // values of indices keys[k] * dim + j. Same values as Fill, row by row.
  void FillRows(const uint64_t* keys, size_t n, uint32_t dim, float* rows, size_t stride) const;
  float ValueAt(uint64_t index) const;

 private:

  float UniformAt(uint64_t index) const;  // ValueAt for kUniform

  // const after construction
  InitConfig config_;
  InitType kind_;  // config_.type (ValueAt runs per value)
  uint64_t stream_;  // seed mixed with the table name
};

}  // namespace tessera

#endif  // TESSERA_COMMON_INITIALIZER_H_
