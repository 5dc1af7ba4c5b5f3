// Example streams: the click-log text reader (its line format, malformed
// lines, gzip, torn and missing files), every example once per epoch per
// worker under the shuffle buffer, seeking back and forth, and the
// synthetic_ctr stream equal to the whole generated data set.
#include "worker/example_stream.h"

#include <zlib.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"

namespace tessera {
namespace {

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name;
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

void WriteGz(const std::string& path, const std::string& text) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, text.data(), static_cast<unsigned>(text.size())) ==
          static_cast<int>(text.size()));
  gzclose(f);
}

// 2 integers, 3 categories. The first integer is the line number, so an
// example says which line it came from.
JobConfig TsvConfig(const std::string& train, const std::string& test, uint32_t workers,
                    uint32_t shuffle_buffer) {
  auto c = ParseJobConfig(
      absl::StrCat("cluster: {servers: ['127.0.0.1:1'], workers: ", workers,
                   "}\n"
                   "model: {type: ctr, fields: 3, vocab: 1000, embedding_dim: 2, "
                   "dense_features: 2, layers: [4]}\n"
                   "data: {dataset: criteo_tsv, train_file: '",
                   train, "', test_file: '", test, "', shuffle_buffer: ", shuffle_buffer,
                   "}\ntraining: {seed: 11}\n"),
      {});
  INFO(c.status().ToString());
  REQUIRE(c.ok());
  return *c;
}

// Lines 1..n; every line in `bad` is malformed in a way of its own.
std::string ClickLog(int n, const std::set<int>& bad = {}) {
  std::string text;
  for (int line = 1; line <= n; ++line) {
    if (bad.count(line)) {
      switch (line % 3) {
        case 0: text += "1\t5\n"; break;                            // too few columns
        case 1: text += absl::StrCat("2\t", line, "\t\ta\tb\tc\n"); break;  // label 2
        default: text += absl::StrCat("0\t", line, "\tx7\ta\tb\tc\n");     // not an integer
      }
      continue;
    }
    text += absl::StrCat(line % 2, "\t", line, "\t", line % 5 ? "-3" : "", "\tc", line % 7,
                         "\t\t68fd1e64\n");
  }
  return text;
}

int LineOf(const Dataset& d, size_t i) {
  return static_cast<int>(std::lround(std::expm1(d.x[i * d.features])));
}

// Every example of epoch `epoch`, read in batches of `batch`.
std::vector<int> Epoch(ExampleStream& s, uint32_t epoch, uint32_t batch = 7) {
  std::vector<int> lines;
  REQUIRE(s.Seek(epoch, 0).ok());
  Dataset part;
  while (true) {
    auto st = s.Next(batch, &part);
    INFO(st.ToString());
    REQUIRE(st.ok());
    if (part.size() == 0) break;
    for (size_t i = 0; i < part.size(); ++i) lines.push_back(LineOf(part, i));
  }
  return lines;
}

TEST_CASE("click-log lines: empty cells, negatives, CRLF; malformed lines say what is wrong") {
  float x[2];
  uint64_t ids[3];
  int32_t y = -1;
  REQUIRE(ParseClickLine("1\t0\t-2\t68fd1e64\t\tabc\r", 2, 3, 1000, x, ids, &y).ok());
  CHECK(y == 1);
  CHECK(x[0] == 0.0f);  // log(1 + 0)
  CHECK(x[1] == 0.0f);  // negatives clamp to 0
  CHECK(ids[1] == 0);   // empty: id 0
  CHECK(ids[0] >= 1);
  CHECK(ids[0] < 1000);
  CHECK(ids[2] >= 1);
  REQUIRE(ParseClickLine("0\t\t7\tabc\tabc\tabc", 2, 3, 1000, x, ids, &y).ok());
  CHECK(y == 0);
  CHECK(x[0] == 0.0f);
  CHECK(x[1] == Approx(std::log(8.0)));
  // The same string in other fields is another row; in the same field the same.
  CHECK(ids[0] != ids[1]);
  CHECK(ids[1] != ids[2]);
  uint64_t again[3];
  REQUIRE(ParseClickLine("1\t3\t4\tabc\tzz\tq", 2, 3, 1000, x, again, &y).ok());
  CHECK(again[0] == ids[0]);

  const auto error = [&](const std::string& line) {
    absl::Status s = ParseClickLine(line, 2, 3, 1000, x, ids, &y);
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    return std::string(s.message());
  };
  CHECK(error("1\t2\t3\ta\tb").find("5 columns: expected 6") != std::string::npos);
  CHECK(error("1\t2\t3\ta\tb\tc\td").find("too many columns") != std::string::npos);
  CHECK(error("yes\t2\t3\ta\tb\tc").find("the label is 'yes': expected 0 or 1") !=
        std::string::npos);
  CHECK(error("1\t2.5\t3\ta\tb\tc").find("column 2 is '2.5': expected an integer") !=
        std::string::npos);
  CHECK(error("1\t99999999999999999999\t3\ta\tb\tc").find("expected an integer") !=
        std::string::npos);
  CHECK(error("").find("expected 6") != std::string::npos);
}

