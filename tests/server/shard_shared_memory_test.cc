// Shard with shared memory: a worker on the shard's host registers a segment;
// payloads then lie in it instead of in the messages. Ranges are checked, a
// parked pull still answers into it, and Register maps only the worker's own.
#include <catch2/catch.hpp>

#include "common/codec.h"
#include "common/shared_memory.h"
#include "common/wire.h"
#include "server/shard.h"
#include "tests/server/shard_fixtures.h"

namespace tessera {
namespace {

std::unique_ptr<SharedSegment> RegisterShared(Shard& shard, uint32_t worker, uint64_t capacity,
                                              bool* mapped = nullptr,
                                              std::string* error = nullptr) {
  auto segment = SharedSegment::Create(capacity);
  REQUIRE(segment.ok());
  v1::RegisterRequest r;
  r.set_worker_rank(worker);
  r.set_session(SessionOf(worker));
  NameJob(shard, &r);
  r.mutable_shared_memory()->set_name((*segment)->name());
  r.mutable_shared_memory()->set_capacity(capacity);
  r.mutable_shared_memory()->set_token((*segment)->token());
  v1::RegisterResponse resp;
  REQUIRE(shard.Register(r, &resp).ok());
  if (mapped) *mapped = resp.shared_memory_mapped();
  if (error) *error = resp.shared_memory_error();
  return *std::move(segment);
}

float* FloatsAt(SharedSegment& segment, uint64_t offset, uint64_t n) {
  auto bytes = segment.Bytes(offset, n * sizeof(float));
  REQUIRE(bytes.ok());
  return reinterpret_cast<float*>(*bytes);
}

TEST_CASE("shared memory carries a push's gradients and its fused pull, as the message would") {
  JobConfig c = MakeConfig("asp", 0, 1);
  auto shared = MakeShard(c);
  auto messages = MakeShard(c);
  bool mapped = false;
  auto segment = RegisterShared(*shared, 0, 1024, &mapped);
  REQUIRE(mapped);
  const std::vector<float> gw = {1, 2, 3, 4, 5, 6, 7, 8}, gb = {-1, 0.5f};

  for (int step = 0; step < 3; ++step) {  // the same areas, reused call after call
    PushRequest via_message = MakePush(0, step, Dense("w", 0, 8), gw, true);
    *via_message.add_slices() = Dense("b", 0, 2);
    EncodeFloats(gb, via_message.add_gradients());
    *via_message.add_pull_slices() = Dense("w", 0, 8);
    *via_message.add_pull_slices() = Dense("b", 0, 2);
    PushRequest via_memory = via_message;
    via_memory.clear_gradients();
    std::copy(gw.begin(), gw.end(), FloatsAt(*segment, 0, 8));
    std::copy(gb.begin(), gb.end(), FloatsAt(*segment, 32, 2));
    via_memory.mutable_gradients_shared()->set_offset(0);
    via_memory.mutable_reply_shared()->set_offset(512);

    PushResponse from_message, from_memory;
    REQUIRE(messages->Push(via_message, &from_message).ok());
    REQUIRE(shared->Push(via_memory, &from_memory).ok());
    REQUIRE(from_memory.pulled());
    CHECK(from_memory.values_shared());
    CHECK(from_memory.values_size() == 0);
    CHECK(from_memory.clock() == from_message.clock());
    const float* w = FloatsAt(*segment, 512, 10);
    CHECK(std::vector<float>(w, w + 8) == DecodeFloats(from_message.values(0)));
    CHECK(std::vector<float>(w + 8, w + 10) == DecodeFloats(from_message.values(1)));
    CHECK(PullNow(*shared, Dense("w", 0, 8)) == PullNow(*messages, Dense("w", 0, 8)));
  }
  CHECK(PullNow(*shared, Dense("w", 0, 8))[7] == 1.0f - 3 * 8);  // SGD, lr 1, from 1

  // bfloat16 gradients and values through the segment.
  std::vector<float> rounded(2);
  EncodeBfloat16(gb, *segment->Bytes(0, 4));
  PushRequest bf16 = MakePush(0, 3, Dense("b", 0, 2), {}, true);
  bf16.clear_gradients();
  bf16.mutable_slices(0)->set_codec(v1::BFLOAT16);  // packed as bfloat16
  bf16.mutable_gradients_shared()->set_offset(0);
  *bf16.add_pull_slices() = Dense("b", 0, 2);
  bf16.mutable_pull_slices(0)->set_codec(v1::BFLOAT16);
  bf16.mutable_reply_shared()->set_offset(8);
  const std::vector<float> b_before = PullNow(*shared, Dense("b", 0, 2));
  PushResponse resp;
  REQUIRE(shared->Push(bf16, &resp).ok());
  REQUIRE(resp.values_shared());
  const std::vector<float> b_after = PullNow(*shared, Dense("b", 0, 2));
  CHECK(b_after[1] == b_before[1] - FromBfloat16(ToBfloat16(0.5f)));
  DecodeBfloat16(absl::string_view(*segment->Bytes(8, 4), 4), rounded.data());
  CHECK(rounded[0] == FromBfloat16(ToBfloat16(b_after[0])));
  CHECK(rounded[1] == FromBfloat16(ToBfloat16(b_after[1])));
}

TEST_CASE("a pull answers into shared memory, also after it was parked") {
  JobConfig c = MakeConfig("bsp", 0, 2);
  auto shard = MakeShard(c);
  auto segment = RegisterShared(*shard, 0, 256);
  Advance(*shard, 0, 0);  // worker 0 at clock 1; worker 1 still at 0
  auto pull = std::make_unique<PendingPull>();
  pull->request.set_worker_rank(0);
  pull->request.set_session(SessionOf(0));
  pull->request.set_clock(1);
  *pull->request.add_slices() = Dense("w", 2, 4);
  *pull->request.add_slices() = Sparse("emb", {9});
  pull->request.mutable_reply_shared()->set_offset(64);
  PendingPull* raw = pull.get();
  shard->Pull(raw->request, &raw->response, kFar, [raw](absl::Status s) { raw->status = s; });
  CHECK_FALSE(raw->status.has_value());  // parked until worker 1 finishes clock 0
  std::fill_n(FloatsAt(*segment, 64, 6), 6, -7.0f);
  Advance(*shard, 1, 0);
  REQUIRE(raw->status.has_value());
  REQUIRE(raw->status->ok());
  CHECK(raw->response.values_shared());
  CHECK(raw->response.values_size() == 0);
  const float* got = FloatsAt(*segment, 64, 6);
  CHECK(std::vector<float>(got, got + 4) == std::vector<float>(4, 1.0f));  // constant init
  CHECK(std::vector<float>(got + 4, got + 6) == PullNow(*shard, Sparse("emb", {9})));
}

TEST_CASE("bad shared-memory ranges and missing mappings are refused and change nothing") {
  JobConfig c = MakeConfig("asp", 0, 2);
  auto shard = MakeShard(c);
  auto segment = RegisterShared(*shard, 0, 64);  // worker 1 registered without one
  const std::vector<float> w_before = PullNow(*shard, Dense("w", 0, 8));
  auto shared_push = [](uint32_t worker, uint64_t at) {
    PushRequest p = MakePush(worker, 0, Dense("w", 0, 8), {}, true);
    p.clear_gradients();
    p.mutable_gradients_shared()->set_offset(at);
    return p;
  };
  struct Case {
    const char* what;
    PushRequest push;
    absl::StatusCode code;
  };
  std::vector<Case> cases = {
      {"gradients past the segment's end", shared_push(0, 40), absl::StatusCode::kInvalidArgument},
      {"offset not 8-byte aligned", shared_push(0, 4), absl::StatusCode::kInvalidArgument},
      {"worker without a segment", shared_push(1, 0), absl::StatusCode::kFailedPrecondition},
  };
  PushRequest both = MakePush(0, 0, Dense("w", 0, 8), std::vector<float>(8, 1.0f), true);
  both.mutable_gradients_shared()->set_offset(0);
  cases.push_back({"gradients in the segment and in the message", both,
                   absl::StatusCode::kInvalidArgument});
  PushRequest bad_reply = MakePush(0, 0, Dense("w", 0, 8), std::vector<float>(8, 1.0f), true);
  *bad_reply.add_pull_slices() = Dense("w", 0, 8);
  bad_reply.mutable_reply_shared()->set_offset(48);  // 32 bytes do not fit in 16
  cases.push_back({"fused pull's values past the end", bad_reply,
                   absl::StatusCode::kInvalidArgument});
  for (auto& k : cases) {
    INFO(k.what);
    PushResponse resp;
    CHECK(shard->Push(k.push, &resp).code() == k.code);
    CHECK(PullNow(*shard, Dense("w", 0, 8)) == w_before);
    v1::StatsResponse stats;
    shard->Stats(&stats);
    CHECK(stats.worker_clocks(0) == 0);
    CHECK(stats.worker_clocks(1) == 0);
  }
  PullRequest pull;
  pull.set_worker_rank(0);
  pull.set_session(SessionOf(0));
  *pull.add_slices() = Dense("w", 0, 8);
  pull.mutable_reply_shared()->set_offset(64);
  PullResponse resp;
  std::optional<absl::Status> status;
  CHECK_FALSE(shard->Pull(pull, &resp, kFar, [&](absl::Status s) { status = s; }).has_value());
  REQUIRE(status.has_value());
  CHECK(status->code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("Register maps only the worker's own memory; registering again without it unmaps") {
  JobConfig c = MakeConfig("asp", 0, 1);
  auto shard = MakeShard(c);
  auto segment = SharedSegment::Create(64);
  REQUIRE(segment.ok());
  v1::RegisterRequest r;
  r.set_worker_rank(0);
  r.set_session(SessionOf(0));
  NameJob(*shard, &r);
  r.mutable_shared_memory()->set_name((*segment)->name());
  r.mutable_shared_memory()->set_capacity(64);
  std::string token = (*segment)->token();
  token[3] ^= 0x40;
  r.mutable_shared_memory()->set_token(token);
  v1::RegisterResponse resp;
  REQUIRE(shard->Register(r, &resp).ok());  // registered; its bytes travel in messages
  CHECK_FALSE(resp.shared_memory_mapped());
  CHECK(resp.shared_memory_error().find("token") != std::string::npos);

  r.mutable_shared_memory()->set_name("/tessera-0-gone");
  r.mutable_shared_memory()->set_token((*segment)->token());
  REQUIRE(shard->Register(r, &resp).ok());
  CHECK_FALSE(resp.shared_memory_mapped());
  CHECK(resp.shared_memory_error().find("not visible") != std::string::npos);

  bool mapped = false;
  auto good = RegisterShared(*shard, 0, 64, &mapped);
  CHECK(mapped);
  PushRequest push = MakePush(0, 0, Dense("b", 0, 2), {}, true);
  push.clear_gradients();
  push.mutable_gradients_shared()->set_offset(0);
  PushResponse push_resp;
  CHECK(shard->Push(push, &push_resp).ok());

  v1::RegisterRequest plain;
  plain.set_worker_rank(0);
  plain.set_session(SessionOf(0));
  NameJob(*shard, &plain);
  REQUIRE(shard->Register(plain, &resp).ok());
  push.set_clock(1);
  CHECK(shard->Push(push, &push_resp).code() == absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace tessera
