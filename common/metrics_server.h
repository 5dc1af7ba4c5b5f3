// MetricsServer: GET /metrics over HTTP (cpp-httplib, Debian's
// libcpp-httplib-dev), answering MetricsRegistry::Render() as the Prometheus
// text format. Metrics carry counts, timings, job and table names, never
// parameters or data. Any other path is 404. Access follows the job
// (MetricsAccessFor):
// - a bearer token (security.metrics_token_file): a scrape must send
//   "Authorization: Bearer <token>" (Prometheus: `authorization:
//   {credentials_file: ...}`) or gets 401;
// - TLS: a daemon that holds the job's certificate (security.tls.cert_file)
//   serves HTTPS with it, re-read from disk every security.tls.reload_s as
//   the gRPC port's is, and with security.tls.mutual asks scrapers for a
//   client certificate signed by ca_file (Prometheus: `scheme: https`,
//   `tls_config`). A daemon without a certificate (a worker given only
//   ca_file) serves plain HTTP.
//
//   auto access = MetricsAccessFor(config);
//   auto server = MetricsServer::Start("0.0.0.0", port, &registry, "server.metrics_port", *access);
//   int port = (*server)->port();   // the one picked when asked for 0
//
// Idle connections: one request per connection, which must be there when
// the connection is served (a client sends it as it connects); an idle
// socket is closed after 10 ms (1 s for a TLS handshake), and connections
// are served newest first by four threads, so thousands of idle sockets
// from strangers delay a scrape by at most a second and are gone in
// seconds.
//
// Threading: Start and the destructor (which stops serving and joins) from
// one owning thread; requests run on the server's own threads, so a slow
// scraper never takes a thread from training or the shard's gRPC calls.
// `registry` must outlive the server.
#ifndef TESSERA_COMMON_METRICS_SERVER_H_
#define TESSERA_COMMON_METRICS_SERVER_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "common/metrics.h"

namespace httplib {
class Server;
}

namespace tessera {

// Who may scrape, and over what.
struct MetricsAccess {
  std::string bearer_token;  // empty: none asked for
  // HTTPS when tls.cert_file is set (key_file with it); tls.mutual asks for
  // a client certificate signed by tls.ca_file.
  TlsConfig tls;

  bool https() const { return !tls.cert_file.empty(); }
};

// The job's access rules: the scrape token read from
// security.metrics_token_file, and the daemon's TLS identity.
// INVALID_ARGUMENT naming the key when the token file is missing or is not
// a token.
absl::StatusOr<MetricsAccess> MetricsAccessFor(const JobConfig& config);

class ServingCertificate;

class MetricsServer {
 public:
  // Listens on host:port (port 0 picks a free one). UNAVAILABLE when the
  // address cannot be bound, naming it and `what` (the config key);
  // INVALID_ARGUMENT naming the key when a certificate or key cannot be read.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& host, int port,
                                                              const MetricsRegistry* registry,
                                                              const std::string& what,
                                                              const MetricsAccess& access = {});
  ~MetricsServer();

  int port() const { return port_; }
  bool https() const { return certificate_ != nullptr; }

 private:
  MetricsServer() = default;

  std::shared_ptr<ServingCertificate> certificate_;  // null: plain HTTP
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace tessera

#endif  // TESSERA_COMMON_METRICS_SERVER_H_
