// Hostile and careless clients against a real Shard: each case reproduces an
// input that crashed a shard or corrupted a job before (issue 14), and checks
// that it now gets its status and changes nothing.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "common/codec.h"
#include "common/shared_memory.h"
#include "common/wire.h"
#include "server/sparse_table.h"
#include "server/shard.h"
#include "tests/server/shard_fixtures.h"

namespace tessera {
namespace {

v1::RegisterRequest RegisterOf(const Shard& shard, uint32_t worker, const std::string& session) {
  v1::RegisterRequest r;
  r.set_worker_rank(worker);
  r.set_session(session);
  NameJob(shard, &r);
  return r;
}

// A hand-made segment as a hostile client would make it: `file_bytes` long,
// with Tessera's magic and `token` in its header (as far as they fit).
std::string HandMadeSegment(size_t file_bytes, const std::string& token) {
  const std::string name = "/tessera-hostile-" + std::to_string(getpid());
  shm_unlink(name.c_str());
  const int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(ftruncate(fd, static_cast<off_t>(file_bytes)) == 0);
  std::string header(32, '\0');
  std::memcpy(header.data(), "tessera-shm-v1", 15);
  std::memcpy(header.data() + 16, token.data(), 16);
  REQUIRE(pwrite(fd, header.data(), std::min(file_bytes, header.size()), 0) >= 0);
  close(fd);
  return name;
}

TEST_CASE("a segment whose capacity wraps the header size is refused at Register") {
  JobConfig c = MakeConfig("asp", 0, 1);
  auto shard = MakeShard(c);
  const std::string token(16, 'k');
  const std::string name = HandMadeSegment(32, token);
  v1::RegisterRequest r = RegisterOf(*shard, 0, SessionOf(0));
  r.mutable_shared_memory()->set_name(name);
  r.mutable_shared_memory()->set_capacity(~uint64_t{0} - 31);  // 64 + this wraps to 32
  r.mutable_shared_memory()->set_token(token);
  v1::RegisterResponse resp;
  REQUIRE(shard->Register(r, &resp).ok());
  CHECK_FALSE(resp.shared_memory_mapped());
  CHECK(resp.shared_memory_error().find("capacity") != std::string::npos);
  // So a pull that names shared memory far past the file is refused, not written.
  auto pull = StartPull(*shard, 0, 0, Dense("w", 0, 8));
  PullRequest far = pull->request;
  far.mutable_reply_shared()->set_offset(uint64_t{1} << 30);
  PullResponse out;
  std::optional<absl::Status> status;
  shard->Pull(far, &out, kFar, [&](absl::Status s) { status = s; });
  REQUIRE(status.has_value());
  CHECK(status->code() == absl::StatusCode::kFailedPrecondition);
  shm_unlink(name.c_str());
}

TEST_CASE("a segment shrunk under the shard's mapping fails the call, not the shard") {
  JobConfig c = MakeConfig("asp", 0, 1);
  auto shard = MakeShard(c);
  auto segment = SharedSegment::Create(4096);
  REQUIRE(segment.ok());
  v1::RegisterRequest r = RegisterOf(*shard, 0, SessionOf(0));
  r.mutable_shared_memory()->set_name((*segment)->name());
  r.mutable_shared_memory()->set_capacity(4096);
  r.mutable_shared_memory()->set_token((*segment)->token());
  v1::RegisterResponse resp;
  REQUIRE(shard->Register(r, &resp).ok());
  REQUIRE(resp.shared_memory_mapped());
  const std::vector<float> before = PullNow(*shard, Dense("w", 0, 8));

  // The worker truncates its file: every page of the mapping is gone.
  const int fd = shm_open((*segment)->name().c_str(), O_RDWR, 0);
  REQUIRE(fd >= 0);
  REQUIRE(ftruncate(fd, 0) == 0);
  close(fd);

  PullRequest pull;
  pull.set_worker_rank(0);
  pull.set_session(SessionOf(0));
  *pull.add_slices() = Dense("w", 0, 8);
  pull.mutable_reply_shared()->set_offset(0);
  PullResponse out;
  std::optional<absl::Status> status;
  shard->Pull(pull, &out, kFar, [&](absl::Status s) { status = s; });
  REQUIRE(status.has_value());
  CHECK(status->code() == absl::StatusCode::kDataLoss);

  PushRequest push = MakePush(0, 0, Dense("w", 0, 8), {}, false);
  push.clear_gradients();
  push.mutable_gradients_shared()->set_offset(0);
  PushResponse pushed;
  CHECK(shard->Push(push, &pushed).code() == absl::StatusCode::kDataLoss);
  CHECK(PullNow(*shard, Dense("w", 0, 8)) == before);  // nothing changed
  // A guarded copy in the test's own process survives the same fault.
  std::vector<char> sink(64);
  CHECK((*segment)->CopyOut(0, sink.data(), 64).code() == absl::StatusCode::kDataLoss);
}

TEST_CASE("by default a rank never passes to another process, however long its holder is silent") {
  JobConfig c = MakeConfig("asp", 0, 2);
  REQUIRE(std::isinf(c.security.rank_lease_s));
  auto shard = MakeShard(c);
  RegisterWorker(*shard, 0);
  v1::RegisterResponse resp;
  absl::SleepFor(absl::Milliseconds(200));  // silent, as a paused process is
  const absl::Status s = shard->Register(RegisterOf(*shard, 0, "stranger-secret!"), &resp);
  CHECK(s.code() == absl::StatusCode::kAlreadyExists);
  CHECK(std::string(s.message()).find("security.session_file") != std::string::npos);
  // Its own session (a restart that kept it) takes it back at once.
  CHECK(shard->Register(RegisterOf(*shard, 0, SessionOf(0)), &resp).ok());
}

TEST_CASE("a live rank is not taken by a second registration; a silent one passes") {
  JobConfig c = MakeConfig("asp", 0, 2);
  c.security.rank_lease_s = 0.3;
  auto shard = MakeShard(c);
  const std::string stranger = "stranger-secret!";
  v1::RegisterResponse resp;
  CHECK(shard->Register(RegisterOf(*shard, 1, stranger), &resp).code() ==
        absl::StatusCode::kAlreadyExists);
  CHECK(shard->Register(RegisterOf(*shard, 1, ""), &resp).code() == absl::StatusCode::kInvalidArgument);
  CHECK(shard->Register(RegisterOf(*shard, 1, std::string(16, '\0')), &resp).code() ==
        absl::StatusCode::kInvalidArgument);
  // The same worker coming back (a reconnect) keeps its rank.
  CHECK(shard->Register(RegisterOf(*shard, 1, SessionOf(1)), &resp).ok());

  // Calls without the holder's secret are refused and change nothing.
  PushRequest forged = MakePush(1, 0, Dense("w", 0, 8), std::vector<float>(8, 1.0f), true);
  forged.set_session(stranger);
  PushResponse pushed;
  CHECK(shard->Push(forged, &pushed).code() == absl::StatusCode::kPermissionDenied);
  forged.clear_session();
  CHECK(shard->Push(forged, &pushed).code() == absl::StatusCode::kInvalidArgument);
  v1::FinishRequest finish;
  finish.set_worker_rank(0);
  finish.set_session(stranger);
  v1::FinishResponse finished;
  CHECK(shard->Finish(finish, &finished).code() == absl::StatusCode::kPermissionDenied);
  finish.set_worker_rank(1);
  CHECK(shard->Finish(finish, &finished).code() == absl::StatusCode::kPermissionDenied);
  CHECK_FALSE(shard->AllWorkersFinished());
  v1::StatsResponse stats;
  shard->Stats(&stats);
  CHECK(stats.worker_clocks(1) == 0);
  CHECK(stats.workers_finished() == 0);

  // Silent past the lease (a dead worker): a restarted one takes the rank,
  // and the old secret no longer works.
  absl::SleepFor(absl::Milliseconds(400));
  REQUIRE(shard->Register(RegisterOf(*shard, 1, stranger), &resp).ok());
  forged.set_session(stranger);
  CHECK(shard->Push(forged, &pushed).ok());
  PushRequest old = MakePush(1, 1, Dense("w", 0, 8), std::vector<float>(8, 1.0f));
  CHECK(shard->Push(old, &pushed).code() == absl::StatusCode::kPermissionDenied);
}

TEST_CASE("a parked pull keeps its worker's rank live past the lease") {
  JobConfig c = MakeConfig("bsp", 0, 2);
  c.security.rank_lease_s = 0.05;
  auto shard = MakeShard(c);
  Advance(*shard, 0, 0);
  auto parked = StartPull(*shard, 0, 1, Dense("w", 0, 8));  // waits for worker 1
  REQUIRE_FALSE(parked->status.has_value());
  absl::SleepFor(absl::Milliseconds(100));
  v1::RegisterResponse resp;
  CHECK(shard->Register(RegisterOf(*shard, 0, "another-process!"), &resp).code() ==
        absl::StatusCode::kAlreadyExists);
  Advance(*shard, 1, 0);
  REQUIRE(parked->status.has_value());
  CHECK(parked->status->ok());
}

TEST_CASE("finite gradients whose update would be NaN or Inf are refused and change nothing") {
  // The result checks alone: no bound on gradients or values.
  auto unbounded = [](JobConfig c) {
    c.server.max_gradient_abs = 0;
    c.server.max_parameter_abs = 0;
    return c;
  };
  SECTION("sgd: FLT_MAX gradients overflow the value") {
    JobConfig c = unbounded(MakeConfig("asp", 0, 1));
    auto shard = MakeShard(c);
    const std::vector<float> before = PullNow(*shard, Dense("w", 0, 8));
    PushResponse resp;
    // lr 1: w - FLT_MAX is finite once; twice overflows to -Inf.
    REQUIRE(shard->Push(MakePush(0, 0, Dense("w", 0, 8), std::vector<float>(8, FLT_MAX)), &resp)
                .ok());
    const std::vector<float> once = PullNow(*shard, Dense("w", 0, 8));
    absl::Status s =
        shard->Push(MakePush(0, 0, Dense("w", 0, 8), std::vector<float>(8, FLT_MAX)), &resp);
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(s.message()).find("would make value 0") != std::string::npos);
    CHECK(PullNow(*shard, Dense("w", 0, 8)) == once);
    CHECK(AllFinite(once));
    CHECK(once != before);
  }
  SECTION("adam: one gradient of 1e20 squares to Inf") {
    JobConfig c = unbounded(MakeConfig("asp", 0, 1));
    c.optimizer.type = OptimizerType::kAdam;
    c.optimizer.lr = 0.001f;
    auto shard = MakeShard(c);
    const std::vector<float> before = PullNow(*shard, Dense("w", 0, 8));
    std::vector<float> g(8, 0.5f);
    g[5] = 1e20f;
    PushResponse resp;
    absl::Status s = shard->Push(MakePush(0, 0, Dense("w", 0, 8), g), &resp);
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(s.message()).find("value 5") != std::string::npos);
    CHECK(PullNow(*shard, Dense("w", 0, 8)) == before);
    // And a sparse row the same way (1e30: the row update squares after
    // scaling): nothing is created.
    absl::Status sparse =
        shard->Push(MakePush(0, 0, Sparse("emb", {7}), {1e30f, 1.0f}), &resp);
    CHECK(sparse.code() == absl::StatusCode::kInvalidArgument);
    v1::StatsResponse stats;
    shard->Stats(&stats);
    CHECK(stats.tables(2).rows() == 0);
    // A normal push still applies.
    CHECK(shard->Push(MakePush(0, 0, Dense("w", 0, 8), std::vector<float>(8, 0.5f)), &resp).ok());
  }
  SECTION("bsp: two FLT_MAX pushes in one clock sum to Inf") {
    JobConfig c = unbounded(MakeConfig("bsp", 0, 2));
    auto shard = MakeShard(c);
    const std::vector<float> before = PullNow(*shard, Dense("w", 0, 8));
    PushResponse resp;
    REQUIRE(shard->Push(MakePush(0, 0, Dense("w", 0, 8), std::vector<float>(8, FLT_MAX), true),
                        &resp)
                .ok());
    absl::Status s = shard->Push(
        MakePush(1, 0, Dense("w", 0, 8), std::vector<float>(8, FLT_MAX), true), &resp);
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    // The refused push did not advance worker 1: the clock stays open.
    v1::StatsResponse stats;
    shard->Stats(&stats);
    CHECK(stats.worker_clocks(1) == 0);
    REQUIRE(shard->Push(MakePush(1, 0, Dense("w", 0, 8), std::vector<float>(8, 0.0f), true), &resp)
                .ok());
    const std::vector<float> after = PullNow(*shard, Dense("w", 0, 8));
    CHECK(AllFinite(after));
    CHECK(after != before);
  }
  SECTION("by default, finite but destructive pushes are refused: huge gradients, absurd results") {
    JobConfig c = MakeConfig("asp", 0, 1);  // sgd, lr 1
    auto shard = MakeShard(c);
    const std::vector<float> before = PullNow(*shard, Dense("w", 0, 8));
    PushResponse resp;
    for (const float g : {FLT_MAX, 1e18f, 1e15f, 2e6f}) {
      INFO(g);
      absl::Status s = shard->Push(MakePush(0, 0, Dense("w", 0, 8), std::vector<float>(8, g)), &resp);
      CHECK(s.code() == absl::StatusCode::kInvalidArgument);
      CHECK(std::string(s.message()).find("server.max_gradient_abs") != std::string::npos);
    }
    // Within the gradient bound: 1 - 1e6 is still within
    // server.max_parameter_abs (1e6), so it applies ...
    std::vector<float> g(8, 0.0f);
    g[2] = 1e6f;
    REQUIRE(shard->Push(MakePush(0, 0, Dense("w", 0, 8), g), &resp).ok());
    const std::vector<float> edge = PullNow(*shard, Dense("w", 0, 8));
    CHECK(edge[2] == -999999.0f);
    // ... but a small push past it is refused: the result is checked.
    g[2] = 10.0f;
    absl::Status s = shard->Push(MakePush(0, 0, Dense("w", 0, 8), g), &resp);
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(s.message()).find("value 2") != std::string::npos);
    CHECK(std::string(s.message()).find("server.max_parameter_abs") != std::string::npos);
    CHECK(PullNow(*shard, Dense("w", 0, 8)) == edge);
    // A sparse row the same way, nothing created (lr 2: 2e6 away from any
    // initial value in [-1, 1]).
    JobConfig fast = MakeConfig("asp", 0, 1);
    fast.optimizer.lr = 2.0f;
    auto rows = MakeShard(fast);
    s = rows->Push(MakePush(0, 0, Sparse("emb", {9}), {0.5f, -1e6f}), &resp);
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(s.message()).find("the row of key 9") != std::string::npos);
    v1::StatsResponse row_stats;
    rows->Stats(&row_stats);
    CHECK(row_stats.tables(2).rows() == 0);
    (void)before;
    v1::StatsResponse stats;
    shard->Stats(&stats);
    CHECK(stats.tables(2).rows() == 0);
    // An honest push applies (toward zero: the value comes back).
    g[2] = -0.5f;
    CHECK(shard->Push(MakePush(0, 0, Dense("w", 0, 8), g), &resp).ok());
    // Adam: gradients of 1e15-1e18 would freeze the coordinate; refused.
    JobConfig a = MakeConfig("asp", 0, 1);
    a.optimizer.type = OptimizerType::kAdam;
    a.optimizer.lr = 0.001f;
    auto adam = MakeShard(a);
    std::vector<float> big(8, 0.1f);
    big[1] = 1e16f;
    CHECK(adam->Push(MakePush(0, 0, Dense("w", 0, 8), big), &resp).code() ==
          absl::StatusCode::kInvalidArgument);
  }
  SECTION("server.max_gradient_abs bounds every gradient") {
    JobConfig c = MakeConfig("asp", 0, 1);
    c.server.max_gradient_abs = 10;
    auto shard = MakeShard(c);
    const std::vector<float> before = PullNow(*shard, Dense("w", 0, 8));
    std::vector<float> g(8, 1.0f);
    g[3] = -11;
    PushResponse resp;
    absl::Status s = shard->Push(MakePush(0, 0, Dense("w", 0, 8), g), &resp);
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(s.message()).find("server.max_gradient_abs") != std::string::npos);
    CHECK(PullNow(*shard, Dense("w", 0, 8)) == before);
    g[3] = -10;
    CHECK(shard->Push(MakePush(0, 0, Dense("w", 0, 8), g), &resp).ok());
  }
}

