#include "server/shard.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/denormal.h"
#include "common/partition.h"
#include "common/status.h"
#include "common/wire.h"
#include "spdlog/spdlog.h"

namespace tessera {
namespace {

v1::TableKind ProtoKind(TableKind kind) {
  return kind == TableKind::kDense ? v1::DENSE : v1::SPARSE;
}

// A sparse table's reserve_rows on each of num_shards shards (keys hash evenly).
uint64_t ReserveShare(const TableConfig& t, uint32_t num_shards) {
  return (t.reserve_rows + num_shards - 1) / num_shards;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Shard>> Shard::Create(const JobConfig& config,
                                                     uint32_t shard_index) {
  if (shard_index >= config.num_servers()) {
    return absl::InvalidArgumentError(absl::StrCat("shard index ", shard_index,
                                                   " is not below cluster.servers' count (",
                                                   config.num_servers(), ")"));
  }
  // Tables this machine cannot hold would fail, or be killed, while they
  // are faulted in: refuse them here, naming the key.
  const uint64_t memory =
      static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const std::vector<TableConfig> tables = config.Tables();
  auto slots_of = [&config](const TableConfig& t) {
    return MakeOptimizer(config.OptimizerFor(t.name))->num_slots();
  };
  uint64_t dense_bytes = 0;
  for (size_t i = 0; i < tables.size(); ++i) {
    const TableConfig& t = tables[i];
    if (t.kind != TableKind::kDense) continue;
    // Values, optimizer slots and (BSP aggregation) the gradient buffer.
    const int slots = slots_of(t);
    const uint64_t dense_floats_per_value =
        1 + slots +
        (config.consistency.mode == ConsistencyMode::kBsp && config.consistency.aggregate ? 1 : 0);
    const uint64_t here = DenseShardRange(t.size, shard_index, config.num_servers()).size();
    dense_bytes += here * dense_floats_per_value * sizeof(float);
    if (dense_bytes > memory) {
      const std::string key = config.model.type == ModelType::kTables
                                  ? absl::StrCat("model.tables.", i, ".size")
                                  : std::string("model.layers");
      const std::string value = config.model.type == ModelType::kTables
                                    ? absl::StrCat(t.size)
                                    : absl::StrJoin(config.model.layers, ",");
      return absl::InvalidArgumentError(absl::StrCat(
          "config: ", key, " = '", value, "': expected dense tables that fit this machine: shard ",
          shard_index, " would hold ", dense_bytes >> 20, " MiB (values, ", slots,
          " optimizer slot(s)", dense_floats_per_value > 1 + slots ? ", BSP gradient buffer" : "",
          ") of ", memory >> 20, " MiB; add servers or shrink the model"));
    }
  }
  for (size_t i = 0; i < tables.size(); ++i) {
    const TableConfig& t = tables[i];
    if (t.reserve_rows == 0) continue;
    const uint64_t share = ReserveShare(t, config.num_servers());
    const uint64_t per_row = SparseTable::ReservedBytesPerRow(t.dim, slots_of(t));
    if (share * per_row > memory) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config: model.tables.", i, ".reserve_rows = '", t.reserve_rows, "': expected at most ",
          memory / per_row * config.num_servers(), " (", per_row, " bytes a row, split over ",
          config.num_servers(), " shard(s); this machine has ", memory >> 20, " MiB)"));
    }
  }
  try {
    return std::unique_ptr<Shard>(new Shard(config, shard_index));
  } catch (const std::bad_alloc&) {
    // Fits the machine on paper but not in what this process may allocate
    // now (a container limit, overcommit off): still the config's size.
    return absl::InvalidArgumentError(absl::StrCat(
        "config: model: out of memory allocating shard ", shard_index, "'s tables (",
        dense_bytes >> 20,
        " MiB dense, plus model.tables.*.reserve_rows) at start-up: expected "
        "tables that fit this process's memory limit; add servers or shrink the model"));
  }
}

