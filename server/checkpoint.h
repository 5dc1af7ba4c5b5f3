// Shard checkpoints on disk: one folder per checkpoint under a shard's root
// (`checkpoint.dir`/shard-N/), written atomically and verified when read.
//
//   CheckpointStore store(absl::StrCat(dir, "/shard-", index), /*keep=*/2);
//   TESSERA_ASSIGN_OR_RETURN(CheckpointInfo info, store.Write(state));
//   absl::StatusOr<ShardState> back = store.LoadNewest(identity, /*clock=*/-1, &log);
//
// Layout of one checkpoint, `ckpt-<clock, 12 digits>-<unix ms, 13 digits>/`:
//   data      every table's bytes back to back (proto/checkpoint.proto says how)
//   MANIFEST  "TSCKPT01", the zlib CRC-32 of the manifest message, the message:
//             identity, the cut's clock, worker clocks, per table its byte
//             range of `data`, that range's CRC-32 and the optimizer steps.
// Write: both files go into `.tmp-<name>/`, are fsynced, the folder is renamed
// to its name and the root fsynced; only then are checkpoints beyond the
// newest `keep` deleted, so the last good one never goes before a newer one
// is complete. A crash leaves at most a .tmp- folder, removed at next start.
// Load: newest first; a manifest that fails its CRC or does not parse, a data
// file of the wrong size or a range that fails its CRC is skipped (the reason
// goes to *log) and the next older one tried. An identity that differs from
// the restoring shard's is refused (FAILED_PRECONDITION, naming the field):
// that is someone else's state, not a torn file.
//
// Threading: a store is used from one thread at a time; distinct stores (or
// the static readers) from any thread.
#ifndef TESSERA_SERVER_CHECKPOINT_H_
#define TESSERA_SERVER_CHECKPOINT_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/checkpoint.pb.h"

namespace tessera {

// A table's bytes: memory of its own, not zeroed when made (a 1 GiB table
// is copied, not cleared first), or a view into a mapped checkpoint file
// that the buffer keeps mapped.
class ByteBuffer {
 public:
  ByteBuffer() = default;
  explicit ByteBuffer(uint64_t size) : data_(new char[size]), size_(size) {
    owned_ = std::shared_ptr<const void>(data_, [](const void* p) { delete[] static_cast<const char*>(p); });
  }
  // A view of `size` bytes at `data`, alive while `keep` is.
  ByteBuffer(std::shared_ptr<const void> keep, char* data, uint64_t size)
      : owned_(std::move(keep)), data_(data), size_(size), writable_(false) {}
  // Memory of its own (not a view of a mapped file): may be written into.
  bool writable() const { return writable_; }
  char* data() { return data_; }
  const char* data() const { return data_; }
  uint64_t size() const { return size_; }
  // Keeps the first `size` bytes (the memory stays allocated).
  void Shrink(uint64_t size) { size_ = std::min(size_, size); }

 private:
  std::shared_ptr<const void> owned_;
  char* data_ = nullptr;
  uint64_t size_ = 0;
  bool writable_ = true;
};

// A shard's state at one cut: the manifest (crc32 and offsets are filled in
// by Write) and each table's bytes, in manifest order.
struct ShardState {
  v1::CheckpointManifest manifest;
  std::vector<ByteBuffer> tables;

  uint64_t bytes() const;
};

struct CheckpointInfo {
  std::string path;  // the checkpoint's folder
  int64_t clock = 0;
  uint64_t bytes = 0;  // data file
  double seconds = 0;  // writing (or reading and verifying) it
};

class CheckpointStore {
 public:
  // `root` is created when missing; leftover .tmp- folders are removed.
  CheckpointStore(std::string root, uint32_t keep);

  const std::string& root() const { return root_; }

  // Writes `state` as a new checkpoint and prunes to the newest `keep`.
  // Fills the manifest's offsets, sizes and checksums. INTERNAL (with the
  // path and errno's text) when a write, fsync or rename fails; the
  // checkpoints already there are then left as they were.
  absl::StatusOr<CheckpointInfo> Write(ShardState* state);

  // The newest checkpoint that is whole and matches `want` (and, with
  // clock >= 0, is of that clock). NOT_FOUND when there is none (each one
  // skipped is named in *log); FAILED_PRECONDITION when a checkpoint belongs
  // to another job, layout or sharding.
  // `fits` (optional) judges each manifest before its data is read (the
  // shard's CheckManifest): one it refuses is skipped and named in *log,
  // as a torn one is, so a crafted manifest never makes the store read or
  // map more than the layout holds.
  using ManifestCheck = std::function<absl::Status(const v1::CheckpointManifest&)>;
  absl::StatusOr<ShardState> LoadNewest(const v1::CheckpointIdentity& want, int64_t clock,
                                        std::vector<std::string>* log, CheckpointInfo* info,
                                        const ManifestCheck& fits = nullptr) const;

  // Reads and verifies one checkpoint folder: the manifest's frame and
  // checksum, its identity, `fits`, the data file's size, the tables'
  // byte ranges (which tile the file exactly) and their checksums.
  static absl::StatusOr<ShardState> Load(const std::string& path,
                                         const v1::CheckpointIdentity& want,
                                         const ManifestCheck& fits = nullptr);
  // Reads and verifies only the manifest of one checkpoint folder.
  static absl::StatusOr<v1::CheckpointManifest> ReadManifest(const std::string& path);
  // Replaces the manifest of checkpoint folder `path` with `m`, framed and
  // checksummed as Write does (repair tools; tests that craft checkpoints).
  static absl::Status WriteManifest(const std::string& path, const v1::CheckpointManifest& m);
  // OK when the tables' byte ranges tile [0, data_bytes) in order with
  // nothing left over; DATA_LOSS naming the first that does not.
  static absl::Status CheckTiling(const v1::CheckpointManifest& m);
  // Complete checkpoint folders under `root`, oldest first.
  static std::vector<std::string> List(const std::string& root);
  // "" when the two identities agree, else one line naming the first difference.
  static std::string IdentityDifference(const v1::CheckpointIdentity& have,
                                        const v1::CheckpointIdentity& want);

 private:
  const std::string root_;
  const uint32_t keep_;
};

// training.balance dynamic's plan log, `root`/EPOCH_PLANS (proto/checkpoint.proto):
// replaced whole each time, through a temporary file that is fsynced,
// renamed over the old one, and the folder fsynced; a crash leaves the old
// log or the new one. INTERNAL (path and errno's text) when a step fails.
absl::Status WritePlanLog(const std::string& root, const v1::EpochPlanLog& log);
// NOT_FOUND when `root` has none; DATA_LOSS when it is torn or corrupt.
absl::StatusOr<v1::EpochPlanLog> ReadPlanLog(const std::string& root);

// The newest clock at which every one of `num_shards` shards under `dir`
// has a checkpoint whose manifest verifies: the consistent cut a stopped BSP
// job resumes from. NOT_FOUND naming the shard when there is none.
absl::StatusOr<int64_t> NewestCommonClock(const std::string& dir, uint32_t num_shards);

// Each shard's newest clock with a manifest that verifies (SSP/ASP cut at
// each shard's own moment). NOT_FOUND naming a shard that has none.
absl::StatusOr<std::vector<int64_t>> NewestClocks(const std::string& dir, uint32_t num_shards);

}  // namespace tessera

#endif  // TESSERA_SERVER_CHECKPOINT_H_
