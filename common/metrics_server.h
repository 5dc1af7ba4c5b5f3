// MetricsServer: GET /metrics over HTTP (cpp-httplib, Debian's
// libcpp-httplib-dev), answering MetricsRegistry::Render() as the Prometheus
// text format. Metrics carry counts, timings, job and table names, never
// parameters or data. With a bearer token (security.metrics_token_file) a
// scrape must send "Authorization: Bearer <token>" (Prometheus:
// `authorization: {credentials_file: ...}`) or gets 401. Plain HTTP either
// way. Any other path is 404.
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

// The scrape token in `path` (security.metrics_token_file); "" when `path`
// is empty. INVALID_ARGUMENT naming the key when the file is missing or is
// not a token.
absl::StatusOr<std::string> ReadScrapeToken(const std::string& path);

class MetricsServer {
 public:
  // Listens on host:port (port 0 picks a free one). UNAVAILABLE when the
  // address cannot be bound, naming it and `what` (the config key).
  // `bearer_token`: empty for none.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& host, int port,
                                                              const MetricsRegistry* registry,
                                                              const std::string& what,
                                                              const std::string& bearer_token = "");
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
