// A worker's last push, kept in a file in /dev/shm (memory, not disk) until
// the next push replaces it, so that a worker killed while one of its shards
// fails over can send that push again once it is started again; without it
// the push lived only in the dead primary and the dead worker, and the clock
// was lost (docs/DESIGN.md "Failover"). Used with cluster.standbys and a
// security.session_file (tessera run keeps one per rank, so a restarted
// worker is the same holder of its rank).
//
//   HeldPushFile file(HeldPushFile::PathFor(session_file, rank), session);
//   file.Save(clock, values_clock, grads, &rows);   // before the push is sent
//   std::optional<HeldPush> p = file.Load();        // when started again
//
// Two files, PATH.0 and PATH.1, take turns: a push is written over the older
// of the two, in place (its pages are reused, so a save is one copy, with no
// page allocated or freed), its sequence number first and again after its
// last byte. A kill in the middle leaves a slot whose two numbers differ, and
// the other slot's push, the one before, is loaded.
//
// Threading: one thread at a time (the one that pushes).
#ifndef TESSERA_WORKER_HELD_PUSH_H_
#define TESSERA_WORKER_HELD_PUSH_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "worker/parameter_set.h"
#include "worker/ps_client.h"

namespace tessera {

struct HeldPush {
  int64_t clock = -1;
  std::optional<int64_t> values_clock;
  ParameterSet grads;
  RowSet rows;  // pushed at `clock` too, when not empty
};

class HeldPushFile {
 public:
  // `session`: the rank's session secret (a file of another session, such
  // as an earlier run's at the same path, is not loaded).
  HeldPushFile(std::string path, std::string session);
  ~HeldPushFile();  // closes the files; they stay until Remove
  HeldPushFile(const HeldPushFile&) = delete;
  HeldPushFile& operator=(const HeldPushFile&) = delete;

  // /dev/shm/tessera-held-<CRC-32 of the session file's absolute path>-r<rank>.
  static std::string PathFor(const std::string& session_file, uint32_t rank);

  // Keeps this push in place of the one before the last; INTERNAL naming
  // the path on failure.
  absl::Status Save(int64_t clock, std::optional<int64_t> values_clock, const ParameterSet& grads,
                    const RowSet* rows);
  // The newest push saved whole in this session, or nullopt: none, another
  // session's, or none that reads whole (logged).
  std::optional<HeldPush> Load() const;
  void Remove();

  // The files' common prefix (logged); slot i is SlotPath(i).
  const std::string& path() const { return path_; }
  std::string SlotPath(int slot) const;

 private:
  const std::string path_;
  const uint32_t session_crc_;
  int fds_[2] = {-1, -1};  // opened at the first Save
  uint64_t next_sequence_ = 0;  // 0: read from the files at the first Save
  std::string buffer_;  // the push as written, kept for its capacity
};

}  // namespace tessera

#endif  // TESSERA_WORKER_HELD_PUSH_H_