namespace {

// Whether some dense table compensates with DC-ASGD or Gap-Aware, which need
// the values each push was computed from.
bool KeepsReadValues(const JobConfig& config) {
  for (const TableConfig& t : config.Tables()) {
    if (t.kind != TableKind::kDense) continue;
    const StalenessCompensation c = config.OptimizerFor(t.name).staleness_compensation;
    if (c == StalenessCompensation::kDc || c == StalenessCompensation::kGapAware) return true;
  }
  return false;
}

}  // namespace

const Optimizer* Shard::OptimizerOf(const std::string& name) {
  auto own = config_.table_optimizers.find(name);
  if (own == config_.table_optimizers.end()) return optimizer_.get();
  std::unique_ptr<Optimizer>& made = table_optimizers_[name];
  if (!made) made = MakeOptimizer(own->second);
  return made.get();
}

void Shard::SetRowLimits() {
  row_limits_.assign(layout_.size(), 0);
  const uint64_t configured = config_.server.max_sparse_rows;
  const uint64_t memory =
      static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  for (const TableConfig& c : config_.Tables()) {
    if (c.kind != TableKind::kSparse) continue;
    const Resolved& r = tables_.at(c.name);
    if (configured > 0) {
      row_limits_[r.index] = configured;
      continue;
    }
    // Auto: the sparse tables share half of this machine's memory, so that
    // keys without end (a pull or push of fresh keys each step) stop with
    // RESOURCE_EXHAUSTED before the kernel's OOM killer stops the shard.
    const uint64_t per_row = SparseTable::ReservedBytesPerRow(c.dim, r.sparse->num_slots());
    row_limits_[r.index] = std::max<uint64_t>(memory / 2 / sparse_.size() / per_row,
                                              ReserveShare(c, config_.num_servers()));
    spdlog::info("table '{}': at most {} rows on shard {} (server.max_sparse_rows auto: half of "
                 "this machine's {} MiB over {} sparse table(s), {} bytes a row; set "
                 "server.max_sparse_rows to choose)",
                 c.name, row_limits_[r.index], index_, memory >> 20, sparse_.size(), per_row);
  }
}

Shard::Shard(const JobConfig& config, uint32_t index)
    : config_(config),
      index_(index),
      num_workers_(config.cluster.workers),
      staleness_(config.consistency.mode == ConsistencyMode::kAsp
                     ? std::numeric_limits<int64_t>::max() / 2
                     : static_cast<int64_t>(config.consistency.staleness)),
      aggregate_(config.consistency.mode == ConsistencyMode::kBsp && config.consistency.aggregate),
      optimizer_(MakeOptimizer(config.optimizer)),
      clock_(config.cluster.workers),
      staleness_tracker_(config.cluster.workers, KeepsReadValues(config)),
      planner_(config.cluster.workers, config.training.batch_size, config.training.epochs),
      version_base_(uint64_t{std::random_device{}()} << 32),
      layout_text_(config.LayoutText()) {
  const uint32_t num_shards = config.num_servers();
  for (const TableConfig& t : config.Tables()) {
    v1::TableLayout layout;
    layout.set_name(t.name);
    layout.set_kind(ProtoKind(t.kind));
    Resolved ref;
    ref.index = static_cast<uint32_t>(layout_.size());
    if (t.kind == TableKind::kDense) {
      DenseRange range = DenseShardRange(t.size, index, num_shards);
      dense_.push_back(std::make_unique<DenseTable>(t, range, OptimizerOf(t.name), aggregate_,
                                                    config.OptimizerFor(t.name)));
      ref.dense = dense_.back().get();
      layout.set_total_size(t.size);
      layout.set_begin(range.begin);
      layout.set_end(range.end);
    } else {
      sparse_.push_back(std::make_unique<SparseTable>(
          t, OptimizerOf(t.name), config.server.sparse_stripes, ReserveShare(t, num_shards)));
      ref.sparse = sparse_.back().get();
      layout.set_dim(t.dim);
    }
    tables_.emplace(t.name, ref);
    layout_.push_back(layout);
  }
  traffic_ = std::make_unique<Traffic[]>(layout_.size());
  SetRowLimits();
  if (aggregate_ && config.worker.bsp_parts > 1) {
    std::vector<uint64_t> dense_sizes;
    std::vector<DenseTable*> by_index;
    for (const TableConfig& t : config.Tables()) {
      dense_sizes.push_back(t.kind == TableKind::kDense ? t.size : 0);
      by_index.push_back(tables_.at(t.name).dense);
    }
    std::vector<std::vector<PartBarrier::Range>> parts;
    for (const auto& pieces : BspParts(dense_sizes, index, num_shards, config.worker.bsp_parts)) {
      parts.emplace_back();
      for (const DensePiece& p : pieces) {
        parts.back().push_back({by_index[p.table], p.offset, p.length});
      }
    }
    parts_ = std::make_unique<PartBarrier>(std::move(parts), num_workers_);
  }
  for (uint32_t w = 0; w < num_workers_; ++w) {
    workers_.push_back(std::make_unique<WorkerSlot>());
    workers_.back()->last_seen_ms.store(absl::ToUnixMillis(absl::Now()));
  }
}

