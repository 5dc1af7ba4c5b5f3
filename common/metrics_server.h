// MetricsServer: GET /metrics over HTTP (cpp-httplib, Debian's
// libcpp-httplib-dev), answering MetricsRegistry::Render() as the Prometheus
// text format. Plain HTTP and no token: metrics carry counts and timings,
// never parameters or data. Any other path is 404.
//
//   auto server = MetricsServer::Start("0.0.0.0", config.server.metrics_port, &registry);
//   int port = (*server)->port();   // the one picked when asked for 0
//
// Threading: Start and the destructor (which stops serving and joins) from
// one owning thread; requests run on the server's own two threads, so a slow
// scraper never takes a thread from training or the shard's gRPC calls.
// `registry` must outlive the server.
#ifndef TESSERA_COMMON_METRICS_SERVER_H_
#define TESSERA_COMMON_METRICS_SERVER_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/metrics.h"

namespace httplib {
class Server;
}

namespace tessera {

class MetricsServer {
 public:
  // Listens on host:port (port 0 picks a free one). UNAVAILABLE when the
  // address cannot be bound, naming it and `what` (the config key).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& host, int port,
                                                              const MetricsRegistry* registry,
                                                              const std::string& what);
  ~MetricsServer();

  int port() const { return port_; }

 private:
  MetricsServer() = default;

  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace tessera

#endif  // TESSERA_COMMON_METRICS_SERVER_H_
