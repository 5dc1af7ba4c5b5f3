// PushEncoder: the codecs a worker's values travel in (worker.compression),
// per table and direction, and the error-feedback residual of its lossy push
// codecs (topk, onebit).
//
// Error feedback (Seide et al.; Karimireddy et al. 2019, EF-signSGD): what a
// lossy codec did not send of a clock's gradient is kept and added to the
// next clock's, so over N clocks the sum sent equals the sum of the
// gradients less the residual left now (tested to 1e-6). The residual of
// clock c is added exactly once: encoding clock c again (a step retried
// after a reconnect) starts from the residual as it stood before clock c.
// It lives in this process: a restarted worker starts with a zero residual,
// so what its predecessor had not yet sent is lost (at most one clock's
// worth of unsent gradient per table, as in DGC and BytePS).
//
// Which codec: a slice of fewer than compression.min_bytes (as float32)
// and every slice of the first compression.warmup_steps clocks travel as
// float32; sparse rows take the table's codec only when it is fixed-width
// (bf16, fp16), since top-k and sign codecs are for dense gradients.
//
// Threading: Encode from one thread at a time (the client's calling
// thread); the codec choices are const and any thread may ask them.
#ifndef TESSERA_WORKER_PUSH_ENCODER_H_
#define TESSERA_WORKER_PUSH_ENCODER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "common/codec.h"
#include "common/config.h"
#include "proto/tessera.pb.h"
#include "worker/ps_client.h"

namespace tessera {

class PushEncoder {
 public:
  // `dense_sizes`: by table index (JobConfig::Tables() order), 0 for sparse.
  PushEncoder(const CompressionConfig& config, const std::vector<std::string>& table_names,
              const std::vector<uint64_t>& dense_sizes);

  // Encodes values [offset, offset + values.size()) of dense table `table`'s
  // gradient for `clock` into *out (error feedback for lossy codecs).
  void Encode(int64_t clock, size_t table, uint64_t offset, absl::Span<const float> values,
              v1::Payload* out);
  // The codec a pull of `length` values of `table` at `clock` is answered in.
  v1::Codec PullCodec(int64_t clock, size_t table, uint64_t length) const;
  // The fixed-width codec sparse rows of `table` travel in (push or pull).
  const Codec& RowCodec(size_t table, bool push) const;
  // Table `table`'s residual now (all zeros for lossless codecs).
  absl::Span<const float> residual(size_t table) const { return tables_[table].residual; }
  // Whether any table's pushes lose information (then a residual is kept).
  bool lossy() const;

  // Values moved: `bytes` as they travelled, `values` floats of them.
  // Any thread (relaxed atomics).
  void Count(bool push, uint64_t bytes, uint64_t values) const;
  PsClient::WireTraffic traffic() const;

 private:
  struct Table {
    std::unique_ptr<Codec> push;
    v1::Codec pull = v1::FLOAT32;
    bool feedback = false;           // push codec is lossy: keep a residual
    std::vector<float> residual;     // now
    std::vector<float> before;       // as it stood before `clock`
    int64_t clock = -1;              // the clock `before` is for
    std::vector<float> scratch, sent;
  };
  bool Uncompressed(int64_t clock, uint64_t length) const;

  const CompressionConfig config_;
  std::vector<Table> tables_;
  mutable std::atomic<uint64_t> push_bytes_{0}, push_raw_{0}, pull_bytes_{0}, pull_raw_{0};
};

}  // namespace tessera

#endif  // TESSERA_WORKER_PUSH_ENCODER_H_
