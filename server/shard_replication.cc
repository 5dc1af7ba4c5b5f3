// Shard's replication (docs/DESIGN.md "Replication"): the primary's mutation
// log, what a call's answer waits for (Hold), and the standby's Follow. Split
// from shard.cc; the changes themselves are made by Shard::Apply there.
#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/denormal.h"
#include "common/status.h"
#include "server/shard.h"

namespace tessera {

void Shard::LogClose(int64_t new_min, uint32_t pushers) {
  v1::Mutation close;
  v1::Mutation::CloseClock* c = close.mutable_close_clock();
  c->set_min_clock(new_min);
  c->set_pushers(pushers);
  for (const auto& [name, r] : tables_) {
    v1::TableAggregate aggregate;
    aggregate.set_table(r.index);
    if (r.dense) {
      r.dense->ExportAccumulated(&aggregate);
    } else {
      r.sparse->ExportCreated(&aggregate);
      r.sparse->ExportAccumulated(&aggregate);
    }
    if (aggregate.chunks_size() > 0 || aggregate.keys_size() > 0 ||
        aggregate.created_keys_size() > 0) {
      *c->add_aggregates() = std::move(aggregate);
    }
  }
  for (int64_t clock : clock_.clocks()) c->add_clocks(clock);
  for (bool finished : clock_.finished()) c->add_finished(finished);
  Log(std::move(close));
}

void Shard::LogPush(const Mutation& m, v1::Mutation::Push* out) const {
  out->set_worker(m.worker);
  out->set_clock(m.clock);
  out->set_piece_bit(m.piece_bit);
  out->set_staleness(m.staleness.value_or(-1));
  // Copied into reserved room (Resize would zero it first: as long as the copy).
  const auto append = [](google::protobuf::RepeatedField<float>* to, const float* from,
                         uint64_t n) {
    if (n == 0) return;
    to->Reserve(to->size() + static_cast<int>(n));
    std::memcpy(to->AddNAlreadyReserved(static_cast<int>(n)), from, n * sizeof(float));
  };
  uint64_t floats = 0;
  for (const absl::Span<const float>& grad : *m.grads) floats += grad.size();
  out->mutable_grads()->Reserve(static_cast<int>(floats));
  for (size_t i = 0; i < m.slices->size(); ++i) {
    const Resolved& r = (*m.slices)[i];
    v1::PushedSlice* slice = out->add_slices();
    slice->set_table(r.index);
    if (r.dense) {
      slice->set_offset(r.offset);
      slice->set_length(r.count);
    } else {
      slice->mutable_keys()->Add(r.keys.begin(), r.keys.end());
    }
    append(out->mutable_grads(), (*m.grads)[i].data(), (*m.grads)[i].size());
    if ((*m.reads)[i] != nullptr) {
      out->add_read_slices(static_cast<uint32_t>(i));
      append(out->mutable_read(), (*m.reads)[i], r.count);
    }
  }
}

absl::Status Shard::FollowPush(uint64_t sequence, const v1::Mutation::Push& p) {
  const auto bad = [&](auto&&... what) {
    return absl::InvalidArgumentError(absl::StrCat("mutation ", sequence, ": a push ", what...));
  };
  if (aggregate_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "mutation ", sequence, " is a worker's push, which a shard that aggregates (BSP) takes ",
        "only in a clock's close"));
  }
  if (p.worker() >= num_workers_) return bad("of worker ", p.worker(), " of ", num_workers_);
  if (p.clock() < 0 || p.clock() > kMaxClock) {
    return bad("of clock ", p.clock(), ", outside [0, ", kMaxClock, "]");
  }
  if (p.piece_bit() & (p.piece_bit() - 1)) {
    return bad("with piece bits ", p.piece_bit(), ": expected one bit, or none");
  }
  if (p.staleness() < -1) return bad("with staleness ", p.staleness());
  // Each slice resolved as a worker's would be (ranges, key order and owner);
  // a sparse one's keys stay in `named` while the push is applied.
  std::vector<v1::Slice> named(p.slices_size());
  std::vector<Resolved> slices;
  slices.reserve(p.slices_size());
  uint64_t floats = 0;
  for (const v1::PushedSlice& pushed : p.slices()) {
    if (pushed.table() >= layout_.size()) return bad("to table ", pushed.table());
    v1::Slice& slice = named[slices.size()];
    slice.set_table(layout_[pushed.table()].name());
    slice.set_offset(pushed.offset());
    slice.set_length(pushed.length());
    slice.mutable_keys()->assign(reinterpret_cast<const char*>(pushed.keys().data()),
                                 pushed.keys_size() * sizeof(uint64_t));
    absl::StatusOr<Resolved> r = Resolve(slice);
    if (!r.ok()) return bad("that does not fit: ", r.status().message());
    floats += r->count;
    slices.push_back(*r);
  }
  if (floats != static_cast<uint64_t>(p.grads_size())) {
    return bad("of ", p.grads_size(), " gradients for slices of ", floats, " floats");
  }
  std::vector<absl::Span<const float>> grads;
  std::vector<const float*> reads(slices.size(), nullptr);
  const float* next = p.grads().data();
  for (const Resolved& r : slices) {
    grads.emplace_back(next, r.count);
    next += r.count;
  }
  const float* read = p.read().data();
  uint64_t read_floats = 0;
  for (int i = 0; i < p.read_slices_size(); ++i) {
    const uint32_t at = p.read_slices(i);
    if (at >= slices.size() || slices[at].dense == nullptr ||
        (i > 0 && at <= p.read_slices(i - 1))) {
      return bad("with read values for slice ", at, " of ", slices.size(),
                 " (dense ones only, increasing)");
    }
    reads[at] = read + read_floats;
    read_floats += slices[at].count;
  }
  if (read_floats != static_cast<uint64_t>(p.read_size())) {
    return bad("with ", p.read_size(), " read values for slices of ", read_floats, " floats");
  }
  absl::ReaderMutexLock lock(&workers_[p.worker()]->mu);
  if (clock_.WorkerClock(p.worker()) != p.clock()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "mutation ", sequence, ": a push of worker ", p.worker(), " at clock ", p.clock(),
        ", which is at clock ", clock_.WorkerClock(p.worker()), " here"));
  }
  Mutation m = Mutation::Of(Mutation::Kind::kPush, p.worker(), p.clock());
  m.piece_bit = p.piece_bit();
  m.slices = &slices;
  m.grads = &grads;
  if (p.staleness() >= 0) m.staleness = p.staleness();
  m.reads = &reads;
  return Apply(m, /*hold=*/nullptr).status();
}

