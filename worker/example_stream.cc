#include "worker/example_stream.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/partition.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace tessera {
namespace {

// Sizes `out` for n examples shaped like `stream`'s (p only where the data
// knows its click probabilities).
void Shape(const ExampleStream& stream, uint32_t n, bool with_p, Dataset* out) {
  out->features = stream.features();
  out->classes = stream.classes();
  out->fields = stream.fields();
  out->x.resize(size_t(n) * out->features);
  out->y.resize(n);
  out->ids.resize(size_t(n) * out->fields);
  out->p.resize(with_p ? n : 0);
}

// Examples addressed by index: worker `rank` of `workers` takes indices
// i % workers == rank, in the Batcher's order for the epoch.
class IndexedStream : public ExampleStream {
 public:
  IndexedStream(uint32_t features, uint32_t classes, uint32_t fields, uint64_t size, uint32_t rank,
                uint32_t workers, uint64_t seed, bool shuffle)
      : ExampleStream(features, classes, fields),
        batcher_(size, rank, workers, /*batch=*/1, seed, shuffle),
        per_epoch_(size / workers) {}

  uint64_t examples_per_epoch() const override { return per_epoch_; }

  absl::Status Seek(uint32_t epoch, uint64_t position) override {
    epoch_ = epoch;
    position_ = std::min(position, per_epoch_);
    return absl::OkStatus();
  }

  absl::Status Next(uint32_t n, Dataset* out) override {
    const std::vector<uint32_t>& order = batcher_.Order(epoch_);
    const uint32_t m = static_cast<uint32_t>(std::min<uint64_t>(n, per_epoch_ - position_));
    Gather(order.data() + position_, m, out);
    position_ += m;
    return absl::OkStatus();
  }

 protected:
  // Examples indices[0, n) into *out, sized for n.
  virtual void Gather(const uint32_t* indices, uint32_t n, Dataset* out) = 0;

 private:
  Batcher batcher_;
  const uint64_t per_epoch_;
  uint32_t epoch_ = 0;
  uint64_t position_ = 0;
};

class DatasetStream : public IndexedStream {
 public:
  // `owned` (may be null) is kept alive with the stream; `data` is read.
  DatasetStream(const Dataset* data, std::unique_ptr<Dataset> owned, uint32_t rank,
                uint32_t workers, uint64_t seed, bool shuffle)
      : IndexedStream(data->features, data->classes, data->fields, data->size(), rank, workers,
                      seed, shuffle),
        data_(data),
        owned_(std::move(owned)) {}

 private:
  void Gather(const uint32_t* indices, uint32_t n, Dataset* out) override {
    GatherExamples(*data_, indices, n, out);
  }

  const Dataset* const data_;
  const std::unique_ptr<Dataset> owned_;
};

class SyntheticCtrStream : public IndexedStream {
 public:
  SyntheticCtrStream(const JobConfig& config, bool train, uint32_t rank, uint32_t workers,
                     bool shuffle)
      : IndexedStream(config.model.dense_features, 2, config.model.fields,
                      train ? config.data.synthetic_train : config.data.synthetic_test, rank,
                      workers, config.training.seed, shuffle),
        generator_(config.model, config.data, train) {}

 private:
  void Gather(const uint32_t* indices, uint32_t n, Dataset* out) override {
    Shape(*this, n, /*with_p=*/true, out);
    for (uint32_t i = 0; i < n; ++i) {
      generator_.Make(indices[i], out->x.data() + size_t(i) * out->features,
                      out->ids.data() + size_t(i) * out->fields, &out->y[i], &out->p[i]);
    }
  }

  SyntheticCtrGenerator generator_;
};

// Lines of a text file, plain or gzip'd (zlib reads both), without their
// newlines.
class LineReader {
 public:
  static constexpr size_t kMaxLine = size_t{1} << 20;

  LineReader() = default;
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;
  ~LineReader() { Close(); }

  // `key` names the config key the path came from, for the error.
  absl::Status Open(const std::string& path, const std::string& key) {
    Close();
    path_ = path;
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr) {
      return absl::NotFoundError(absl::StrCat(key, " = '", path, "': cannot open it (",
                                              std::strerror(errno),
                                              "); point the key at a click-log file"));
    }
    gzbuffer(file_, 1 << 20);
    buffer_.resize(1 << 20);
    begin_ = end_ = 0;
    eof_ = false;
    line_ = 0;
    return absl::OkStatus();
  }

