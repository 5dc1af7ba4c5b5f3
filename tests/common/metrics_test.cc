// The Prometheus exposition (common/metrics.h) and GET /metrics over a real
// socket (common/metrics_server.h); the usage text --help prints
// (common/flags.h).
#include "common/metrics.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "common/config.h"
#include "common/flags.h"
#include "common/metrics_server.h"
#include "tests/test_pki.h"

namespace tessera {
namespace {

// A job file for the access rules, with `sets` applied.
JobConfig Job(std::vector<std::string> sets) {
  auto c = ParseJobConfig(R"(
cluster: {servers: ['127.0.0.1:1'], workers: 1}
model:
  type: tables
  tables: [{name: w, kind: dense, size: 4}]
optimizer: {type: sgd, lr: 0.5}
)",
                          sets);
  INFO(c.status().ToString());
  REQUIRE(c.ok());
  return *c;
}

TEST_CASE("sample values and label values are written as Prometheus reads them") {
  CHECK(FormatMetricValue(0) == "0");
  CHECK(FormatMetricValue(12345678901234.0) == "12345678901234");
  CHECK(FormatMetricValue(0.25) == "0.25");
  CHECK(FormatMetricValue(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(FormatMetricValue(-std::numeric_limits<double>::infinity()) == "-Inf");
  CHECK(FormatMetricValue(std::numeric_limits<double>::quiet_NaN()) == "NaN");
  CHECK(EscapeLabelValue("a\"b\\c\nd") == "a\\\"b\\\\c\\nd");
}

TEST_CASE("a histogram is written cumulative, with +Inf, _sum and _count and every label") {
  Exposition e({{"job", "j"}, {"shard", "0"}});
  Histogram h({0.1, 1});
  h.Observe(0.05);
  h.Observe(0.5);
  h.Observe(0.5);
  h.Observe(7);
  e.Family("x_seconds", "histogram", "Help.");
  e.HistogramSeries("x_seconds", {{"table", "w"}}, h);
  CHECK(e.text() ==
        "# HELP x_seconds Help.\n"
        "# TYPE x_seconds histogram\n"
        "x_seconds_bucket{job=\"j\",shard=\"0\",table=\"w\",le=\"0.1\"} 1\n"
        "x_seconds_bucket{job=\"j\",shard=\"0\",table=\"w\",le=\"1\"} 3\n"
        "x_seconds_bucket{job=\"j\",shard=\"0\",table=\"w\",le=\"+Inf\"} 4\n"
        "x_seconds_sum{job=\"j\",shard=\"0\",table=\"w\"} 8.05\n"
        "x_seconds_count{job=\"j\",shard=\"0\",table=\"w\"} 4\n");
}

TEST_CASE("a registry renders its collectors, then the process and the build") {
  MetricsRegistry registry(Labels{{"job", "j"}});
  registry.Add([](Exposition& e) {
    e.Family("t_total", "counter", "T.");
    e.Sample("t_total", 3);
  });
  const std::string text = registry.Render();
  CHECK(text.find("t_total{job=\"j\"} 3\n") == text.find("t_total{"));
  CHECK(text.find("t_total{job=\"j\"} 3\n") < text.find("process_cpu_seconds_total"));
  CHECK(text.find("process_resident_memory_bytes{job=\"j\"} ") != std::string::npos);
  CHECK(text.find("process_threads{job=\"j\"} ") != std::string::npos);
  CHECK(text.find("tessera_build_info{job=\"j\",version=\"") != std::string::npos);
  CHECK(text.find("process_resident_memory_bytes{job=\"j\"} 0\n") == std::string::npos);
}

TEST_CASE("GET /metrics answers the registry over HTTP; other paths 404; a taken port fails") {
  MetricsRegistry registry(Labels{{"rank", "2"}});
  int calls = 0;
  registry.Add([&calls](Exposition& e) {
    e.Family("scrapes_total", "counter", "Scrapes.");
    e.Sample("scrapes_total", ++calls);
  });
  auto server = MetricsServer::Start("127.0.0.1", 0, &registry, "worker.metrics_port");
  REQUIRE(server.ok());
  REQUIRE((*server)->port() > 0);
  httplib::Client client("127.0.0.1", (*server)->port());
  auto first = client.Get("/metrics");
  REQUIRE(first);
  CHECK(first->status == 200);
  CHECK(first->get_header_value("Content-Type").find("text/plain; version=0.0.4") == 0);
  CHECK(first->body.find("scrapes_total{rank=\"2\"} 1\n") != std::string::npos);
  auto second = client.Get("/metrics");
  REQUIRE(second);
  CHECK(second->body.find("scrapes_total{rank=\"2\"} 2\n") != std::string::npos);
  auto other = client.Get("/");
  REQUIRE(other);
  CHECK(other->status == 404);

  auto taken = MetricsServer::Start("127.0.0.1", (*server)->port(), &registry, "server.metrics_port");
  REQUIRE_FALSE(taken.ok());
  CHECK(taken.status().code() == absl::StatusCode::kUnavailable);
  CHECK(taken.status().message().find("server.metrics_port") != absl::string_view::npos);
}

TEST_CASE("with a scrape token, GET /metrics needs it as a bearer token; 401 without") {
  MetricsRegistry registry(Labels{{"rank", "0"}});
  registry.Add([](Exposition& e) {
    e.Family("up_total", "counter", "Up.");
    e.Sample("up_total", 1);
  });
  const std::string token = "scrape-token-0123456789abcdef";
  auto server = MetricsServer::Start("127.0.0.1", 0, &registry, "worker.metrics_port",
                                    MetricsAccess{token, {}});
  REQUIRE(server.ok());
  httplib::Client client("127.0.0.1", (*server)->port());
  for (const char* wrong : {"", "Bearer nope", "Bearer scrape-token-0123456789abcdeX",
                            "scrape-token-0123456789abcdef"}) {
    INFO(wrong);
    httplib::Headers headers;
    if (*wrong) headers.emplace("Authorization", wrong);
    auto refused = client.Get("/metrics", headers);
    REQUIRE(refused);
    CHECK(refused->status == 401);
    CHECK(refused->body.find("up_total") == std::string::npos);
  }
  auto ok = client.Get("/metrics", {{"Authorization", "Bearer " + token}});
  REQUIRE(ok);
  CHECK(ok->status == 200);
  CHECK(ok->body.find("up_total{rank=\"0\"} 1") != std::string::npos);
  // A token file that is missing is a start-up error naming the key.
  auto missing = MetricsAccessFor(Job({"security.metrics_token_file=/nonexistent/scrape-token"}));
  CHECK(missing.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(missing.status().message().find("security.metrics_token_file") != absl::string_view::npos);
  auto none = MetricsAccessFor(Job({}));
  REQUIRE(none.ok());
  CHECK(none->bearer_token.empty());
  CHECK_FALSE(none->https());
}

// A registry with one sample, for the transport tests.
MetricsRegistry& OneSample() {
  static MetricsRegistry* registry = [] {
    auto* r = new MetricsRegistry(Labels{{"rank", "0"}});
    r->Add([](Exposition& e) {
      e.Family("up_total", "counter", "Up.");
      e.Sample("up_total", 1);
    });
    return r;
  }();
  return *registry;
}

// GET /metrics over HTTPS, trusting `ca` (and presenting `client`.pem/.key
// when given): the status, or -1 when no TLS session was made.
int ScrapeTls(int port, const std::string& ca, const std::string& client = "") {
  std::unique_ptr<httplib::SSLClient> c =
      client.empty() ? std::make_unique<httplib::SSLClient>("127.0.0.1", port)
                     : std::make_unique<httplib::SSLClient>("127.0.0.1", port, client + ".pem",
                                                            client + ".key");
  c->set_ca_cert_path(ca.c_str());
  c->enable_server_certificate_verification(true);
  c->set_connection_timeout(3);
  c->set_read_timeout(3);
  auto res = c->Get("/metrics");
  if (!res) return -1;
  return res->body.find("up_total") != std::string::npos ? res->status : -res->status;
}

TEST_CASE("with the job's certificate, GET /metrics is HTTPS only; mutual TLS asks scrapers too") {
  const std::string pki = TestPki();
  JobConfig job = Job({"security.tls.cert_file=" + pki + "/server.pem",
                       "security.tls.key_file=" + pki + "/server.key",
                       "security.tls.ca_file=" + pki + "/ca.pem"});
  auto access = MetricsAccessFor(job);
  REQUIRE(access.ok());
  CHECK(access->https());
  auto server = MetricsServer::Start("127.0.0.1", 0, &OneSample(), "server.metrics_port", *access);
  INFO(server.status().ToString());
  REQUIRE(server.ok());
  CHECK((*server)->https());
  const int port = (*server)->port();
  CHECK(ScrapeTls(port, pki + "/ca.pem") == 200);
  CHECK(ScrapeTls(port, pki + "/other-ca.pem") == -1);  // a scraper checks who answers
  httplib::Client plain("127.0.0.1", port);
  plain.set_read_timeout(3);
  auto res = plain.Get("/metrics");
  CHECK((!res || res->body.find("up_total") == std::string::npos));

  job.security.tls.mutual = true;
  access = MetricsAccessFor(job);
  REQUIRE(access.ok());
  auto mutual = MetricsServer::Start("127.0.0.1", 0, &OneSample(), "server.metrics_port", *access);
  REQUIRE(mutual.ok());
  CHECK(ScrapeTls((*mutual)->port(), pki + "/ca.pem") == -1);
  CHECK(ScrapeTls((*mutual)->port(), pki + "/ca.pem", pki + "/rogue-client") == -1);
  CHECK(ScrapeTls((*mutual)->port(), pki + "/ca.pem", pki + "/client") == 200);

  // A key that is not the certificate's is a start-up error naming the key.
  job.security.tls.key_file = pki + "/client.key";
  auto wrong = MetricsServer::Start("127.0.0.1", 0, &OneSample(), "server.metrics_port",
                                    *MetricsAccessFor(job));
  REQUIRE_FALSE(wrong.ok());
  CHECK(wrong.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(wrong.status().message().find("security.tls.key_file") != absl::string_view::npos);
}

TEST_CASE("the metrics port serves a certificate renewed on disk without a restart") {
  namespace fs = std::filesystem;
  const std::string pki = TestPki();
  const std::string live = pki + "/metrics-live";
  fs::create_directories(live);
  const auto overwrite = fs::copy_options::overwrite_existing;
  fs::copy_file(pki + "/server.pem", live + "/tls.crt", overwrite);
  fs::copy_file(pki + "/server.key", live + "/tls.key", overwrite);
  auto access = MetricsAccessFor(Job({"security.tls.cert_file=" + live + "/tls.crt",
                                      "security.tls.key_file=" + live + "/tls.key",
                                      "security.tls.ca_file=" + pki + "/ca.pem",
                                      "security.tls.reload_s=1"}));
  REQUIRE(access.ok());
  auto server = MetricsServer::Start("127.0.0.1", 0, &OneSample(), "server.metrics_port", *access);
  REQUIRE(server.ok());
  const int port = (*server)->port();
  CHECK(ScrapeTls(port, pki + "/ca.pem") == 200);
  // A renewal by another CA: once reload_s has passed, scrapers see it.
  fs::copy_file(pki + "/other-server.pem", live + "/tls.crt", overwrite);
  fs::copy_file(pki + "/other-server.key", live + "/tls.key", overwrite);
  int renewed = -1;
  for (int i = 0; i < 40 && renewed != 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    renewed = ScrapeTls(port, pki + "/other-ca.pem");
  }
  CHECK(renewed == 200);
  CHECK(ScrapeTls(port, pki + "/ca.pem") == -1);
}

// An idle TCP connection to 127.0.0.1:port (-1 when none could be made).
int IdleConnection(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

TEST_CASE("hundreds of idle connections delay a scrape by at most a second, and are closed") {
  auto server = MetricsServer::Start("127.0.0.1", 0, &OneSample(), "worker.metrics_port");
  REQUIRE(server.ok());
  std::vector<int> idle;
  for (int i = 0; i < 300; ++i) {
    const int fd = IdleConnection((*server)->port());
    REQUIRE(fd >= 0);
    idle.push_back(fd);
  }
  const auto start = std::chrono::steady_clock::now();
  httplib::Client client("127.0.0.1", (*server)->port());
  client.set_read_timeout(20);
  auto res = client.Get("/metrics");
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("Connection") == "close");
  CHECK(waited < 5);
  // Each idle socket is closed once a thread serves it (10 ms each, four
  // threads): all of them within seconds, not one keep-alive timeout each.
  size_t closed = 0;
  for (int round = 0; round < 100 && closed < idle.size(); ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    closed = 0;
    for (int fd : idle) {
      pollfd p{fd, POLLIN, 0};
      closed += poll(&p, 1, 0) == 1 ? 1 : 0;
    }
  }
  CHECK(closed == idle.size());
  for (int fd : idle) close(fd);
}

TEST_CASE("a metrics server stopped at once after it started does not hang") {
  // A daemon that fails right after start-up destroys its server at once.
  MetricsRegistry registry(Labels{});
  for (int i = 0; i < 50; ++i) {
    auto server = MetricsServer::Start("127.0.0.1", 0, &registry, "worker.metrics_port");
    REQUIRE(server.ok());
  }
}

TEST_CASE("--help lists every flag a program parses; --version names the build") {
  const Program program{"prog",
                        "--config FILE [--set k=v ...]",
                        "Does a thing.",
                        {{"config", "FILE", "the job"},
                         {"set", "KEY=VALUE", "override", FlagKind::kRepeatable},
                         {"fast", "", "go fast", FlagKind::kSwitch}}};
  const std::string usage = Usage(program);
  CHECK(usage.find("usage: prog --config FILE") == 0);
  for (const char* flag : {"--config FILE", "--set KEY=VALUE", "--fast", "--help", "--version"}) {
    CHECK(usage.find(flag) != std::string::npos);
  }
  CHECK(usage.find("override (repeatable)") != std::string::npos);

  char p[] = "prog", config[] = "--config", file[] = "a.yaml", help[] = "--help",
       version[] = "--version", set[] = "--set", kv[] = "a=1", fast[] = "--fast";
  char* plain[] = {p, config, file, set, kv, set, kv, fast};
  CHECK_FALSE(AnswerHelpOrVersion(8, plain, program).has_value());
  auto flags = ParseFlags(8, plain, program);
  REQUIRE(flags.ok());
  CHECK(flags->All("set").size() == 2);
  CHECK(flags->Has("fast"));
  char* with_help[] = {p, config, file, help};
  CHECK(AnswerHelpOrVersion(4, with_help, program) == std::optional<int>(0));
  char* with_version[] = {p, version};
  CHECK(AnswerHelpOrVersion(2, with_version, program) == std::optional<int>(0));
  char typo[] = "--confg";
  char* bad[] = {p, typo, file};
  CHECK(ParseFlags(3, bad, program).status().code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tessera