void Shard::Log(v1::Mutation m) {
  if (!aggregate_ && config_.server.pull_creates_rows) {
    for (const auto& [name, r] : tables_) {
      if (!r.sparse) continue;
      v1::TableAggregate created;
      created.set_table(r.index);
      r.sparse->ExportCreated(&created);
      if (created.created_keys_size() > 0) *m.add_created() = std::move(created);
    }
  }
  m.set_sequence(log_sequence_.fetch_add(1) + 1);
  m.set_term(term_.load());
  logged_bytes_.fetch_add(m.ByteSizeLong(), std::memory_order_relaxed);
  mutation_log_.append(std::move(m));
}

void Shard::HoldAll(Hold* hold) {
  if (!logging_.load()) return;
  absl::MutexLock lock(&log_mu_);
  hold->sequence = std::max(hold->sequence, log_sequence_.load());
  hold->when_held = mutation_log_.when_held;
}

void Shard::WhenHeld(Hold hold, std::function<void()> done) {
  if (hold.sequence == 0 || !hold.when_held) {
    if (hold.publish >= 0) clock_.Publish(hold.publish);
    done();
    return;
  }
  const int64_t publish = hold.publish;
  hold.when_held(hold.sequence, [this, publish, done = std::move(done)] {
    if (publish >= 0) clock_.Publish(publish);
    done();
  });
}

Shard::CallHold::~CallHold() {
  if (given_ != nullptr) return;
  if (!own_.waits()) return;
  // The caller waits: bounded by the log (a ReplicaLink answers within
  // server.replication_timeout_s of a send, or cuts itself).
  absl::Notification held;
  shard_->WhenHeld(std::move(own_), [&held] { held.Notify(); });
  held.WaitForNotification();
}