void Shard::Touch(uint32_t worker, Hold* hold) {
  workers_[worker]->last_seen_ms.store(absl::ToUnixMillis(absl::Now()), std::memory_order_relaxed);
  if (config_.consistency.evict_after_s <= 0) return;
  absl::MutexLock lock(&workers_[worker]->mu);
  absl::StatusOr<Applied> rejoined = Apply(Mutation::Of(Mutation::Kind::kRejoin, worker), hold);
  if (!rejoined.ok() || !rejoined->changed) return;
  spdlog::info("worker {} is back after its eviction; it rejoins the barrier at clock {}", worker,
               clock_.WorkerClock(worker));
}

size_t Shard::EvictSilent(absl::Time now) {
  const double after_s = config_.consistency.evict_after_s;
  if (after_s <= 0 || config_.consistency.mode == ConsistencyMode::kAsp) return 0;
  size_t evicted = 0;
  for (uint32_t w : clock_.Laggards()) {
    const double silent_s =
        absl::ToDoubleSeconds(now - absl::FromUnixMillis(workers_[w]->last_seen_ms.load()));
    if (silent_s < after_s) continue;
    // The reaper's thread does not wait for the standby: the eviction is
    // published once it holds it.
    Hold hold;
    absl::StatusOr<Applied> a;
    {
      absl::MutexLock lock(&workers_[w]->mu);
      a = Apply(Mutation::Of(Mutation::Kind::kEvict, w), &hold);
    }
    WhenHeld(std::move(hold), [] {});
    if (!a.ok()) continue;
    spdlog::warn(
        "evicted worker {} from the barrier: silent for {:.0f} s at clock {} "
        "(consistency.evict_after_s = {}); the others go on, and it rejoins if it calls "
        "again",
        w, silent_s, a->clock, after_s);
    ++evicted;
  }
  return evicted;
}

absl::Status Shard::Register(const v1::RegisterRequest& request, v1::RegisterResponse* response,
                             Hold* given) {
  CallHold hold(this, given);
  TESSERA_RETURN_IF_ERROR(CheckServing());
  if (request.worker_rank() >= num_workers_) {
    return absl::InvalidArgumentError(absl::StrCat("worker rank ", request.worker_rank(),
                                                   " is not below cluster.workers (", num_workers_,
                                                   ")"));
  }
  if (request.resume_clock() < 0 || request.resume_clock() > kMaxClock) {
    return absl::InvalidArgumentError(
        absl::StrCat("resume_clock ", request.resume_clock(), " is outside [0, ", kMaxClock, "]"));
  }
  if (request.job() != config_.name || request.job_layout() != layout_text_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "shard ", index_, " serves job '", config_.name, "' (", layout_text_,
        "); this worker is of job '", request.job(), "' (", request.job_layout(),
        "): another job's worker, or a config whose name, cluster or model differs"));
  }
  // Map the worker's shared memory when this host sees it; a worker whose
  // memory is not mapped sends its bytes in the messages. Mapped before the
  // rank is checked (no lock over a system call); dropped if refused.
  std::shared_ptr<SharedSegment> segment;
  if (request.has_shared_memory()) {
    const v1::SharedMemory& m = request.shared_memory();
    absl::StatusOr<std::unique_ptr<SharedSegment>> opened =
        SharedSegment::Open(m.name(), m.capacity(), m.token());
    if (opened.ok()) {
      segment = *std::move(opened);
      response->set_shared_memory_mapped(true);
    } else {
      response->set_shared_memory_error(std::string(opened.status().message()));
    }
  }
  {
    WorkerMemory& memory = workers_[request.worker_rank()]->memory;
    absl::MutexLock lock(&memory.mu);
    TESSERA_RETURN_IF_ERROR(TakeRank(request.worker_rank(), request.session(), memory));
    memory.segment = std::move(segment);
  }
  Touch(request.worker_rank(), hold.get());
  {
    // A worker ahead of the clock held here moves there; its clock changes
    // only under its own mutex, like an advance.
    const uint32_t w = request.worker_rank();
    absl::MutexLock lock(&workers_[w]->mu);
    TESSERA_ASSIGN_OR_RETURN(
        const Applied a,
        Apply(Mutation::Of(Mutation::Kind::kAdopt, w, request.resume_clock()), hold.get()));
    if (a.lost_clocks > 0) response->set_lost_clocks(a.lost_clocks);
    response->set_clock(a.clock);
  }
  response->set_shard_index(index_);
  response->set_num_shards(config_.num_servers());
  response->set_num_workers(num_workers_);
  response->set_mode(ModeName(config_.consistency.mode));
  response->set_staleness(config_.consistency.staleness);
  for (const auto& layout : layout_) *response->add_tables() = layout;
  return absl::OkStatus();
}