  // The next line into *line (valid until the next call); false at the end.
  absl::StatusOr<bool> Next(std::string_view* line) {
    while (true) {
      const char* base = buffer_.data();
      const void* newline = std::memchr(base + begin_, '\n', end_ - begin_);
      if (newline != nullptr) {
        const size_t at = static_cast<const char*>(newline) - base;
        *line = std::string_view(base + begin_, at - begin_);
        begin_ = at + 1;
        ++line_;
        return true;
      }
      if (eof_) {
        if (begin_ == end_) return false;
        *line = std::string_view(base + begin_, end_ - begin_);
        begin_ = end_;
        ++line_;
        return true;
      }
      if (end_ - begin_ >= kMaxLine) {
        return absl::DataLossError(absl::StrCat(path_, ":", line_ + 1, ": a line longer than ",
                                                kMaxLine, " bytes: not a click log"));
      }
      std::memmove(buffer_.data(), base + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
      if (end_ == buffer_.size()) buffer_.resize(buffer_.size() * 2);
      const int got =
          gzread(file_, buffer_.data() + end_, static_cast<unsigned>(buffer_.size() - end_));
      int err = Z_OK;
      const char* message = gzerror(file_, &err);
      if (got < 0 || (err != Z_OK && err != Z_STREAM_END)) {
        return absl::DataLossError(absl::StrCat(path_, ": cannot read past line ", line_, ": ",
                                                message, " (a truncated or damaged file?)"));
      }
      if (got == 0) eof_ = true;
      end_ += got;
    }
  }

  uint64_t line_number() const { return line_; }  // of the line Next gave, from 1

 private:
  void Close() {
    if (file_ != nullptr) gzclose(file_);
    file_ = nullptr;
  }

  gzFile file_ = nullptr;
  std::string path_;
  std::vector<char> buffer_;
  size_t begin_ = 0, end_ = 0;
  bool eof_ = false;
  uint64_t line_ = 0;
};

// A cell, shortened for an error message.
std::string Quote(std::string_view cell) {
  constexpr size_t kMax = 24;
  return absl::StrCat("'", std::string(cell.substr(0, kMax)), cell.size() > kMax ? "...'" : "'");
}

// A category's id in [1, vocab) (0 when vocab is 1): FNV-1a of its bytes,
// mixed with the field, so equal strings of different fields differ. Stable
// across processes and builds (workers and checkpoints agree on rows).
uint64_t CategoryId(std::string_view cell, uint32_t field, uint64_t vocab) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : cell) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  h = SplitMix64(h ^ SplitMix64(field + 1));
  return vocab <= 1 ? 0 : 1 + h % (vocab - 1);
}

// A click log read from a file while training. Worker `rank` of `workers`
// takes the lines i % workers == rank (others are passed over unparsed).
class TsvStream : public ExampleStream {
 public:
  TsvStream(const JobConfig& config, std::string path, std::string key, uint32_t rank,
            uint32_t workers, uint32_t shuffle_buffer)
      : ExampleStream(config.model.dense_features, 2, config.model.fields),
        path_(std::move(path)),
        key_(std::move(key)),
        vocab_(config.model.vocab),
        seed_(config.training.seed),
        rank_(rank),
        workers_(workers),
        capacity_(shuffle_buffer) {}

