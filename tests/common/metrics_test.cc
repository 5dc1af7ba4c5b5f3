// The Prometheus exposition (common/metrics.h) and GET /metrics over a real
// socket (common/metrics_server.h); the usage text --help prints
// (common/flags.h).
#include "common/metrics.h"

#include <httplib.h>

#include <catch2/catch.hpp>
#include <limits>
#include <string>

#include "common/flags.h"
#include "common/metrics_server.h"

namespace tessera {
namespace {

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
  auto server = MetricsServer::Start("127.0.0.1", 0, &registry, "worker.metrics_port", token);
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
  auto missing = ReadScrapeToken("/nonexistent/scrape-token");
  CHECK(missing.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(missing.status().message().find("security.metrics_token_file") != absl::string_view::npos);
  CHECK(ReadScrapeToken("")->empty());
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