std::optional<ClockTable::WaiterId> Shard::Pull(const v1::PullRequest& request,
                                                v1::PullResponse* response, absl::Time deadline,
                                                Done done) {
  auto slices = std::make_shared<std::vector<Resolved>>();
  absl::Status status = CheckCaller(request.worker_rank(), request.session());
  if (status.ok()) {
    // An evicted worker's rejoin: the answer waits for the standby to hold
    // it (on no thread; usually long done by the time the pull is answered).
    Hold hold;
    Touch(request.worker_rank(), &hold);
    if (hold.waits()) {
      done = [this, hold = std::move(hold), done = std::move(done)](absl::Status s) {
        WhenHeld(hold, [done, s] { done(s); });
      };
    }
  }
  if (status.ok() && request.clock() < 0) {
    status = absl::InvalidArgumentError(absl::StrCat("pull clock ", request.clock(), " < 0"));
  }
  // A part's pull may come while the worker still pushes the clock before.
  const uint32_t part = request.part();
  if (status.ok() && part > 0 && parts_ == nullptr) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "pull of BSP part ", part, ", but this job moves whole clocks (worker.bsp_parts 1)"));
  }
  if (status.ok() &&
      request.clock() > clock_.WorkerClock(request.worker_rank()) + (part > 0 ? 1 : 0)) {
    status = absl::FailedPreconditionError(
        absl::StrCat("worker ", request.worker_rank(), " pulls at clock ", request.clock(),
                     " but is at clock ", clock_.WorkerClock(request.worker_rank())));
  }
  if (status.ok()) status = ResolveAll(request.slices(), slices.get());
  if (status.ok() && part > 0) status = CheckPart(part, *slices);
  // An evaluation's pull (read_only) leaves the tables as they were.
  const bool create_rows = config_.server.pull_creates_rows && !request.read_only();
  if (status.ok() && create_rows) status = CheckRowLimit(*slices);
  // Values go into the worker's shared memory, or into the message.
  const bool shared = request.has_reply_shared();
  SharedRange reply;
  if (status.ok() && shared) {
    absl::StatusOr<SharedRange> range =
        Shared(request.worker_rank(), request.reply_shared(), PayloadBytes(*slices));
    status = range.status();
    if (range.ok()) reply = *std::move(range);
  } else if (status.ok()) {
    status = CheckReplySize(*slices);
  }
  if (!status.ok()) {
    done(status);
    return std::nullopt;
  }
  const uint32_t worker = request.worker_rank();
  workers_[worker]->pulls_in_flight.fetch_add(1);
  const int64_t clock = request.clock();
  auto serve = [this, worker, clock, part, slices, response, create_rows, shared, reply,
                done = std::move(done)](absl::Status s) {
    workers_[worker]->pulls_in_flight.fetch_sub(1);
    if (s.ok()) {
      RecordServed(worker, clock, *slices);
      // A part's values are those of the clock its pushes closed.
      response->set_min_clock(part > 0 ? clock_.part_published(part) : clock_.published_min());
      if (shared) {
        s = ReadSlicesToShared(*slices, create_rows, reply);
        response->set_values_shared(s.ok());
        NotePulled(*slices, nullptr);
      } else {
        ReadSlices(worker, *slices, create_rows, response->mutable_values());
        NotePulled(*slices, &response->values());
      }
    }
    done(s);
  };
  std::optional<ClockTable::WaiterId> id =
      clock_.WaitFor(request.clock() - staleness_, deadline, serve, part);
  if (!id) serve(absl::OkStatus());
  return id;
}