TEST_CASE("a click log splits over workers: every good line once per epoch, bad ones counted") {
  const std::string train = TempPath("split.tsv");
  const std::set<int> bad = {4, 9, 10, 17};
  WriteText(train, ClickLog(61, bad));
  std::set<int> all_good;
  for (int line = 1; line <= 61; ++line) {
    if (!bad.count(line)) all_good.insert(line);
  }
  std::set<int> seen;
  for (uint32_t rank = 0; rank < 2; ++rank) {
    auto stream = OpenExamples(TsvConfig(train, train, 2, 1000), true, rank);
    INFO(stream.status().ToString());
    REQUIRE(stream.ok());
    ExampleStream& s = **stream;
    CHECK(s.skipped_lines() == 4);
    CHECK(s.features() == 2);
    CHECK(s.fields() == 3);
    // Odd lines (rank 0): 31 less 9 and 17; even (rank 1): 30 less 4 and 10.
    CHECK(s.examples_per_epoch() == 28);
    for (uint32_t epoch = 0; epoch < 2; ++epoch) {
      const std::vector<int> lines = Epoch(s, epoch);
      REQUIRE(lines.size() == 28);
      std::set<int> unique(lines.begin(), lines.end());
      CHECK(unique.size() == 28);  // none twice
      for (int line : lines) {
        CHECK((line - 1) % 2 == static_cast<int>(rank));  // its own lines only
        CHECK(all_good.count(line) == 1);
        seen.insert(line);
      }
    }
    // Shuffled: another order each epoch, the same order each time.
    CHECK(Epoch(s, 0) != Epoch(s, 1));
    CHECK(Epoch(s, 1) == Epoch(s, 1));
  }
  // Rank 0 holds 29 good lines and trains on 28 an epoch (rank 1's count,
  // so that clocks line up): each epoch leaves out one of its lines at most.
  CHECK(seen.size() >= 56);
}

TEST_CASE("seeking in a click log gives what reading on gives; a test stream is the file in order") {
  const std::string train = TempPath("seek.tsv.gz");
  WriteGz(train, ClickLog(100));  // gzip'd: the same reader
  auto stream = OpenExamples(TsvConfig(train, train, 1, 16), true, 0);
  REQUIRE(stream.ok());
  ExampleStream& s = **stream;
  REQUIRE(s.examples_per_epoch() == 100);
  const std::vector<int> whole = Epoch(s, 3, 10);
  Dataset part;
  for (uint64_t at : {50u, 20u, 90u, 0u}) {  // forward, back, forward, start
    REQUIRE(s.Seek(3, at).ok());
    REQUIRE(s.Next(10, &part).ok());
    REQUIRE(part.size() == 10);
    for (size_t i = 0; i < 10; ++i) CHECK(LineOf(part, i) == whole[at + i]);
  }
  // A buffer of 16 shuffles locally: no line leaves early by more than the buffer.
  for (size_t i = 0; i < whole.size(); ++i) CHECK(whole[i] <= static_cast<int>(i) + 1 + 16);

  // Read ahead on a thread (as the trainer's streams are): the same batches,
  // including after seeks that are not the next batch.
  auto plain = OpenExamples(TsvConfig(train, train, 1, 16), true, 0);
  REQUIRE(plain.ok());
  std::unique_ptr<ExampleStream> ahead = ReadAhead(*std::move(plain));
  CHECK(Epoch(*ahead, 3, 10) == whole);
  for (uint64_t at : {50u, 60u, 20u, 0u, 10u}) {
    REQUIRE(ahead->Seek(3, at).ok());
    REQUIRE(ahead->Next(10, &part).ok());
    REQUIRE(part.size() == 10);
    for (size_t i = 0; i < 10; ++i) CHECK(LineOf(part, i) == whole[at + i]);
  }
  CHECK(Epoch(*ahead, 4, 10) != whole);
  CHECK(Epoch(*ahead, 3, 10) == whole);

  auto test = OpenExamples(TsvConfig(train, train, 4, 16), false, 3);
  REQUIRE(test.ok());
  CHECK((*test)->examples_per_epoch() == 100);  // every line, whatever the workers
  std::vector<int> expected(100);
  for (int i = 0; i < 100; ++i) expected[i] = i + 1;
  CHECK(Epoch(**test, 0, 33) == expected);  // in order, the short last batch included
}