  // Reads the whole file once: every worker's count of good lines (the
  // smallest is each worker's epoch), the malformed ones logged and counted.
  absl::Status Count() {
    const auto start = std::chrono::steady_clock::now();
    LineReader reader;
    TESSERA_RETURN_IF_ERROR(reader.Open(path_, key_));
    std::vector<uint64_t> good(workers_, 0);
    std::vector<float> x(features());
    std::vector<uint64_t> ids(fields());
    int32_t y;
    absl::Status first_bad;
    std::string_view line;
    while (true) {
      TESSERA_ASSIGN_OR_RETURN(const bool more, reader.Next(&line));
      if (!more) break;
      absl::Status parsed =
          ParseClickLine(line, features(), fields(), vocab_, x.data(), ids.data(), &y);
      if (parsed.ok()) {
        ++good[(reader.line_number() - 1) % workers_];
        continue;
      }
      ++skipped_;
      const std::string where = absl::StrCat(path_, ":", reader.line_number(), ": ");
      if (first_bad.ok()) first_bad = absl::DataLossError(where + std::string(parsed.message()));
      if (skipped_ <= kLoggedBadLines) {
        spdlog::warn(
            "{}{}; line skipped{}", where, std::string(parsed.message()),
            skipped_ == kLoggedBadLines ? " (further bad lines are counted, not logged)" : "");
      }
    }
    per_epoch_ = *std::min_element(good.begin(), good.end());
    uint64_t total = 0;
    for (uint64_t g : good) total += g;
    if (total == 0) {
      if (!first_bad.ok()) {
        return absl::DataLossError(absl::StrCat(
            key_, " = '", path_, "': no usable line; the first bad one: ", first_bad.message()));
      }
      return absl::DataLossError(absl::StrCat(key_, " = '", path_, "': the file is empty"));
    }
    if (skipped_ > 0) {
      spdlog::warn("{}: {} malformed lines skipped of {}", path_, skipped_, reader.line_number());
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    spdlog::info(
        "{}: {} lines, {} good, read in {:.1f} s ({:.0f} lines/s); {} examples an epoch "
        "for each of {} workers",
        path_, reader.line_number(), total, seconds, reader.line_number() / std::max(seconds, 1e-9),
        per_epoch_, workers_);
    capacity_ =
        static_cast<uint32_t>(std::max<uint64_t>(1, std::min<uint64_t>(capacity_, per_epoch_)));
    buffer_x_.resize(size_t(capacity_) * features());
    buffer_ids_.resize(size_t(capacity_) * fields());
    buffer_y_.resize(capacity_);
    return absl::OkStatus();
  }

  uint64_t examples_per_epoch() const override { return per_epoch_; }
  uint64_t skipped_lines() const override { return skipped_; }

  absl::Status Seek(uint32_t epoch, uint64_t position) override {
    position = std::min(position, per_epoch_);
    if (open_ && epoch == epoch_ && position >= position_) {
      return Skip(position - position_);
    }
    TESSERA_RETURN_IF_ERROR(reader_.Open(path_, key_));
    open_ = true;
    epoch_ = epoch;
    position_ = 0;
    held_ = 0;
    input_done_ = false;
    rng_.seed(SplitMix64(seed_ ^ SplitMix64(epoch * 4096ull + rank_)));
    while (held_ < capacity_ && !input_done_) {
      TESSERA_ASSIGN_OR_RETURN(const bool got, ReadOwn(held_));
      if (got) {
        ++held_;
      } else {
        input_done_ = true;
      }
    }
    return Skip(position);
  }

  absl::Status Next(uint32_t n, Dataset* out) override {
    if (!open_) TESSERA_RETURN_IF_ERROR(Seek(0, 0));
    const uint32_t m = static_cast<uint32_t>(std::min<uint64_t>(n, per_epoch_ - position_));
    Shape(*this, m, /*with_p=*/false, out);
    for (uint32_t i = 0; i < m; ++i) {
      TESSERA_RETURN_IF_ERROR(Emit(out->x.data() + size_t(i) * features(),
                                   out->ids.data() + size_t(i) * fields(), &out->y[i]));
    }
    return absl::OkStatus();
  }

 private:
  static constexpr uint64_t kLoggedBadLines = 5;

  // The next good line of this worker into buffer slot `slot`; false at the
  // end of the file.
  absl::StatusOr<bool> ReadOwn(uint32_t slot) {
    std::string_view line;
    while (true) {
      TESSERA_ASSIGN_OR_RETURN(const bool more, reader_.Next(&line));
      if (!more) return false;
      if ((reader_.line_number() - 1) % workers_ != rank_) continue;
      if (ParseClickLine(line, features(), fields(), vocab_,
                         buffer_x_.data() + size_t(slot) * features(),
                         buffer_ids_.data() + size_t(slot) * fields(), &buffer_y_[slot])
              .ok()) {
        return true;
      }
    }
  }

  // Hands out one held example (a random one: the shuffle) and refills its
  // slot from the file.
  absl::Status Emit(float* x, uint64_t* ids, int32_t* y) {
    if (held_ == 0) {
      return absl::DataLossError(absl::StrCat(path_, ": the file ended early at example ",
                                              position_,
                                              " of this epoch: did it change while the job ran?"));
    }
    const uint32_t j = held_ > 1 ? static_cast<uint32_t>(rng_() % held_) : 0;
    std::copy_n(buffer_x_.data() + size_t(j) * features(), features(), x);
    std::copy_n(buffer_ids_.data() + size_t(j) * fields(), fields(), ids);
    *y = buffer_y_[j];
    ++position_;
    if (!input_done_) {
      TESSERA_ASSIGN_OR_RETURN(const bool got, ReadOwn(j));
      if (got) return absl::OkStatus();
      input_done_ = true;
    }
    // The file is done: the last held example fills the hole.
    --held_;
    std::copy_n(buffer_x_.data() + size_t(held_) * features(), features(),
                buffer_x_.data() + size_t(j) * features());
    std::copy_n(buffer_ids_.data() + size_t(held_) * fields(), fields(),
                buffer_ids_.data() + size_t(j) * fields());
    buffer_y_[j] = buffer_y_[held_];
    return absl::OkStatus();
  }

  absl::Status Skip(uint64_t n) {
    std::vector<float> xs(features());
    std::vector<uint64_t> ids(fields());
    int32_t y;
    for (uint64_t i = 0; i < n; ++i) TESSERA_RETURN_IF_ERROR(Emit(xs.data(), ids.data(), &y));
    return absl::OkStatus();
  }

  const std::string path_, key_;
  const uint64_t vocab_, seed_;
  const uint32_t rank_, workers_;
  uint32_t capacity_;  // examples the shuffle buffer holds
  uint64_t per_epoch_ = 0;
  uint64_t skipped_ = 0;

  LineReader reader_;
  bool open_ = false;
  bool input_done_ = false;
  uint32_t epoch_ = 0;
  uint64_t position_ = 0;  // examples handed out this epoch
  uint32_t held_ = 0;      // examples in the buffer
  std::mt19937_64 rng_;
  std::vector<float> buffer_x_;
  std::vector<uint64_t> buffer_ids_;
  std::vector<int32_t> buffer_y_;
};

class ReadAheadStream : public ExampleStream {
 public:
  explicit ReadAheadStream(std::unique_ptr<ExampleStream> inner)
      : ExampleStream(inner->features(), inner->classes(), inner->fields()),
        inner_(std::move(inner)),
        thread_([this] { Loop(); }) {}

