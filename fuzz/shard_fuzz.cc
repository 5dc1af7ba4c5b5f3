// Fuzz target: decode -> validate -> apply of every request type against a
// real Shard (no gRPC: the service only forwards). Input: one byte choosing
// the shard (BSP with aggregation, SSP, ASP with Adam) and the request type,
// then the request's protobuf bytes. A request may do anything a client can
// say; the shard must answer a status, never crash, leak or corrupt itself:
// after every input its parameters are finite.
//
// The shards live for the whole run (state carries over between inputs, as it
// does for a real server). Pulls that park expire at the end of each input.
#include "fuzz/shard_fuzz.h"

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "google/protobuf/stubs/logging.h"
#include "common/codec.h"
#include "common/config.h"
#include "proto/tessera.pb.h"
#include "server/shard.h"

namespace {

std::atomic<uint64_t> accepted{0}, refused{0};

void Tally(const absl::Status& s) { (s.ok() ? accepted : refused).fetch_add(1); }

using tessera::JobConfig;
using tessera::Shard;

constexpr char kJob[] = R"(
cluster: {servers: ['127.0.0.1:1'], workers: 2}
model:
  type: tables
  tables:
    - {name: w, kind: dense, size: 4096, init: {type: normal, stddev: 0.1}}
    - {name: b, kind: dense, size: 3}
    - {name: emb, kind: sparse, dim: 4, init: {type: uniform, low: -1, high: 1}}
server: {max_sparse_rows: 50000, max_message_bytes: 1048576}
security: {rank_lease_s: 0.001}
)";

std::unique_ptr<Shard> MakeFuzzShard(const char* mode, const char* optimizer) {
  auto config = tessera::ParseJobConfig(
      kJob, {std::string("consistency.mode=") + mode, "consistency.staleness=2",
             std::string("optimizer.type=") + optimizer});
  if (!config.ok()) std::abort();
  auto shard = Shard::Create(*config, 0);
  if (!shard.ok()) std::abort();
  return *std::move(shard);
}

Shard* Pick(uint8_t which) {
  static Shard* shards[3] = {MakeFuzzShard("bsp", "sgd").release(),
                             MakeFuzzShard("ssp", "momentum").release(),
                             MakeFuzzShard("asp", "adam").release()};
  return shards[which % 3];
}

void CheckFinite(Shard* shard) {
  tessera::v1::RegisterRequest r;
  r.set_worker_rank(1);
  r.set_session("fuzz-reader-0001");
  r.set_job(shard->config().name);
  r.set_job_layout(shard->config().LayoutText());
  tessera::v1::RegisterResponse layout;
  if (!shard->Register(r, &layout).ok()) return;  // rank 1 is live: checked another time
  tessera::v1::PullRequest pull;
  pull.set_worker_rank(1);
  pull.set_session("fuzz-reader-0001");
  auto* slice = pull.add_slices();
  slice->set_table("w");
  slice->set_length(4096);
  tessera::v1::PullResponse values;
  bool answered = false;
  shard->Pull(pull, &values, absl::Now(), [&](absl::Status s) {
    answered = true;
    if (!s.ok() || values.values_size() != 1) return;
    const std::string& bytes = values.values(0).values();
    for (size_t i = 0; i + sizeof(float) <= bytes.size(); i += sizeof(float)) {
      float v;
      std::memcpy(&v, bytes.data() + i, sizeof(v));
      if (!std::isfinite(v)) std::abort();  // a non-finite parameter got in
    }
  });
  if (!answered) shard->ExpireDue(absl::InfiniteFuture());
}

}  // namespace

namespace tessera {

ShardFuzzTally ShardFuzzCounts() { return {accepted.load(), refused.load()}; }

}  // namespace tessera

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Protobuf logs every string field that is not UTF-8 (the parse fails, as
  // it does in the gRPC server); millions of such lines would be the run.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  Shard* shard = Pick(data[0] & 3);
  const int kind = (data[0] >> 2) % 6;
  const void* body = data + 1;
  const int body_size = static_cast<int>(size - 1);
  switch (kind) {
    case 0: {
      tessera::v1::RegisterRequest request;
      if (!request.ParseFromArray(body, body_size)) return 0;
      // A Register that names no job is given this one's, so that the
      // fuzzer reaches past the identity check; one that names any is kept.
      if (request.job().empty() && request.job_layout().empty()) {
        request.set_job(shard->config().name);
        request.set_job_layout(shard->config().LayoutText());
      }
      tessera::v1::RegisterResponse response;
      Tally(shard->Register(request, &response));
      break;
    }
    case 1: {
      auto request = std::make_shared<tessera::v1::PullRequest>();
      if (!request->ParseFromArray(body, body_size)) return 0;
      auto response = std::make_shared<tessera::v1::PullResponse>();
      shard->Pull(*request, response.get(), absl::Now() + absl::Milliseconds(1),
                  [request, response](absl::Status s) { Tally(s); });
      shard->ExpireDue(absl::InfiniteFuture());  // every parked pull answers now
      break;
    }
    case 2: {
      tessera::v1::PushRequest request;
      if (!request.ParseFromArray(body, body_size)) return 0;
      tessera::v1::PushResponse response;
      Tally(shard->Push(request, &response));
      break;
    }
    case 3: {
      tessera::v1::ClockRequest request;
      if (!request.ParseFromArray(body, body_size)) return 0;
      tessera::v1::ClockResponse response;
      Tally(shard->Clock(request, &response));
      break;
    }
    case 4: {
      tessera::v1::FinishRequest request;
      if (!request.ParseFromArray(body, body_size)) return 0;
      tessera::v1::FinishResponse response;
      Tally(shard->Finish(request, &response));
      break;
    }
    default: {
      tessera::v1::StatsResponse stats;
      shard->Stats(&stats);
      Tally(absl::OkStatus());
      break;
    }
  }
  CheckFinite(shard);
  return 0;
}
