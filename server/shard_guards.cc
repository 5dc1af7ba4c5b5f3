// Shard: the guards a request passes before it changes anything — whose rank
// it is (session secrets, rank leases) and whether its update is allowed (row
// limits, non-finite results). Apart from the request paths in shard.cc; see
// shard.h and docs/DESIGN.md "Hostile input and security".
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "server/shard.h"
#include "spdlog/spdlog.h"

namespace tessera {
namespace {

// A session secret as two words; false when it is not kSessionBytes long.
constexpr size_t kSessionBytes = 16;
bool SessionWords(const std::string& session, uint64_t words[2]) {
  if (session.size() != kSessionBytes) return false;
  std::memcpy(words, session.data(), kSessionBytes);
  return words[0] != 0 || words[1] != 0;  // all zeros means "none"
}

}  // namespace

absl::Status Shard::CheckServing() const {
  if (!standby_.load(std::memory_order_relaxed)) return absl::OkStatus();
  refused_calls_.fetch_add(1, std::memory_order_relaxed);
  return absl::UnavailableError(absl::StrCat(
      "shard ", index_, " here is a standby: it follows its primary and serves no worker"));
}

absl::Status Shard::CheckCaller(uint32_t worker, const std::string& session) const {
  TESSERA_RETURN_IF_ERROR(CheckServing());
  if (worker >= num_workers_) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker rank ", worker, " is not below cluster.workers (", num_workers_, ")"));
  }
  if (!clock_.IsRegistered(worker)) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", worker, " has not registered with shard ", index_));
  }
  uint64_t words[2];
  if (!SessionWords(session, words)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "worker ", worker, ": the call carries no session (expected the ", kSessionBytes,
        " non-zero bytes its Register carried)"));
  }
  // A daemon that took the shard over from a copy (a joiner, docs/DESIGN.md
  // "Failover") knows the worker's clock but not its session, which no copy
  // carries: the worker registers again (FAILED_PRECONDITION, which it
  // recovers from), and its Register sets the session.
  if (workers_[worker]->session[0].load(std::memory_order_acquire) == 0 &&
      workers_[worker]->session[1].load(std::memory_order_acquire) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", worker, " has not registered with shard ", index_,
        " since it took the shard over: register again"));
  }
  // Word by word without an early exit on the first: the time taken says
  // nothing about how much of a guess was right.
  const uint64_t diff = (words[0] ^ workers_[worker]->session[0].load(std::memory_order_acquire)) |
                        (words[1] ^ workers_[worker]->session[1].load(std::memory_order_acquire));
  if (diff != 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "worker rank ", worker, " is held by another registration on shard ", index_,
        " (this process's session is not the holder's: a second process with rank ", worker,
        ", or this one was replaced after it was silent for security.rank_lease_s)"));
  }
  return absl::OkStatus();
}

absl::Status Shard::TakeRank(uint32_t worker, const std::string& session, WorkerMemory&) {
  uint64_t words[2];
  if (!SessionWords(session, words)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Register of worker ", worker, ": session of ", session.size(),
                     " bytes: expected ", kSessionBytes, " random bytes, not all zero"));
  }
  const uint64_t held[2] = {workers_[worker]->session[0].load(), workers_[worker]->session[1].load()};
  const bool unowned = held[0] == 0 && held[1] == 0;
  if (!unowned && (held[0] != words[0] || held[1] != words[1])) {
    const double silent_s = absl::ToDoubleSeconds(
        absl::Now() - absl::FromUnixMillis(workers_[worker]->last_seen_ms.load()));
    const int32_t parked = workers_[worker]->pulls_in_flight.load();
    const double lease = config_.security.rank_lease_s;
    if (parked > 0 || !(silent_s >= lease)) {
      return absl::AlreadyExistsError(absl::StrCat(
          "worker rank ", worker, " is held by another process on shard ", index_, " (last call ",
          absl::StrFormat("%.1f", silent_s), " s ago, ", parked,
          " pull(s) waiting); two workers with one rank? ",
          std::isinf(lease)
              ? "A rank passes only to its holder's session (security.session_file: tessera run "
                "gives a restarted worker its predecessor's); set security.rank_lease_s to let "
                "another process take a rank whose holder has been silent that long"
              : absl::StrCat("A restarted worker is let in once the old one has been silent for "
                             "security.rank_lease_s (", lease, " s)")));
    }
    spdlog::warn("worker rank {} passes to a new registration: its holder has been silent for "
                 "{:.1f} s (security.rank_lease_s = {}); a restarted worker",
                 worker, silent_s, config_.security.rank_lease_s);
  }
  workers_[worker]->session[0].store(words[0], std::memory_order_release);
  workers_[worker]->session[1].store(words[1], std::memory_order_release);
  return absl::OkStatus();
}