absl::Status Shard::SetMutationLog(MutationLog log) {
  if (config_.server.pull_creates_rows) {
    for (auto& table : sparse_) table->RecordCreatedRows();
  }
  mutation_log_ = std::move(log);
  logging_.store(true);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ShardState>> Shard::SnapshotAndLog(MutationLog log) {
  if (standby()) {
    return absl::FailedPreconditionError(
        absl::StrCat("shard ", index_, " here is a standby: a standby joins its primary"));
  }
  // As Snapshot: every worker's changes wait, then the log, then the buffer.
  std::vector<std::unique_ptr<absl::WriterMutexLock>> held;
  for (auto& slot : workers_) held.push_back(std::make_unique<absl::WriterMutexLock>(&slot->mu));
  absl::MutexLock log_lock(&log_mu_);
  // Rows pulls create from here on go to the next close; those created
  // before are in the copy (a table's stripe lock orders the two).
  if (config_.server.pull_creates_rows) {
    for (auto& table : sparse_) table->RecordCreatedRows();
  }
  mutation_log_ = std::move(log);
  logging_.store(true);
  absl::MutexLock lock(&aggregate_mu_);
  // As Snapshot: under BSP with aggregation the open clock's pushes are in
  // the buffer, not the copy; otherwise every applied push is in it.
  const int64_t cut = clock_.min_clock();  // as Snapshot's
  return CopyState(cut, clock_.clocks(), clock_.finished(), /*clamp=*/aggregate_);
}

absl::Status Shard::Follow(const v1::Mutation& m) {
  // The optimizer runs here, as it does in the primary's calls: with
  // denormals flushed, or the standby's values part from the primary's.
  ScopedFlushDenormal flush;
  if (m.sequence() == 0) {
    return absl::InvalidArgumentError("a mutation without its number (sequence 0)");
  }
  // One at a time: a primary's retry may arrive while its first try is
  // still being applied here, and must find it applied.
  absl::MutexLock lock(&follow_mu_);
  last_followed_ns_.store(absl::ToUnixNanos(absl::Now()));
  if (!standby()) {  // a primary, or promoted (perhaps while this call waited)
    return absl::FailedPreconditionError(absl::StrCat(
        "shard ", index_, " here is primary now (term ", term_.load(),
        "): it takes no other shard's changes, and the term of mutation ", m.sequence(), " (",
        m.term(), ") is over"));
  }
  if (m.term() < term_.load()) {
    return absl::FailedPreconditionError(
        absl::StrCat("mutation ", m.sequence(), " is of term ", m.term(), ", which is over: this ",
                     "standby follows term ", term_.load()));
  }
  if (m.sequence() <= followed_.load()) return absl::OkStatus();  // a resend: applied once
  if (m.sequence() != followed_.load() + 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("mutation ", m.sequence(), " after ", followed_.load(), ": ",
                     m.sequence() - followed_.load() - 1,
                     " missing; the standby must start again from its primary's state"));
  }
  TESSERA_RETURN_IF_ERROR(FollowNext(m));
  followed_.store(m.sequence());
  log_sequence_.store(m.sequence());  // what a copy of this standby's state holds
  term_.store(m.term());
  return absl::OkStatus();
}

absl::Status Shard::Promote(int64_t term) {
  absl::MutexLock lock(&follow_mu_);
  if (!standby()) {
    return absl::FailedPreconditionError(
        absl::StrCat("shard ", index_, " here is not a standby: nothing to promote"));
  }
  if (term <= term_.load()) {
    return absl::FailedPreconditionError(absl::StrCat("term ", term, " is not newer than term ",
                                                      term_.load(), ", which this standby followed"));
  }
  term_.store(term);
  // The log's numbers go on from the last mutation held.
  log_sequence_.store(followed_.load());
  promotions_.fetch_add(1);
  standby_.store(false);
  return absl::OkStatus();
}

