// WireCodecs: the codecs a worker's values travel in (worker.compression),
// per table and direction, the error-feedback residual of its lossy push
// codecs (topk, onebit), and what it holds of each slice it delta-pulls.
//
// Error feedback (Seide et al.; Karimireddy et al. 2019, EF-signSGD): what a
// lossy codec did not send of a clock's gradient is kept and added to the
// next clock's, so over N clocks the sum sent equals the sum of the
// gradients less the residual left now (tested to 1e-4 over 50 clocks
// of N(0, 1) gradients, float32 sums). The residual of
// clock c is added exactly once: encoding clock c again (a step retried
// after a reconnect) starts from the residual as it stood before clock c.
// It lives in this process: a restarted worker starts with a zero residual,
// so what its predecessor had not yet sent is lost (at most one clock's
// worth of unsent gradient per table, as in DGC and BytePS).
//
// Delta pulls (pull: topk): the worker keeps what it holds of each dense
// piece and the version the shard named for it; a pull names that version,
// and the shard answers the pull_topk_ratio share of the values that changed
// most since (the rest of the change waits on the shard for later pulls,
// error feedback the other way) or, when it does not remember that version
// (first pull, a lost answer, a restart of either side), the whole piece.
//
// Which codec: a slice of fewer than compression.min_bytes (as float32)
// and every slice of the first compression.warmup_steps clocks travel as
// float32; sparse rows take the table's codec only when it is fixed-width
// (bf16, fp16), since top-k and sign codecs are for dense gradients.
//
// Threading: Encode from one thread at a time (the client's calling
// thread); the codec choices are const and any thread may ask them.
// SetPull / Receive of one piece from one call at a time (the PsClient
// contract: a worker's calls do not overlap); distinct pieces from any
// threads (a call's answers land on gRPC's threads).
#ifndef TESSERA_WORKER_WIRE_CODECS_H_
#define TESSERA_WORKER_WIRE_CODECS_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/codec.h"
#include "common/config.h"
#include "proto/tessera.pb.h"
#include "worker/ps_client.h"

namespace tessera {

class WireCodecs {
 public:
  // `dense_sizes`: by table index (JobConfig::Tables() order), 0 for sparse.
  WireCodecs(const CompressionConfig& config, const std::vector<std::string>& table_names,
              const std::vector<uint64_t>& dense_sizes);

  // Encodes values [offset, offset + values.size()) of dense table `table`'s
  // gradient for `clock` into *out (error feedback for lossy codecs).
  void Encode(int64_t clock, size_t table, uint64_t offset, absl::Span<const float> values,
              v1::Payload* out);
  // The codec a pull of `length` values of `table` at `clock` is answered in.
  v1::Codec PullCodec(int64_t clock, size_t table, uint64_t length) const;
  // Names `slice`'s codec and, for a delta-pulled piece (dense, in a
  // message), what this worker holds of it. `shared`: the answer goes to
  // shared memory (float32, no delta).
  void SetPull(int64_t clock, size_t table, v1::Slice* slice, bool shared) const;
  // Decodes an answer to a slice SetPull shaped into `out` (table's
  // values [offset, offset + out.size())): a delta is added to what this
  // worker holds of the piece. INVALID_ARGUMENT when it does not fit.
  absl::Status Receive(size_t table, uint64_t offset, const v1::Payload& payload,
                       absl::Span<float> out) const;
  // Registers a dense piece that may be delta-pulled (construction only).
  void AddPiece(size_t table, uint64_t offset, uint64_t length);
  // The fixed-width codec sparse rows of `table` travel in (push or pull).
  const Codec& RowCodec(size_t table, bool push) const;
  // Table `table`'s residual now (all zeros for lossless codecs).
  absl::Span<const float> residual(size_t table) const { return tables_[table].residual; }

  // Values moved: `bytes` as they travelled, `values` floats of them.
  // Any thread (relaxed atomics).
  void Count(bool push, uint64_t bytes, uint64_t values) const;
  PsClient::WireTraffic traffic() const;

 private:
  struct Table {
    std::unique_ptr<Codec> push;
    v1::Codec pull = v1::FLOAT32;
    bool delta = false;  // pull: topk (answers in full are float32)
    bool feedback = false;           // push codec is lossy: keep a residual
    std::vector<float> residual;     // now
    std::vector<float> before;       // as it stood before `clock`
    int64_t clock = -1;              // the clock `before` is for
  };
  bool Uncompressed(int64_t clock, uint64_t length) const;

  const CompressionConfig config_;
  std::vector<Table> tables_;
  // Delta-pulled pieces: what this worker holds of each, and its version.
  struct Held {
    uint64_t version = 0;
    std::vector<float> values;
  };
  mutable std::map<std::pair<size_t, uint64_t>, Held> held_;
  mutable std::atomic<uint64_t> push_bytes_{0}, push_raw_{0}, pull_bytes_{0}, pull_raw_{0};
};

}  // namespace tessera

#endif  // TESSERA_WORKER_WIRE_CODECS_H_