absl::Status Shard::CheckPart(uint32_t part, const std::vector<Resolved>& slices) const {
  if (parts_ == nullptr) return absl::OkStatus();
  bool dense = false;
  std::vector<PartBarrier::Range> ranges;
  for (const Resolved& r : slices) {
    dense |= r.dense != nullptr;
    ranges.push_back({r.dense, r.offset, r.count});
  }
  return dense ? parts_->CheckPart(part, ranges) : absl::OkStatus();
}

void Shard::RecordServed(uint32_t worker, int64_t clock, const std::vector<Resolved>& slices) {
  std::vector<StalenessTracker::Slice> dense;
  for (const Resolved& r : slices) {
    if (r.dense) dense.push_back({r.dense, r.offset, r.count});
  }
  // A pull of rows alone (a ctr step's) is not the read its dense push names.
  if (dense.empty()) return;
  staleness_tracker_.Served(worker, clock, dense);
}

absl::Status Shard::Push(const v1::PushRequest& request, v1::PushResponse* response,
                         Hold* given) {
  CallHold hold(this, given);
  ScopedFlushDenormal flush;  // the optimizer runs here (BSP: when the clock advances)
  const uint32_t worker = request.worker_rank();
  TESSERA_RETURN_IF_ERROR(CheckCaller(worker, request.session()));
  Touch(worker, hold.get());
  if (request.piece() > 64) {
    return absl::InvalidArgumentError(absl::StrCat("push piece ", request.piece(), " > 64"));
  }
  std::vector<Resolved> slices, pull_slices;
  TESSERA_RETURN_IF_ERROR(ResolveAll(request.slices(), &slices));
  TESSERA_RETURN_IF_ERROR(CheckPart(request.piece(), slices));
  // Gradients copied out of shared memory, into this thread's buffer (kept
  // between calls: a fresh one per push would fault its pages in each time).
  thread_local std::string shared_copy;
  if (shared_copy.capacity() > (size_t{64} << 20)) std::string().swap(shared_copy);
  // Decoded gradients (every codec but float32), in buffers this thread
  // keeps between pushes (a fresh megabyte a push would fault its pages in).
  thread_local std::vector<std::vector<float>> decoded;
  if (decoded.size() > 64) decoded.clear();
  std::vector<absl::Span<const float>> grads;
  std::vector<float> max_abs;
  std::vector<uint64_t> wire_bytes;  // each slice's, as it travelled
  TESSERA_RETURN_IF_ERROR(DecodeGradients(request, slices, &shared_copy, &decoded, &grads,
                                          &max_abs, &wire_bytes));
  TESSERA_RETURN_IF_ERROR(CheckRowLimit(slices));
  TESSERA_RETURN_IF_ERROR(ResolveAll(request.pull_slices(), &pull_slices));
  if (config_.server.pull_creates_rows) TESSERA_RETURN_IF_ERROR(CheckRowLimit(pull_slices));
  SharedRange reply;
  if (request.has_reply_shared()) {
    TESSERA_ASSIGN_OR_RETURN(
        reply, Shared(worker, request.reply_shared(), PayloadBytes(pull_slices)));
  } else {
    TESSERA_RETURN_IF_ERROR(CheckReplySize(pull_slices));
  }

  // A worker's pushes within its clock apply in parallel (one call per
  // channel, say); one that advances the clock holds the lock alone, so it
  // waits for those before it and the advance publishes all of them.
  const bool advance_clock = request.advance_clock();
  std::optional<absl::WriterMutexLock> exclusive;
  std::optional<absl::ReaderMutexLock> shared;
  if (advance_clock) {
    exclusive.emplace(&workers_[worker]->mu);
  } else {
    shared.emplace(&workers_[worker]->mu);
  }
  const int64_t clock = clock_.WorkerClock(worker);
  if (request.clock() != clock) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", worker, " pushes for clock ", request.clock(), " but is at clock ", clock,
        request.clock() > clock ? " (ahead of its own clock)" : " (that clock is closed)"));
  }
  if (aggregate_ && request.clock() > clock_.published_min()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "BSP: worker ", worker, " pushes for clock ", request.clock(),
        " before every worker finished clock ", clock_.published_min(), "; pull first"));
  }
  // A piece already applied at this clock (a retry whose first reply was
  // lost) is acknowledged, not applied twice: its mutation is the advance
  // alone, if it asks for one. Piece 0 is not checked. A worker's pieces of
  // one clock carry distinct bits, so the load here and the fetch_or in
  // Apply never race on the same bit.
  const uint64_t bit = request.piece() == 0 ? 0 : uint64_t{1} << (request.piece() - 1);
  const bool duplicate = bit != 0 && (workers_[worker]->pieces_applied.load() & bit);
  uint32_t part_applied = 0;
  if (duplicate) {
    duplicate_pushes_.fetch_add(1, std::memory_order_relaxed);
    // Acknowledged once the first try's mutation is safe, which may still
    // be on its way to the standby.
    HoldAll(hold.get());
  } else {
    // Checked here, after the clock and duplicate checks: a refused update
    // marks no piece and advances no clock.
    TESSERA_RETURN_IF_ERROR(CheckUpdateFinite(request, grads, max_abs, slices));
    // The values the push was computed from, held (the tracker's lock,
    // shared) until its gradients are applied.
    const StalenessTracker::Read read = staleness_tracker_.Find(
        worker,
        request.has_values_clock() ? std::optional<int64_t>(request.values_clock()) : std::nullopt);
    // A push split into pieces is counted once, by its first.
    if (request.has_values_clock() && request.piece() <= 1) {
      staleness_tracker_.Observe(read.staleness());
    }
    response->set_staleness(read.staleness().value_or(-1));
    std::vector<const float*> reads(slices.size(), nullptr);
    for (size_t i = 0; i < slices.size(); ++i) {
      if (!aggregate_ && slices[i].dense) reads[i] = read.Values(slices[i].dense, slices[i].offset);
    }
    Mutation m = Mutation::Of(Mutation::Kind::kPush, worker, clock);
    m.piece_bit = bit;
    m.slices = &slices;
    m.grads = &grads;
    m.staleness = read.staleness();
    m.reads = &reads;
    TESSERA_ASSIGN_OR_RETURN(const Applied applied, Apply(m, hold.get()));
    part_applied = applied.part_applied;
    NotePushed(slices, wire_bytes);
  }
  response->set_clock(clock);
  if (advance_clock) {
    TESSERA_ASSIGN_OR_RETURN(
        const Applied applied,
        Apply(Mutation::Of(Mutation::Kind::kAdvance, worker, clock), hold.get()));
    response->set_clock(applied.clock);
  }
  // A BSP part this push completed: its pulls are answered now, once the
  // staleness tracker's hold on this worker is gone (a pull records there
  // what it read). Not the last part's: they wait for the clock's close, so
  // that a worker holding every part finds the clock closed when it pushes
  // the next, even while another worker's advance is still under way.
  if (part_applied > 0 && part_applied < parts_->size()) {
    clock_.PublishPart(part_applied, clock + 1);
  }
  // A min_clock this call raised is published before it is answered (once
  // the standby holds it), so the answer may name it and carry its values.
  response->set_min_clock(std::max(clock_.published_min(), hold.get()->publish));
  response->set_term(term_.load());
  // The fused pull, at the worker's clock now, only if it needs no wait.
  if (!pull_slices.empty() && response->min_clock() >= response->clock() - staleness_) {
    response->set_pulled(true);
    RecordServed(worker, response->clock(), pull_slices);
    if (reply.segment != nullptr) {
      NotePulled(pull_slices, nullptr);
      // The push stands; a worker whose memory is gone gets no fused values
      // and its next pull says why.
      const bool copied =
          ReadSlicesToShared(pull_slices, config_.server.pull_creates_rows, reply).ok();
      response->set_pulled(copied);
      response->set_values_shared(copied);
    } else {
      ReadSlices(worker, pull_slices, config_.server.pull_creates_rows,
                 response->mutable_values());
      NotePulled(pull_slices, &response->values());
    }
  }
  return absl::OkStatus();
}

