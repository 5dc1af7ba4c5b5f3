// ShardTransport: how a worker's calls reach one shard. The worker's
// protocol (worker/sharded_ps_client.h: connect rounds, the fused pull, the
// min clock, staleness, failover and the held push) is written once over
// this interface; a transport only carries a call there and back:
//
//   GrpcShardTransport (worker/grpc_transport.h)  a shard's daemons over gRPC,
//       one HTTP/2 connection per lane, the primary's address then the standby's;
//   LocalShardTransport (worker/local_ps_client.h)  Shard objects in this
//       process (tests, `tessera-worker --standalone`), a primary and
//       optionally a standby.
//
// Every call is asynchronous: it starts, and `done` runs exactly once, on the
// calling thread (the call finished at once) or on a transport thread (it
// finished later). Request and response must stay valid until then, and so
// must the ShardCall that carries the call's deadline and its cancellation.
//
// Threading: one caller at a time starts calls and switches addresses (the
// client's); `done` and ShardCall::Cancel may run on any thread.
#ifndef TESSERA_WORKER_SHARD_TRANSPORT_H_
#define TESSERA_WORKER_SHARD_TRANSPORT_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/tessera.pb.h"

namespace tessera {

// One call in flight: its deadline, and the way to give up on it.
class ShardCall {
 public:
  // `wait_for_ready`: wait for a connection to come up until the deadline
  // (a shard still starting) instead of failing at once when there is none.
  explicit ShardCall(absl::Time deadline, bool wait_for_ready = false)
      : deadline_(deadline), wait_for_ready_(wait_for_ready) {}
  ShardCall(const ShardCall&) = delete;
  ShardCall& operator=(const ShardCall&) = delete;

  absl::Time deadline() const { return deadline_; }
  bool wait_for_ready() const { return wait_for_ready_; }

  // Asks the transport to end the call soon; it then answers CANCELLED (or
  // whatever it had already). Any thread, any time, more than once; before
  // the call starts, the call is cancelled as it starts.
  void Cancel();

  // For transports: how to cancel this call once it is in flight (run at
  // once when Cancel came first), and state that must live as long as the
  // call (a gRPC ClientContext).
  void SetCancel(std::function<void()> cancel);
  std::shared_ptr<void> state;

 private:
  const absl::Time deadline_;
  const bool wait_for_ready_;
  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> cancel_ ABSL_GUARDED_BY(mu_);
};

class ShardTransport {
 public:
  using Done = std::function<void(absl::Status)>;
  virtual ~ShardTransport() = default;

  // The daemon calls go to now, as errors name it ("host:port").
  virtual const std::string& address() const = 0;
  // Failover: turn to the shard's other daemon (primary <-> standby). False
  // when the shard has only one.
  virtual bool NextAddress() = 0;
  // How many daemons the shard has: 2 with a standby, else 1.
  virtual size_t daemons() const = 0;
  // How many calls may travel side by side (connections); lane < lanes().
  virtual size_t lanes() const = 0;
  // Whether the shard may map a shared memory segment this worker offers
  // (a daemon that may be on this host).
  virtual bool offers_shared_memory() const = 0;

  virtual void Register(size_t lane, ShardCall* call, const v1::RegisterRequest* request,
                        v1::RegisterResponse* response, Done done) = 0;
  virtual void Pull(size_t lane, ShardCall* call, const v1::PullRequest* request,
                    v1::PullResponse* response, Done done) = 0;
  virtual void Push(size_t lane, ShardCall* call, const v1::PushRequest* request,
                    v1::PushResponse* response, Done done) = 0;
  virtual void Clock(size_t lane, ShardCall* call, const v1::ClockRequest* request,
                     v1::ClockResponse* response, Done done) = 0;
  virtual void Finish(size_t lane, ShardCall* call, const v1::FinishRequest* request,
                      v1::FinishResponse* response, Done done) = 0;
  virtual void Stats(size_t lane, ShardCall* call, const v1::StatsRequest* request,
                     v1::StatsResponse* response, Done done) = 0;
  virtual void Plan(size_t lane, ShardCall* call, const v1::PlanRequest* request,
                    v1::PlanResponse* response, Done done) = 0;
};

}  // namespace tessera

#endif  // TESSERA_WORKER_SHARD_TRANSPORT_H_