absl::Status Shard::FollowNext(const v1::Mutation& m) {
  const auto worker_of = [&](uint32_t w) -> absl::Status {
    if (w >= num_workers_) {
      return absl::InvalidArgumentError(
          absl::StrCat("mutation ", m.sequence(), ": worker ", w, " of ", num_workers_));
    }
    return absl::OkStatus();
  };
  // Rows pulls created before the change (without aggregation).
  for (const v1::TableAggregate& created : m.created()) {
    if (created.table() >= layout_.size() ||
        tables_.at(layout_[created.table()].name()).sparse == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "mutation ", m.sequence(), ": rows created in table ", created.table(),
          ", which is not a sparse table of this job"));
    }
  }
  for (const v1::TableAggregate& created : m.created()) {
    TESSERA_RETURN_IF_ERROR(
        tables_.at(layout_[created.table()].name()).sparse->ImportCreated(created));
  }
  Mutation change;
  switch (m.change_case()) {
    case v1::Mutation::kPush:
      return FollowPush(m.sequence(), m.push());
    case v1::Mutation::kAdvance: {
      TESSERA_RETURN_IF_ERROR(worker_of(m.advance().worker()));
      if (aggregate_) {
        return absl::FailedPreconditionError(absl::StrCat(
            "mutation ", m.sequence(), " advances a worker's clock, which a shard that ",
            "aggregates (BSP) takes only in a clock's close"));
      }
      absl::MutexLock lock(&workers_[m.advance().worker()]->mu);
      TESSERA_RETURN_IF_ERROR(CheckAdvance(m.advance().worker(), m.advance().clock()));
      return Apply(Mutation::Of(Mutation::Kind::kAdvance, m.advance().worker(),
                                m.advance().clock()),
                   /*hold=*/nullptr)
          .status();
    }
    case v1::Mutation::kCloseClock: {
      const v1::Mutation::CloseClock& close = m.close_clock();
      if (!aggregate_) {
        return absl::FailedPreconditionError("a clock's close on a shard that does not aggregate");
      }
      // Every worker finished: min_clock is past every clock.
      const bool all_finished =
          std::all_of(close.finished().begin(), close.finished().end(), [](bool f) { return f; });
      const bool min_fits =
          (close.min_clock() >= 0 && close.min_clock() <= kMaxClock) ||
          (all_finished && close.min_clock() == std::numeric_limits<int64_t>::max());
      const bool clocks_fit = std::all_of(close.clocks().begin(), close.clocks().end(),
                                          [](int64_t c) { return c >= -1 && c <= kMaxClock; });
      if (close.clocks_size() != static_cast<int>(num_workers_) ||
          close.finished_size() != static_cast<int>(num_workers_) || !min_fits || !clocks_fit ||
          close.pushers() > num_workers_) {
        return absl::InvalidArgumentError(absl::StrCat(
            "mutation ", m.sequence(), ": a close of clock ", close.min_clock(), " with ",
            close.clocks_size(), " clocks (each in [-1, ", kMaxClock, "]) and ", close.pushers(),
            " pushers for ", num_workers_, " workers"));
      }
      std::vector<const Resolved*> tables;
      for (const v1::TableAggregate& aggregate : close.aggregates()) {
        if (aggregate.table() >= layout_.size()) {
          return absl::InvalidArgumentError(
              absl::StrCat("mutation ", m.sequence(), ": table ", aggregate.table()));
        }
        tables.push_back(&tables_.at(layout_[aggregate.table()].name()));
      }
      // Every table's part checked before any changes.
      for (size_t i = 0; i < tables.size(); ++i) {
        const v1::TableAggregate& aggregate = close.aggregates(static_cast<int>(i));
        TESSERA_RETURN_IF_ERROR(tables[i]->dense ? tables[i]->dense->CheckAggregate(aggregate)
                                                 : tables[i]->sparse->CheckAggregate(aggregate));
      }
      absl::MutexLock lock(&aggregate_mu_);
      for (size_t i = 0; i < tables.size(); ++i) {
        const v1::TableAggregate& aggregate = close.aggregates(static_cast<int>(i));
        if (tables[i]->dense) {
          TESSERA_RETURN_IF_ERROR(tables[i]->dense->ImportAccumulated(aggregate));
        } else {
          TESSERA_RETURN_IF_ERROR(tables[i]->sparse->ImportCreated(aggregate));
          TESSERA_RETURN_IF_ERROR(tables[i]->sparse->ImportAccumulated(aggregate));
        }
      }
      ApplyAggregate(close.pushers());
      clock_.Restore({close.clocks().begin(), close.clocks().end()},
                     {close.finished().begin(), close.finished().end()}, close.min_clock());
      return absl::OkStatus();
    }
    case v1::Mutation::kAdopt:
      TESSERA_RETURN_IF_ERROR(worker_of(m.adopt().worker()));
      if (m.adopt().clock() < 0 || m.adopt().clock() > kMaxClock) {
        return absl::InvalidArgumentError(absl::StrCat("mutation ", m.sequence(), ": clock ",
                                                       m.adopt().clock(), " is outside [0, ",
                                                       kMaxClock, "]"));
      }
      change = Mutation::Of(Mutation::Kind::kAdopt, m.adopt().worker(), m.adopt().clock());
      break;
    case v1::Mutation::kFinish:
      TESSERA_RETURN_IF_ERROR(worker_of(m.finish().worker()));
      change = Mutation::Of(Mutation::Kind::kFinish, m.finish().worker());
      break;
    case v1::Mutation::kEvict:
      TESSERA_RETURN_IF_ERROR(worker_of(m.evict().worker()));
      change = Mutation::Of(m.evict().rejoin() ? Mutation::Kind::kRejoin : Mutation::Kind::kEvict,
                            m.evict().worker());
      break;
    case v1::Mutation::kPlan:
      TESSERA_RETURN_IF_ERROR(worker_of(m.plan().worker()));
      TESSERA_RETURN_IF_ERROR(CheckPlan(m.plan().epoch(), m.plan().rate()));
      change = Mutation::Of(Mutation::Kind::kPlan, m.plan().worker());
      change.epoch = m.plan().epoch();
      change.rate = m.plan().rate();
      break;
    case v1::Mutation::CHANGE_NOT_SET:
      return absl::InvalidArgumentError(absl::StrCat("mutation ", m.sequence(), " is empty"));
  }
  if (change.kind == Mutation::Kind::kPlan) return Apply(change, /*hold=*/nullptr).status();
  absl::MutexLock lock(&workers_[change.worker]->mu);
  return Apply(change, /*hold=*/nullptr).status();
}

}  // namespace tessera