TEST_CASE("a worker of another job is refused at Register, naming both jobs") {
  JobConfig c = MakeConfig("asp", 0, 2);
  c.name = "job-a";
  auto shard = MakeShard(c);
  v1::RegisterResponse resp;
  v1::RegisterRequest r = RegisterOf(*shard, 0, SessionOf(0));
  SECTION("another name, same layout") {
    r.set_job("job-b");
    const absl::Status s = shard->Register(r, &resp);
    CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
    CHECK(std::string(s.message()).find("job 'job-a'") != std::string::npos);
    CHECK(std::string(s.message()).find("job 'job-b'") != std::string::npos);
  }
  SECTION("the same name, another layout") {
    JobConfig bigger = c;
    bigger.model.tables[0].size = 16;
    r.set_job_layout(bigger.LayoutText());
    const absl::Status s = shard->Register(r, &resp);
    CHECK(s.code() == absl::StatusCode::kFailedPrecondition);
    CHECK(std::string(s.message()).find("w dense 16") != std::string::npos);
  }
  SECTION("no identity at all") {
    r.clear_job();
    r.clear_job_layout();
    CHECK(shard->Register(r, &resp).code() == absl::StatusCode::kFailedPrecondition);
  }
  // The rank was not taken: the right job's worker registers.
  CHECK(shard->Register(RegisterOf(*shard, 0, SessionOf(0)), &resp).ok());
}

