// ExampleStream: a worker's examples, one batch at a time, so that a data set
// larger than a worker's memory trains. Three kinds behind one interface:
//
//   - a Dataset in memory (Fashion-MNIST, the synthetic classification set),
//     gathered batch by batch in the Batcher's order;
//   - synthetic_ctr, each example made when its batch is asked for
//     (SyntheticCtrGenerator: a pure function of the example's index), so a
//     worker holds none of it;
//   - criteo_tsv, a click log read from a text file (plain or gzip'd) as the
//     epoch goes, through a shuffle buffer of data.shuffle_buffer examples.
//
// Training streams split the examples over the workers (worker r of W takes
// example or line i with i % W == r) and give every worker the same number
// of examples per epoch, so BSP clocks line up; each epoch has a fresh order
// drawn from (training.seed, epoch, rank). Test streams give every example
// once, in order. The training streams of click logs (made or parsed, some
// microseconds an example) read the next batch ahead on a thread of their
// own (ReadAhead).
//
//   auto train = OpenExamples(config, /*train=*/true, rank);
//   (*train)->Seek(epoch, step * batch);
//   Dataset batch;
//   (*train)->Next(batch_size, &batch);  // batch.size() examples, 0 at the epoch's end
//
// The click-log text format (criteo_tsv): one example a line, tab-separated:
// the label (0 or 1), model.dense_features integers, model.fields categories.
// Any column but the label may be empty. An integer v becomes the feature
// log(1 + max(v, 0)) (empty: 0); a category's bytes are hashed per field
// into an id in [1, model.vocab) (empty: id 0). A malformed line (wrong
// column count, a label other than 0/1, an integer that is not one) is
// skipped and counted: the stream reads the file once when it opens,
// counts each worker's good lines and logs the first few bad ones with
// their line numbers; a file with no good line is DATA_LOSS naming its
// first bad one.
//
// Threading: one thread at a time per stream.
#ifndef TESSERA_WORKER_EXAMPLE_STREAM_H_
#define TESSERA_WORKER_EXAMPLE_STREAM_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/config.h"
#include "worker/dataset.h"

namespace tessera {

class ExampleStream {
 public:
  virtual ~ExampleStream() = default;

  // Floats, classes and categorical fields of an example.
  uint32_t features() const { return features_; }
  uint32_t classes() const { return classes_; }
  uint32_t fields() const { return fields_; }

  // Examples one epoch gives this worker: the same for every worker of a job.
  virtual uint64_t examples_per_epoch() const = 0;
  // Malformed lines passed over (criteo_tsv), in the whole file.
  virtual uint64_t skipped_lines() const { return 0; }

  // Goes to example `position` of `epoch`. Cheap where it continues the
  // examples read so far; otherwise a file is read again from its start.
  virtual absl::Status Seek(uint32_t epoch, uint64_t position) = 0;
  // The next min(n, what the epoch has left) examples into *out (resized;
  // out->size() says how many, 0 at the epoch's end).
  virtual absl::Status Next(uint32_t n, Dataset* out) = 0;

 protected:
  ExampleStream(uint32_t features, uint32_t classes, uint32_t fields)
      : features_(features), classes_(classes), fields_(fields) {}

 private:
  const uint32_t features_, classes_, fields_;
};

// The training examples of worker `rank` (train; under training.balance
// dynamic every worker's are the whole set) or the whole test split (!train)
// of the job's data set. NOT_FOUND naming the key and how to fix it
// when a file is missing; DATA_LOSS for a file with no usable example.
absl::StatusOr<std::unique_ptr<ExampleStream>> OpenExamples(const JobConfig& config, bool train,
                                                            uint32_t rank);

// `inner` with its next batch read ahead on a thread of the stream's own
// while the caller trains on the current one: after Next(n) at position p
// it reads (p + n, n), or the next epoch's first n once the epoch has no n
// left. A Seek elsewhere is served by a read on the caller's thread. The
// caller still calls one method at a time; waiting for the read-ahead is
// bounded by the read itself (the inner stream waits on nothing else).
std::unique_ptr<ExampleStream> ReadAhead(std::unique_ptr<ExampleStream> inner);

// A stream over a Dataset in memory that `data` keeps (tests, and the
// Dataset-taking Trainer): worker `rank` of `workers`, shuffled per epoch
// like Batcher, or (workers 1, shuffle false) every example in order.
std::unique_ptr<ExampleStream> StreamOf(const Dataset* data, uint32_t rank, uint32_t workers,
                                        uint64_t seed, bool shuffle);

// Parses one click-log line (no newline) into x[0, dense), ids[0, fields)
// and *y as the format above says. INVALID_ARGUMENT saying what is wrong
// (the caller names the file and line).
absl::Status ParseClickLine(std::string_view line, uint32_t dense, uint32_t fields, uint64_t vocab,
                            float* x, uint64_t* ids, int32_t* y);

}  // namespace tessera

#endif  // TESSERA_WORKER_EXAMPLE_STREAM_H_