absl::Status Shard::Clock(const v1::ClockRequest& request, v1::ClockResponse* response,
                          Hold* given) {
  CallHold hold(this, given);
  ScopedFlushDenormal flush;  // the optimizer runs here (BSP: when the clock advances)
  const uint32_t worker = request.worker_rank();
  TESSERA_RETURN_IF_ERROR(CheckCaller(worker, request.session()));
  Touch(worker, hold.get());
  absl::MutexLock lock(&workers_[worker]->mu);
  TESSERA_RETURN_IF_ERROR(CheckAdvance(worker, request.clock()));
  TESSERA_ASSIGN_OR_RETURN(
      const Applied applied,
      Apply(Mutation::Of(Mutation::Kind::kAdvance, worker, request.clock()), hold.get()));
  response->set_clock(applied.clock);
  response->set_min_clock(std::max(clock_.published_min(), hold.get()->publish));
  return absl::OkStatus();
}

absl::Status Shard::CheckAdvance(uint32_t worker, int64_t finished) const {
  const int64_t clock = clock_.WorkerClock(worker);
  if (clock < 0) {
    return absl::FailedPreconditionError(absl::StrCat("worker ", worker, " is not registered"));
  }
  if (finished != clock) {
    return absl::FailedPreconditionError(absl::StrCat("worker ", worker, " advances clock ",
                                                      finished, " but is at clock ", clock));
  }
  return absl::OkStatus();
}

