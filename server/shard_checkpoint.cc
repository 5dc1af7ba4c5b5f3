// Shard's checkpoint half (declared in server/shard.h): its identity, the
// copies a checkpoint is made of (BSP cuts, Snapshot), and Restore. Kept
// apart from the request paths in shard.cc.
#include <cstring>
#include <limits>

#include "Eigen/Core"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "server/shard.h"

namespace tessera {
namespace {

// The planner's state as a checkpoint manifest and the plan log hold it.
void PlansToProto(const EpochPlanner::State& state,
                  google::protobuf::RepeatedPtrField<v1::EpochPlan>* plans,
                  google::protobuf::RepeatedField<double>* rates) {
  for (double r : state.rates) rates->Add(r);
  for (const auto& [epoch, shares] : state.plans) {
    v1::EpochPlan* p = plans->Add();
    p->set_epoch(epoch);
    for (uint32_t share : shares) p->add_shares(share);
  }
}

EpochPlanner::State PlansFromProto(const google::protobuf::RepeatedPtrField<v1::EpochPlan>& plans,
                                   const google::protobuf::RepeatedField<double>& rates) {
  EpochPlanner::State state;
  state.rates.assign(rates.begin(), rates.end());
  for (const v1::EpochPlan& p : plans) state.plans[p.epoch()].assign(p.shares().begin(), p.shares().end());
  return state;
}

}  // namespace

v1::CheckpointIdentity Shard::Identity() const {
  v1::CheckpointIdentity id;
  id.set_job(config_.name);
  id.set_shard_index(index_);
  id.set_num_shards(config_.num_servers());
  id.set_num_workers(num_workers_);
  id.set_optimizer(NameOf(config_.optimizer.type));
  id.set_optimizer_slots(static_cast<uint32_t>(optimizer_->num_slots()));
  id.set_aggregate(aggregate_);
  for (const v1::TableLayout& t : layout_) {
    // A table with an optimizer of its own says which (its slots differ).
    auto own = config_.table_optimizers.find(t.name());
    const std::string optimizer =
        own == config_.table_optimizers.end() ? "" : absl::StrCat(" (", NameOf(own->second.type), ")");
    id.add_tables(t.kind() == v1::DENSE
                      ? absl::StrCat(t.name(), " dense ", t.total_size(), " [", t.begin(), ",",
                                     t.end(), ")", optimizer)
                      : absl::StrCat(t.name(), " sparse dim ", t.dim(), optimizer));
  }
  return id;
}

void Shard::SetBspCuts(std::function<bool(int64_t)> want, CutSink sink) {
  if (config_.consistency.mode != ConsistencyMode::kBsp) return;
  want_cut_ = std::move(want);
  cut_sink_ = std::move(sink);
}

void Shard::SetPlanLog(std::function<void(const v1::EpochPlanLog&)> write) {
  planner_.SetOnNewPlan([this, write = std::move(write)](const EpochPlanner::State& state) {
    v1::EpochPlanLog log;
    *log.mutable_identity() = Identity();
    PlansToProto(state, log.mutable_epoch_plans(), log.mutable_worker_rates());
    write(log);
  });
}

absl::Status Shard::RestorePlanLog(const v1::EpochPlanLog& log) {
  return planner_.Merge(PlansFromProto(log.epoch_plans(), log.worker_rates()));
}

void Shard::Recycle(std::unique_ptr<ShardState> written) {
  // Only a dense table's buffer is reused (the same size at every cut); a
  // sparse table's would hold a copy of its rows until the next cut.
  for (size_t i = 0; i < written->tables.size(); ++i) {
    if (i < static_cast<size_t>(written->manifest.tables_size()) &&
        written->manifest.tables(i).sparse()) {
      written->tables[i] = ByteBuffer();
    }
  }
  absl::MutexLock lock(&spare_mu_);
  spare_ = std::move(written);
}

void Shard::NoteCheckpoint(int64_t clock, int64_t bytes, double seconds) {
  last_checkpoint_clock_.store(clock);
  last_checkpoint_bytes_.store(bytes);
  last_checkpoint_us_.store(static_cast<int64_t>(seconds * 1e6));
  last_checkpoint_unix_ms_.store(absl::ToUnixMillis(absl::Now()));
  checkpoints_written_.fetch_add(1);
}

std::unique_ptr<ShardState> Shard::CopyState(int64_t cut, std::vector<int64_t> clocks,
                                             const std::vector<bool>& finished, bool clamp) {
  auto state = std::make_unique<ShardState>();
  v1::CheckpointManifest& m = state->manifest;
  *m.mutable_identity() = Identity();
  // With `clamp`, every unfinished worker is recorded at the cut at most:
  // what it pushed past the cut is not in the values (it sits in the BSP
  // buffer), so it pushes that clock again.
  int64_t highest = 0;
  for (size_t w = 0; w < clocks.size(); ++w) {
    if (clamp && !finished[w] && clocks[w] > cut) clocks[w] = cut;
    highest = std::max(highest, clocks[w]);
  }
  // Every worker finished: min_clock is "infinite"; name the cut by the last clock.
  m.set_clock(cut == std::numeric_limits<int64_t>::max() ? highest : cut);
  for (size_t w = 0; w < clocks.size(); ++w) {
    m.add_worker_clocks(clocks[w]);
    m.add_worker_finished(finished[w]);
    // Unclamped, the open clock's applied pieces are in the values.
    if (!clamp) m.add_worker_pieces(workers_[w]->pieces_applied.load());
  }
  m.set_unix_ms(absl::ToUnixMillis(absl::Now()));
  m.set_lost_clocks(lost_before_.load() + lost_here_.load());
  m.set_log_sequence(log_sequence_.load());
  PlansToProto(planner_.Save(), m.mutable_epoch_plans(), m.mutable_worker_rates());
  std::unique_ptr<ShardState> spare;
  {
    absl::MutexLock lock(&spare_mu_);
    spare = std::move(spare_);
  }
  for (size_t i = 0; i < layout_.size(); ++i) {
    const v1::TableLayout& layout = layout_[i];
    const Resolved& r = tables_.at(layout.name());
    v1::CheckpointTable* t = m.add_tables();
    t->set_name(layout.name());
    if (r.dense) {
      const bool reuse = spare && i < spare->tables.size() &&
                         spare->tables[i].size() == r.dense->SnapshotBytes() &&
                         spare->tables[i].writable();
      ByteBuffer bytes = reuse ? std::move(spare->tables[i]) : ByteBuffer(r.dense->SnapshotBytes());
      r.dense->Snapshot(bytes.data(), t);
      state->tables.push_back(std::move(bytes));
    } else {
      ByteBuffer bytes;
      int64_t step = 0;
      const uint64_t n = r.sparse->Snapshot(
          [&bytes](uint64_t size) {
            bytes = ByteBuffer(size);
            return bytes.data();
          },
          &step);
      bytes.Shrink(n * (sizeof(uint64_t) + r.sparse->row_floats() * sizeof(float)));
      t->set_sparse(true);
      t->set_rows(n);
      t->set_step(step);
      state->tables.push_back(std::move(bytes));
    }
  }
  return state;
}

std::unique_ptr<ShardState> Shard::Snapshot() {
  // Every worker's pushes and advances wait (locks taken in rank order, the
  // only place more than one is held); then the BSP buffer's apply.
  std::vector<std::unique_ptr<absl::WriterMutexLock>> held;
  for (auto& slot : workers_) held.push_back(std::make_unique<absl::WriterMutexLock>(&slot->mu));
  // And no mutation is sent meanwhile (a plan's needs no worker's mutex).
  absl::MutexLock log_lock(&log_mu_);
  absl::MutexLock lock(&aggregate_mu_);
  // min_clock: with every worker's mutex held, every clock below it is
  // closed (BSP with aggregation: its buffer applied, and published, or
  // about to be once the standby holds it).
  const int64_t cut = clock_.min_clock();
  if (parts_ != nullptr && parts_->AppliedBeforeClose(cut)) return nullptr;
  return CopyState(cut, clock_.clocks(), clock_.finished(), /*clamp=*/aggregate_);
}

absl::Status Shard::CheckManifest(const v1::CheckpointManifest& m) const {
  auto bad = [](auto&&... what) { return absl::InvalidArgumentError(absl::StrCat(what...)); };
  if (m.tables_size() != static_cast<int>(layout_.size()) ||
      m.worker_clocks_size() != static_cast<int>(num_workers_) ||
      m.worker_finished_size() != static_cast<int>(num_workers_)) {
    return bad("checkpoint holds ", m.tables_size(), " tables and ", m.worker_clocks_size(),
               " worker clocks; this shard has ", layout_.size(), " tables and ", num_workers_,
               " workers");
  }
  if (m.worker_pieces_size() != 0 && m.worker_pieces_size() != static_cast<int>(num_workers_)) {
    return bad("checkpoint holds ", m.worker_pieces_size(), " workers' pieces; this shard has ",
               num_workers_, " workers");
  }
  auto clock_ok = [](int64_t c) { return c >= 0 && c <= kMaxClock; };
  // An optimizer step counts updates: a clock's worth per worker at most.
  const int64_t max_step = kMaxClock * std::max<int64_t>(num_workers_, 1);
  for (size_t i = 0; i < layout_.size(); ++i) {
    const v1::CheckpointTable& t = m.tables(static_cast<int>(i));
    const Resolved& r = tables_.at(layout_[i].name());
    if (t.name() != layout_[i].name() || t.sparse() != (r.sparse != nullptr)) {
      return bad("checkpoint table ", i, " is '", t.name(), "', not '", layout_[i].name(), "'");
    }
    if (r.dense) {
      TESSERA_RETURN_IF_ERROR(
          r.dense->CheckSnapshot(t, t.bytes(), num_workers_, max_step, kMaxClock));
      continue;
    }
    // Divided, not multiplied: a row count near 2^64 cannot wrap the check.
    const uint64_t row_bytes = r.sparse->row_floats() * sizeof(float) + sizeof(uint64_t);
    if (t.bytes() % row_bytes != 0 || t.bytes() / row_bytes != t.rows()) {
      return bad("checkpoint table '", t.name(), "' holds ", t.bytes(), " bytes for ", t.rows(),
                 " rows of ", row_bytes, " bytes");
    }
    const uint64_t limit = row_limits_[i];
    if (t.rows() > limit) {
      return bad("checkpoint table '", t.name(), "' holds ", t.rows(),
                 " rows; server.max_sparse_rows allows ", limit, " on this shard");
    }
    if (t.step() < 0 || t.step() > max_step) {
      return bad("checkpoint table '", t.name(), "': step ", t.step(), " is outside [0, ",
                 max_step, "]");
    }
  }
  if (!clock_ok(m.clock()) || !clock_ok(m.lost_clocks())) {
    return bad("checkpoint clock ", m.clock(), " or lost clocks ", m.lost_clocks(),
               " is outside [0, ", kMaxClock, "]");
  }
  for (int64_t c : m.worker_clocks()) {
    if (!clock_ok(c)) return bad("checkpoint worker clock ", c, " is outside [0, ", kMaxClock, "]");
  }
  // A few mutations a clock at most (a close, a worker's registration,
  // finish, eviction, plan), so far from where numbering could wrap.
  const uint64_t max_sequence = uint64_t{kMaxClock} * (4 * uint64_t{num_workers_} + 1);
  if (m.log_sequence() > max_sequence) {
    return bad("checkpoint log_sequence ", m.log_sequence(), " is outside [0, ", max_sequence, "]");
  }
  for (const v1::EpochPlan& p : m.epoch_plans()) {
    if (p.epoch() < EpochPlanner::kCalibration || p.epoch() >= config_.training.epochs) {
      return bad("checkpoint plan of epoch ", p.epoch(), ": the job has training.epochs ",
                 config_.training.epochs);
    }
  }
  return absl::OkStatus();
}

absl::Status Shard::Restore(const ShardState& state) {
  if (state.tables.size() != static_cast<size_t>(state.manifest.tables_size())) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint carries ", state.tables.size(),
                                                   " tables' data for ",
                                                   state.manifest.tables_size(), " tables"));
  }
  // The manifest as checked, with the sizes the data has (a snapshot's
  // manifest has none until the store writes it).
  v1::CheckpointManifest m = state.manifest;
  for (size_t i = 0; i < state.tables.size(); ++i) {
    m.mutable_tables(static_cast<int>(i))->set_bytes(state.tables[i].size());
  }
  TESSERA_RETURN_IF_ERROR(CheckManifest(m));
  // Every float finite (a NaN would be served to every worker).
  for (size_t i = 0; i < layout_.size(); ++i) {
    const v1::CheckpointTable& t = m.tables(static_cast<int>(i));
    const ByteBuffer& bytes = state.tables[i];
    const uint64_t skip = t.sparse() ? t.rows() * sizeof(uint64_t) : 0;  // the keys
    const uint64_t floats = (bytes.size() - skip) / sizeof(float);
    std::vector<float> block(std::min<uint64_t>(floats, 1 << 16));
    for (uint64_t done = 0; done < floats; done += block.size()) {
      // Copied out: the mapping need not be aligned for floats.
      const uint64_t n = std::min<uint64_t>(block.size(), floats - done);
      std::memcpy(block.data(), bytes.data() + skip + done * sizeof(float), n * sizeof(float));
      if (!Eigen::Map<const Eigen::ArrayXf>(block.data(), static_cast<Eigen::Index>(n))
               .allFinite()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "checkpoint table '", t.name(), "' holds a NaN or Inf value or optimizer slot"));
      }
    }
  }
  // Checkpoints written before plans were kept have no rates: nothing to
  // load. The planner checks the plans before it takes any.
  if (m.worker_rates_size() > 0) {
    TESSERA_RETURN_IF_ERROR(planner_.Load(PlansFromProto(m.epoch_plans(), m.worker_rates())));
  }
  for (size_t i = 0; i < layout_.size(); ++i) {
    const v1::CheckpointTable& t = m.tables(static_cast<int>(i));
    const ByteBuffer& bytes = state.tables[i];
    const Resolved& r = tables_.at(layout_[i].name());
    if (r.dense) {
      r.dense->Restore(bytes.data(), bytes.size(), t);  // checked by CheckManifest
      continue;
    }
    TESSERA_RETURN_IF_ERROR(r.sparse->Restore(
        bytes.data(), bytes.data() + t.rows() * sizeof(uint64_t), t.rows(), t.step()));
  }
  std::vector<int64_t> clocks(m.worker_clocks().begin(), m.worker_clocks().end());
  std::vector<bool> finished(m.worker_finished().begin(), m.worker_finished().end());
  clock_.Restore(clocks, finished, m.clock());
  for (uint32_t w = 0; w < num_workers_; ++w) {
    workers_[w]->pieces_applied.store(
        m.worker_pieces_size() > 0 ? m.worker_pieces(static_cast<int>(w)) : 0);
  }
  restored_clock_.store(m.clock());
  lost_before_.store(m.lost_clocks());
  // A standby follows on from the last mutation in the state; a primary
  // restored from it numbers on from there.
  followed_.store(m.log_sequence());
  log_sequence_.store(m.log_sequence());
  return absl::OkStatus();
}

}  // namespace tessera