  ~ReadAheadStream() override {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
  }

  uint64_t examples_per_epoch() const override { return inner_->examples_per_epoch(); }
  uint64_t skipped_lines() const override { return inner_->skipped_lines(); }

  absl::Status Seek(uint32_t epoch, uint64_t position) override {
    epoch_ = epoch;
    position_ = position;
    return absl::OkStatus();
  }

  absl::Status Next(uint32_t n, Dataset* out) override {
    absl::Status status;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &ReadAheadStream::Idle));
      if (ahead_.has_value() && ahead_->epoch == epoch_ && ahead_->position == position_ &&
          ahead_->n == n) {
        std::swap(*out, ahead_batch_);
        status = ahead_status_;
      } else {
        // Not what was read ahead: read it here (the thread is idle).
        status = inner_->Seek(epoch_, position_);
        if (status.ok()) status = inner_->Next(n, out);
      }
      ahead_.reset();
      if (!status.ok()) return status;
      position_ += out->size();
      Job next{epoch_, position_, n};
      if (position_ + n > inner_->examples_per_epoch()) next = Job{epoch_ + 1, 0, n};
      job_ = next;
    }
    return status;
  }

 private:
  struct Job {
    uint32_t epoch;
    uint64_t position;
    uint32_t n;
  };

  bool Idle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !job_ && !reading_; }
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return job_.has_value() || stop_; }

  void Loop() {
    absl::MutexLock lock(&mu_);
    while (true) {
      mu_.Await(absl::Condition(this, &ReadAheadStream::HasWork));
      if (stop_) return;
      const Job job = *job_;
      job_.reset();
      reading_ = true;
      mu_.Unlock();
      absl::Status status = inner_->Seek(job.epoch, job.position);
      if (status.ok()) status = inner_->Next(job.n, &ahead_batch_);
      mu_.Lock();
      reading_ = false;
      ahead_ = job;
      ahead_status_ = status;
    }
  }

  const std::unique_ptr<ExampleStream> inner_;
  // The caller's position.
  uint32_t epoch_ = 0;
  uint64_t position_ = 0;

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<Job> job_ ABSL_GUARDED_BY(mu_);    // to read next
  bool reading_ ABSL_GUARDED_BY(mu_) = false;      // the thread holds inner_ and ahead_batch_
  std::optional<Job> ahead_ ABSL_GUARDED_BY(mu_);  // what ahead_batch_ holds
  absl::Status ahead_status_ ABSL_GUARDED_BY(mu_);
  Dataset ahead_batch_;  // the thread's while reading_, else under mu_
  std::thread thread_;   // last: starts after the members it uses
};

}  // namespace

