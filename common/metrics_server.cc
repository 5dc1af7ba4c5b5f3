#include "common/metrics_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/secret.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& host, int port, const MetricsRegistry* registry, const std::string& what,
    const std::string& bearer_token) {
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->http_ = std::make_unique<httplib::Server>();
  httplib::Server& http = *server->http_;
  // Two threads: a scrape is a few hundred microseconds; a second thread
  // keeps one stuck client from stopping the next scrape.
  http.new_task_queue = [] { return new httplib::ThreadPool(2); };
  // httplib's default also sets SO_REUSEPORT, which would let two daemons
  // share a port silently; a port in use must fail here instead.
  http.set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  http.set_keep_alive_max_count(100);
  http.set_read_timeout(5, 0);
  http.set_write_timeout(5, 0);
  http.Get("/metrics", [registry, expected = "Bearer " + bearer_token, open = bearer_token.empty()](
                          const httplib::Request& req, httplib::Response& res) {
    if (!open && !SecretsEqual(req.get_header_value("Authorization"), expected)) {
      res.status = 401;
      res.set_header("WWW-Authenticate", "Bearer");
      res.set_content("a bearer token is required (security.metrics_token_file)\n", "text/plain");
      return;
    }
    res.set_content(registry->Render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  const std::string address = absl::StrCat(host, ":", port);
  if (port == 0) {
    server->port_ = http.bind_to_any_port(host.c_str());
  } else {
    server->port_ = http.bind_to_port(host.c_str(), port) ? port : -1;
  }
  if (server->port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", address, " (", what,
                                               "): the port is in use or the host is not local"));
  }
  server->thread_ = std::thread([&http] { http.listen_after_bind(); });
  // httplib's stop() does nothing until the listening loop has begun (and
  // the loop would then run forever): return only once it has.
  for (int i = 0; i < 5000 && !http.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!http.is_running()) {
    return absl::InternalError(absl::StrCat("metrics on ", address, " (", what,
                                            "): the HTTP server did not start within 5 s"));
  }
  return server;
}

absl::StatusOr<std::string> ReadScrapeToken(const std::string& path) {
  if (path.empty()) return std::string();
  absl::StatusOr<std::string> token = ReadToken(path);
  if (!token.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("config: security.metrics_token_file = '", path,
                                                   "': ", token.status().message()));
  }
  return token;
}

MetricsServer::~MetricsServer() {
  if (http_) http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace tessera