absl::Status Shard::Finish(const v1::FinishRequest& request, v1::FinishResponse* response,
                           Hold* given) {
  CallHold hold(this, given);
  ScopedFlushDenormal flush;  // the optimizer runs here (BSP: when the clock advances)
  const uint32_t worker = request.worker_rank();
  TESSERA_RETURN_IF_ERROR(CheckCaller(worker, request.session()));
  absl::MutexLock lock(&workers_[worker]->mu);
  TESSERA_ASSIGN_OR_RETURN(const Applied applied,
                           Apply(Mutation::Of(Mutation::Kind::kFinish, worker), hold.get()));
  response->set_workers_finished(applied.workers_finished);
  return absl::OkStatus();
}

void Shard::FailParked() {
  clock_.FailAll(absl::UnavailableError("server shard is shutting down"));
}

absl::Status Shard::CheckPlan(int64_t epoch, double rate) const {
  // A rate no device reaches (1e12 examples a second) is a broken or hostile
  // caller's; it would take every share but one.
  constexpr double kMaxRate = 1e12;
  if (epoch < EpochPlanner::kCalibration || epoch >= int64_t{config_.training.epochs} ||
      !std::isfinite(rate) || rate < 0 || rate > kMaxRate) {
    return absl::InvalidArgumentError(absl::StrCat(
        "plan of epoch ", epoch, " at ", rate, " examples/s: expected an epoch in [-1, ",
        config_.training.epochs, ") (training.epochs; -1: epoch 0's calibration steps) and a rate "
        "in [0, ", kMaxRate, "]"));
  }
  return absl::OkStatus();
}

absl::Status Shard::Plan(const v1::PlanRequest& request, v1::PlanResponse* response,
                         Hold* given) {
  CallHold hold(this, given);
  TESSERA_RETURN_IF_ERROR(CheckCaller(request.worker_rank(), request.session()));
  Touch(request.worker_rank(), hold.get());
  const double rate = request.examples_per_second();
  TESSERA_RETURN_IF_ERROR(CheckPlan(request.epoch(), rate));
  Mutation m = Mutation::Of(Mutation::Kind::kPlan, request.worker_rank());
  m.epoch = request.epoch();
  m.rate = rate;
  TESSERA_ASSIGN_OR_RETURN(const Applied applied, Apply(m, hold.get()));
  for (uint32_t share : applied.shares) response->add_shares(share);
  return absl::OkStatus();
}