std::unique_ptr<ExampleStream> ReadAhead(std::unique_ptr<ExampleStream> inner) {
  return std::make_unique<ReadAheadStream>(std::move(inner));
}

absl::Status ParseClickLine(std::string_view line, uint32_t dense, uint32_t fields, uint64_t vocab,
                            float* x, uint64_t* ids, int32_t* y) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);  // CRLF files
  const uint32_t columns = 1 + dense + fields;
  const auto expected = [&] {
    return absl::StrCat("expected ", columns, " tab-separated columns (a label, ", dense,
                        " integers, ", fields, " categories)");
  };
  if (line.empty()) return absl::InvalidArgumentError("an empty line: " + expected());
  uint32_t column = 0;
  size_t start = 0;
  while (true) {
    const size_t tab = line.find('\t', start);
    const std::string_view cell =
        line.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start);
    if (column >= columns)
      return absl::InvalidArgumentError(absl::StrCat("too many columns: ", expected()));
    if (column == 0) {
      if (cell == "0" || cell == "1") {
        *y = cell[0] - '0';
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("the label is ", Quote(cell), ": expected 0 or 1"));
      }
    } else if (column <= dense) {
      int64_t v = 0;
      if (!cell.empty()) {
        const char* end = cell.data() + cell.size();
        auto [ptr, ec] = std::from_chars(cell.data(), end, v);
        if (ec != std::errc() || ptr != end) {
          return absl::InvalidArgumentError(
              absl::StrCat("column ", column + 1, " is ", Quote(cell), ": expected an integer"));
        }
      }
      x[column - 1] = v > 0 ? static_cast<float>(std::log1p(static_cast<double>(v))) : 0.0f;
    } else {
      const uint32_t field = column - 1 - dense;
      ids[field] = cell.empty() ? 0 : CategoryId(cell, field, vocab);
    }
    ++column;
    if (tab == std::string_view::npos) break;
    start = tab + 1;
  }
  if (column != columns) {
    return absl::InvalidArgumentError(absl::StrCat(column, " columns: ", expected()));
  }
  return absl::OkStatus();
}

std::unique_ptr<ExampleStream> StreamOf(const Dataset* data, uint32_t rank, uint32_t workers,
                                        uint64_t seed, bool shuffle) {
  return std::make_unique<DatasetStream>(data, nullptr, rank, workers, seed, shuffle);
}

absl::StatusOr<std::unique_ptr<ExampleStream>> OpenExamples(const JobConfig& config, bool train,
                                                            uint32_t rank) {
  // training.balance dynamic: every worker reads the whole training set (its
  // share of each step is cut from one order).
  const uint32_t workers =
      train && config.training.balance == Balance::kStatic ? config.cluster.workers : 1;
  if (workers == 1) rank = 0;
  switch (config.data.dataset) {
    case DatasetKind::kSyntheticCtr: {
      auto stream = std::make_unique<SyntheticCtrStream>(config, train, rank, workers, train);
      if (!train) return stream;
      return ReadAhead(std::move(stream));
    }
    case DatasetKind::kCriteoTsv: {
      auto stream = std::make_unique<TsvStream>(
          config, train ? config.data.train_file : config.data.test_file,
          train ? "data.train_file" : "data.test_file", rank, workers,
          train ? config.data.shuffle_buffer : 1);
      TESSERA_RETURN_IF_ERROR(stream->Count());
      if (!train) return stream;
      return ReadAhead(std::move(stream));
    }
    case DatasetKind::kFashionMnist:
    case DatasetKind::kSynthetic:
      break;
  }
  TESSERA_ASSIGN_OR_RETURN(Dataset data, LoadDataset(config.data, train));
  auto owned = std::make_unique<Dataset>(std::move(data));
  const Dataset* view = owned.get();
  return std::make_unique<DatasetStream>(view, std::move(owned), rank, workers,
                                         config.training.seed, train);
}

}  // namespace tessera