TEST_CASE("a sparse table is bounded by default, from the machine's memory") {
  JobConfig c = MakeConfig("asp", 0, 1);
  REQUIRE(c.server.max_sparse_rows == 0);  // the default: derived
  auto shard = MakeShard(c);
  v1::StatsResponse stats;
  shard->Stats(&stats);
  const v1::TableStats& emb = stats.tables(2);
  REQUIRE(emb.name() == "emb");
  // Half of the memory over the one sparse table, at its bytes a row (dim
  // 2, sgd: no slots).
  const uint64_t memory = uint64_t(sysconf(_SC_PHYS_PAGES)) * uint64_t(sysconf(_SC_PAGESIZE));
  CHECK(emb.max_rows() == memory / 2 / SparseTable::ReservedBytesPerRow(2, 0));
  CHECK(emb.max_rows() < memory);
  c.server.max_sparse_rows = 4;
  v1::StatsResponse capped;
  MakeShard(c)->Stats(&capped);
  CHECK(capped.tables(2).max_rows() == 4);
}

TEST_CASE("sparse tables stop at server.max_sparse_rows; pulls can be told not to create rows") {
  JobConfig c = MakeConfig("asp", 0, 1);
  c.server.max_sparse_rows = 4;
  auto shard = MakeShard(c);
  PushResponse resp;
  REQUIRE(shard->Push(MakePush(0, 0, Sparse("emb", {1, 2, 3}), std::vector<float>(6, 0.1f)), &resp)
              .ok());
  absl::Status s =
      shard->Push(MakePush(0, 0, Sparse("emb", {4, 5}), std::vector<float>(4, 0.1f)), &resp);
  CHECK(s.code() == absl::StatusCode::kResourceExhausted);
  CHECK(std::string(s.message()).find("server.max_sparse_rows (4)") != std::string::npos);
  // Keys it already holds are no cost.
  CHECK(shard->Push(MakePush(0, 0, Sparse("emb", {1, 2, 3, 4}), std::vector<float>(8, 0.1f)),
                    &resp)
            .ok());
  auto pull = StartPull(*shard, 0, 0, Sparse("emb", {9, 10}));
  REQUIRE(pull->status.has_value());
  CHECK(pull->status->code() == absl::StatusCode::kResourceExhausted);

  JobConfig frozen = MakeConfig("asp", 0, 1);
  frozen.server.pull_creates_rows = false;
  auto reader = MakeShard(frozen);
  auto grower = MakeShard(MakeConfig("asp", 0, 1));
  const std::vector<uint64_t> keys = {11, 22, 33};
  auto a = StartPull(*reader, 0, 0, Sparse("emb", keys));
  auto b = StartPull(*grower, 0, 0, Sparse("emb", keys));
  REQUIRE(a->status->ok());
  REQUIRE(b->status->ok());
  CHECK(a->response.values(0).values() == b->response.values(0).values());  // the same initial values
  v1::StatsResponse kept, grown;
  reader->Stats(&kept);
  CHECK(kept.tables(2).rows() == 0);
  grower->Stats(&grown);
  CHECK(grown.tables(2).rows() == 3);

  // An evaluation's pull (read_only) keeps no row whatever the config says,
  // and so is not refused by a full table either.
  auto read_only = [](Shard& on, const std::vector<uint64_t>& ks) {
    PullRequest request = MakePull(0, 0, Sparse("emb", ks));
    request.set_read_only(true);
    auto p = StartPull(on, std::move(request));
    REQUIRE(p->status.has_value());
    return p;
  };
  const std::vector<uint64_t> unseen = {44, 55};
  auto evaluated = read_only(*grower, unseen);
  auto frozen_read = read_only(*reader, unseen);
  REQUIRE(evaluated->status->ok());
  REQUIRE(frozen_read->status->ok());
  CHECK(evaluated->response.values(0).values() == frozen_read->response.values(0).values());
  CHECK(DecodeFloats(evaluated->response.values(0)).size() == 4);  // 2 keys x dim 2
  grower->Stats(&grown);
  CHECK(grown.tables(2).rows() == 3);
  auto at_limit = read_only(*shard, {9, 10});
  CHECK(at_limit->status->ok());
  v1::StatsResponse full;
  shard->Stats(&full);
  CHECK(full.tables(2).rows() == 4);
}

TEST_CASE("a huge unknown table name is echoed only in part") {
  JobConfig c = MakeConfig("asp", 0, 1);
  auto shard = MakeShard(c);
  auto pull = StartPull(*shard, 0, 0, Dense(std::string(1 << 20, 'x'), 0, 1));
  REQUIRE(pull->status.has_value());
  CHECK(pull->status->code() == absl::StatusCode::kInvalidArgument);
  CHECK(pull->status->message().size() < 300);
  CHECK(std::string(pull->status->message()).find("(1048576 bytes)") != std::string::npos);
}

TEST_CASE("tables larger than the machine are a config error naming the key") {
  JobConfig c = MakeConfig("asp", 0, 1);
  c.model.tables[0].size = uint64_t{1} << 40;
  auto shard = Shard::Create(c, 0);
  REQUIRE_FALSE(shard.ok());
  CHECK(shard.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(shard.status().message()).find("config: model.tables.0.size = '1099511627776'") ==
        0);
}

}  // namespace
}  // namespace tessera