TEST_CASE("missing, empty, all-bad and torn click logs are clear errors") {
  const std::string good = TempPath("good.tsv");
  WriteText(good, ClickLog(10));
  auto missing = OpenExamples(TsvConfig(TempPath("nope.tsv"), good, 1, 4), true, 0);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == absl::StatusCode::kNotFound);
  CHECK(std::string(missing.status().message()).find("data.train_file = '") != std::string::npos);
  auto missing_test = OpenExamples(TsvConfig(good, TempPath("nope.tsv"), 1, 4), false, 0);
  REQUIRE_FALSE(missing_test.ok());
  CHECK(std::string(missing_test.status().message()).find("data.test_file") != std::string::npos);

  const std::string empty = TempPath("empty.tsv");
  WriteText(empty, "");
  auto e = OpenExamples(TsvConfig(empty, good, 1, 4), true, 0);
  REQUIRE_FALSE(e.ok());
  CHECK(e.status().code() == absl::StatusCode::kDataLoss);
  CHECK(std::string(e.status().message()).find("empty") != std::string::npos);

  const std::string all_bad = TempPath("bad.tsv");
  WriteText(all_bad, "label\tI1\tI2\tC1\tC2\tC3\nnot a click log\n");
  auto b = OpenExamples(TsvConfig(all_bad, good, 1, 4), true, 0);
  REQUIRE_FALSE(b.ok());
  CHECK(b.status().code() == absl::StatusCode::kDataLoss);
  CHECK(std::string(b.status().message()).find(all_bad + ":1: the label is 'label'") !=
        std::string::npos);

  // A gzip file cut short: DATA_LOSS, not a short epoch.
  const std::string whole = TempPath("whole.tsv.gz"), torn = TempPath("torn.tsv.gz");
  WriteGz(whole, ClickLog(5000));
  std::ifstream in(whole, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  WriteText(torn, bytes.substr(0, bytes.size() / 2));
  auto t = OpenExamples(TsvConfig(torn, good, 1, 4), true, 0);
  REQUIRE_FALSE(t.ok());
  CHECK(t.status().code() == absl::StatusCode::kDataLoss);
  CHECK(std::string(t.status().message()).find(torn) != std::string::npos);

  // Binary junk without newlines: refused, not read into memory whole.
  const std::string junk = TempPath("junk.tsv");
  WriteText(junk, std::string((size_t{3} << 20), 'x'));
  auto j = OpenExamples(TsvConfig(junk, good, 1, 4), true, 0);
  REQUIRE_FALSE(j.ok());
  CHECK(std::string(j.status().message()).find("longer than") != std::string::npos);
}

TEST_CASE("the synthetic_ctr stream makes the same examples as the whole data set") {
  auto c = ParseJobConfig(R"(
cluster: {servers: ['127.0.0.1:1'], workers: 2}
model: {type: ctr, fields: 4, vocab: 500, embedding_dim: 2, dense_features: 3, layers: [4]}
data: {dataset: synthetic_ctr, synthetic_train: 301, synthetic_test: 77}
training: {seed: 5}
)",
                          {});
  REQUIRE(c.ok());
  const Dataset train = SyntheticCtrDataset(c->model, c->data, true);
  const Dataset test = SyntheticCtrDataset(c->model, c->data, false);
  for (uint32_t rank = 0; rank < 2; ++rank) {
    auto stream = OpenExamples(*c, true, rank);
    REQUIRE(stream.ok());
    REQUIRE((*stream)->examples_per_epoch() == 150);
    Batcher batcher(train.size(), rank, 2, 1, c->training.seed);
    const std::vector<uint32_t>& order = batcher.Order(1);
    REQUIRE((*stream)->Seek(1, 40).ok());
    Dataset part;
    REQUIRE((*stream)->Next(25, &part).ok());
    REQUIRE(part.size() == 25);
    for (size_t i = 0; i < 25; ++i) {
      const uint32_t k = order[40 + i];
      CHECK(part.y[i] == train.y[k]);
      CHECK(part.p[i] == train.p[k]);
      CHECK(part.x[i * 3 + 2] == train.x[k * 3 + 2]);
      CHECK(part.ids[i * 4 + 3] == train.ids[k * 4 + 3]);
    }
  }
  auto t = OpenExamples(*c, false, 1);
  REQUIRE(t.ok());
  Dataset all;
  REQUIRE((*t)->Seek(0, 0).ok());
  REQUIRE((*t)->Next(1000, &all).ok());
  CHECK(all.size() == 77);
  CHECK(all.ids == test.ids);
  CHECK(all.y == test.y);
}

}  // namespace
}  // namespace tessera