void Shard::FillTraffic(const std::string& table, v1::TableStats* stats) const {
  const Traffic& t = traffic_[tables_.at(table).index];
  stats->set_push_bytes(t.push_bytes.load(std::memory_order_relaxed));
  stats->set_pull_bytes(t.pull_bytes.load(std::memory_order_relaxed));
  stats->set_push_raw_bytes(t.push_raw_bytes.load(std::memory_order_relaxed));
  stats->set_pull_raw_bytes(t.pull_raw_bytes.load(std::memory_order_relaxed));
}

void Shard::Stats(v1::StatsResponse* response) const {
  response->set_shard_index(index_);
  response->set_standby(standby());
  response->set_term(term_.load());
  response->set_replication_sequence(log_sequence_.load());
  response->set_replicated_bytes(logged_bytes_.load(std::memory_order_relaxed));
  response->set_promotions(promotions_.load());
  response->set_min_clock(clock_.published_min());
  for (int64_t c : clock_.clocks()) response->add_worker_clocks(c);
  for (const auto& t : dense_) {
    auto* s = response->add_tables();
    s->set_name(t->name());
    s->set_kind(v1::DENSE);
    s->set_values(t->range().size());
    s->set_pushes(t->pushes());
    s->set_pulls(t->pulls());
    FillTraffic(t->name(), s);
  }
  for (const auto& t : sparse_) {
    auto* s = response->add_tables();
    s->set_name(t->name());
    s->set_kind(v1::SPARSE);
    s->set_rows(t->rows());
    s->set_max_rows(row_limits_[tables_.at(t->name()).index]);
    s->set_values(t->rows() * t->dim());
    s->set_pushes(t->pushes());
    s->set_pulls(t->pulls());
    FillTraffic(t->name(), s);
  }
  response->set_parked_pulls(clock_.parked());
  response->set_pulls_expired(clock_.expired());
  response->set_updates_applied(updates_applied_.load(std::memory_order_relaxed));
  response->set_workers_finished(clock_.workers_finished());
  response->set_restored_clock(restored_clock_.load());
  response->set_lost_clocks(lost_before_.load() + lost_here_.load());
  response->set_last_checkpoint_clock(last_checkpoint_clock_.load());
  if (last_checkpoint_clock_.load() >= 0) {
    response->set_last_checkpoint_age_s(
        absl::ToDoubleSeconds(absl::Now() - absl::FromUnixMillis(last_checkpoint_unix_ms_.load())));
  }
  response->set_checkpoints_written(checkpoints_written_.load());
  response->set_last_checkpoint_bytes(last_checkpoint_bytes_.load());
  response->set_last_checkpoint_seconds(last_checkpoint_us_.load() / 1e6);
  response->set_duplicate_pushes(duplicate_pushes_.load());
  for (uint64_t c : staleness_tracker_.histogram().Counts()) {
    response->add_push_staleness_buckets(c);
  }
  response->set_push_staleness_sum(static_cast<uint64_t>(staleness_tracker_.histogram().Sum()));
  response->set_push_staleness_unknown(staleness_tracker_.unknown());
  response->set_updates_published(staleness_tracker_.version());
  response->set_compensation_floats(staleness_tracker_.kept_floats());
  const absl::Time now = absl::Now();
  for (uint32_t w = 0; w < num_workers_; ++w) {
    response->add_worker_idle_s(
        absl::ToDoubleSeconds(now - absl::FromUnixMillis(workers_[w]->last_seen_ms.load())));
  }
  for (uint32_t w : clock_.Laggards()) response->add_laggards(w);
  const std::vector<bool> evicted = clock_.evicted();
  for (uint32_t w = 0; w < evicted.size(); ++w) {
    if (evicted[w]) response->add_evicted_workers(w);
  }
}

}  // namespace tessera