absl::Status Shard::CheckRowLimit(const std::vector<Resolved>& slices) const {
  for (const Resolved& r : slices) {
    if (r.sparse == nullptr || r.keys.empty()) continue;
    const uint64_t limit = row_limits_[r.index];
    const uint64_t rows = r.sparse->approximate_rows();
    if (rows + r.keys.size() <= limit) continue;  // cannot pass it, whatever is missing
    const uint64_t missing = r.sparse->CountMissing(r.keys);
    if (rows + missing > limit) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "table '", r.sparse->name(), "' holds ", rows, " rows on shard ", index_, "; ",
          missing, " new key(s) would pass server.max_sparse_rows (", limit, ")"));
    }
  }
  return absl::OkStatus();
}

namespace {

// Gradients no larger than this cannot make a finite value or slot
// non-finite in one update of any of the optimizers (lr <= 1e6; a BSP clock
// sums at most 4096 of them, 4.1e18, whose square is still finite), nor over
// any number of updates a job could make: each moves a value by at most
// ~1e21 of the 3.4e38 a float holds. Larger ones get the exact check.
constexpr float kSafeGradient = 1e15f;

}  // namespace

absl::Status Shard::CheckUpdateFinite(const v1::PushRequest& request,
                                      const std::vector<absl::Span<const float>>& grads,
                                      const std::vector<float>& max_abs,
                                      const std::vector<Resolved>& slices) const {
  const double max_value = config_.server.max_parameter_abs;
  if (!config_.server.reject_nonfinite && max_value == 0) return absl::OkStatus();
  const float bound =
      max_value > 0 ? static_cast<float>(std::min<double>(max_value, std::numeric_limits<float>::max()))
                    : std::numeric_limits<float>::max();
  for (size_t i = 0; i < slices.size(); ++i) {
    const Resolved& r = slices[i];
    const OptimizerConfig& o = config_.OptimizerFor(request.slices(i).table());
    // One update moves a value by about lr x |g| (momentum, Adagrad and
    // Adam by less or a bounded multiple; a BSP clock sums every worker's).
    const double move = double(o.lr) * max_abs[i] * (aggregate_ ? num_workers_ : 1);
    const bool could_overflow = config_.server.reject_nonfinite && max_abs[i] > kSafeGradient;
    const bool could_pass_bound = max_value > 0 && move >= 1.0;
    if (!could_overflow && !could_pass_bound) continue;  // no optimizer pass needed
    std::optional<uint64_t> bad =
        r.dense ? r.dense->FirstNonFinite(r.offset, grads[i], 1.0f, aggregate_, bound)
                : r.sparse->FirstNonFinite(r.keys, grads[i], 1.0f, aggregate_, bound);
    if (!bad) continue;
    return absl::InvalidArgumentError(absl::StrCat(
        "table '", request.slices(i).table(), "': this update would make ",
        r.dense ? "value " : "the row of key ", *bad,
        " or its optimizer state NaN or Inf, or the value larger than server.max_parameter_abs (",
        max_value, ") (gradients too large for ", NameOf(o.type), " at lr ", o.lr,
        "); refused, nothing changed (server.reject_nonfinite; server.max_gradient_abs bounds "
        "gradients)"));
  }
  return absl::OkStatus();
}

}  // namespace tessera
