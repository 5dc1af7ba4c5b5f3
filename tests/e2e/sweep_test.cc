// `tessera sweep` (launcher/sweep.h): a tiny synthetic job over a grid of
// modes, run for real, leaves results.csv, report.md and PNG plots that say
// what the runs did; --grid arguments parse as documented.
#include "launcher/sweep.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "e2e_fixtures.h"

namespace tessera {
namespace {

std::vector<std::vector<std::string>> CsvRows(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> row(1);
    bool quoted = false;
    for (char c : line) {
      if (c == '"') {
        quoted = !quoted;
      } else if (c == ',' && !quoted) {
        row.emplace_back();
      } else {
        row.back() += c;
      }
    }
    rows.push_back(row);
  }
  return rows;
}

// A PNG: the signature, then an IHDR chunk with a nonzero width and height.
void CheckPng(const std::string& path) {
  INFO(path);
  const std::string bytes = Read(path);
  REQUIRE(bytes.size() > 1000);
  CHECK(bytes.substr(0, 8) == std::string("\x89PNG\r\n\x1a\n", 8));
  CHECK(bytes.substr(12, 4) == "IHDR");
  auto be32 = [&](size_t at) {
    uint32_t v = 0;
    for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(bytes[at + i]);
    return v;
  };
  CHECK(be32(16) >= 100);  // width
  CHECK(be32(20) >= 100);  // height
}

TEST_CASE("--grid splits values at commas outside brackets and refuses what it cannot read") {
  auto grid = ParseGrid("model.layers=[784,32,10],[784,16,10]");
  REQUIRE(grid.ok());
  CHECK(grid->first == "model.layers");
  CHECK(grid->second == std::vector<std::string>{"[784,32,10]", "[784,16,10]"});
  CHECK(ParseGrid("consistency.mode=bsp,ssp,asp")->second.size() == 3);
  CHECK(ParseGrid("consistency.mode").status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(ParseGrid("=bsp").status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(ParseGrid("consistency.mode=bsp,,asp").status().message() ==
        "--grid 'consistency.mode=bsp,,asp': an empty value; expected key=value1,value2,...");
}

TEST_CASE("a sweep over modes runs every combination and tabulates and plots them") {
  SweepOptions o;
  o.job = Options("sweep", {"training.eval_every_steps=16", "worker.progress_interval_s=0.02",
                            "checkpoint.disabled=true"});
  // cluster.workers (one value, as configured) is a numeric key: the
  // throughput plot draws samples/s against it.
  o.grid = {{"consistency.mode", {"bsp", "asp"}}, {"cluster.workers", {"2"}}};
  o.repeat = 2;
  o.target_accuracy = 0.5;
  o.plot_script = Runfile("scripts/sweep_plots.py");
  REQUIRE(RunSweep(o) == 0);

  const auto rows = CsvRows(Read(o.job.out_dir + "/results.csv"));
  REQUIRE(rows.size() == 5);  // the header and 2 x 2 runs
  const std::vector<std::string> header = rows[0];
  auto column = [&](const std::string& name) {
    for (size_t i = 0; i < header.size(); ++i) {
      if (header[i] == name) return i;
    }
    FAIL("no column " << name);
    return size_t{0};
  };
  for (size_t r = 1; r < rows.size(); ++r) {
    INFO("row " << r);
    REQUIRE(rows[r].size() == header.size());
    CHECK(rows[r][column("consistency.mode")] == (r <= 2 ? "bsp" : "asp"));
    CHECK(rows[r][column("repeat")] == std::to_string((r - 1) % 2));
    CHECK(rows[r][column("exit_code")] == "0");
    // The row is the run's own summary.
    const std::string summary = Read(rows[r][column("out_dir")] + "/summary.json");
    CHECK(std::stod(rows[r][column("test_accuracy")]) ==
          Approx(Field(summary, "test_accuracy")).epsilon(1e-5));
    CHECK(Json(summary)["mode"] == rows[r][column("consistency.mode")]);
    CHECK(std::stod(rows[r][column("test_accuracy")]) > 0.9);
    // Rank 0 evaluated every 16 steps and passed 0.5 on the way.
    CHECK(!rows[r][column("time_to_target_s")].empty());
    CHECK(std::stod(rows[r][column("time_to_target_s")]) <
          std::stod(rows[r][column("train_seconds")]));
  }
  // BSP is deterministic: both repeats the same; ASP's pushes were stale.
  CHECK(rows[1][column("train_loss")] == rows[2][column("train_loss")]);
  CHECK(std::stod(rows[1][column("push_staleness_mean")]) == 0);
  CHECK(std::stod(rows[3][column("push_staleness_mean")]) > 0);

  const std::string report = Read(o.job.out_dir + "/report.md");
  CHECK(report.find("| `consistency.mode=bsp cluster.workers=2` | 2/2 |") != std::string::npos);
  CHECK(report.find("| `consistency.mode=asp cluster.workers=2` | 2/2 |") != std::string::npos);
  for (const char* png : {"accuracy_vs_seconds.png", "accuracy_vs_clock.png", "train_loss.png",
                          "throughput.png"}) {
    CheckPng(o.job.out_dir + "/" + png);
    CHECK(report.find(std::string("](") + png + ")") != std::string::npos);
  }
}

TEST_CASE("a grid value the config refuses stops the sweep before any run") {
  SweepOptions o;
  o.job = Options("sweep-bad", {});
  o.grid = {{"consistency.mode", {"bsp", "bpp"}}};
  CHECK(RunSweep(o) == 2);
  std::ifstream csv(o.job.out_dir + "/results.csv");
  CHECK(!csv.good());
}

}  // namespace
}  // namespace tessera
