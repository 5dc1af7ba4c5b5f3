// SharedSegment: a named POSIX shared-memory segment that carries the bulk
// bytes of pulls and pushes between a worker and a shard on the same host, so
// that the gRPC call carries only its small control message
// (worker.shared_memory; DESIGN.md "Shared memory").
//
//   worker:  auto seg = SharedSegment::Create(bytes);       // maps, writes a token
//            Register{shared_memory: {seg->name(), bytes, seg->token()}}
//            seg->Unlink();                                  // after Register answered
//   shard:   auto seg = SharedSegment::Open(name, bytes, token);
//            seg->CopyOut(offset, dst, n);   // bounds-checked, survives a shrunk file
//            seg->CopyIn(offset, src, n);
//
// Open checks the size and the 16 random bytes the creator wrote at the
// segment's start: a shard that sees the same bytes shares the worker's memory
// (not a same-named segment in another container or on another host). Once
// the name is unlinked the mapping lives on in both processes until unmapped,
// so nothing is left in /dev/shm after a clean start.
//
// Layout: a 64-byte header (magic, token), then capacity() payload bytes.
//
// The opener does not trust the creator (docs/RELIABILITY.md, "Hostile
// input"): Open refuses a capacity that is not exactly the file's size less
// the header (no arithmetic on the client's number can wrap), and the creator
// may still shrink the file under the mapping at any time, after which a load
// or store past the new end raises SIGBUS. So the opener touches the payload
// only through CopyIn/CopyOut: plain memcpy under a SIGBUS guard (a
// process-wide handler, (re)installed by each guarded copy when another took
// its place, that siglongjmps out of a guarded
// copy on this thread and otherwise hands the signal to the previous
// disposition). A copy that faults returns DATA_LOSS and the process lives;
// no lock is held across a guarded copy. Bytes() hands out raw pointers and
// is for the creator, whose own memory it is.
//
// Threading: the object is immutable after creation and safe to share. Which
// side may write which payload bytes when is the protocol's business: one
// call in flight per area (worker/grpc_ps_client.h, server/shard.h).
#ifndef TESSERA_COMMON_SHARED_MEMORY_H_
#define TESSERA_COMMON_SHARED_MEMORY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace tessera {

class SharedSegment {
 public:
  static constexpr size_t kHeaderBytes = 64;
  static constexpr size_t kTokenBytes = 16;

  // Creates and maps a new segment of `capacity` payload bytes (> 0), named
  // "/tessera-<pid>-<random>", with a fresh random token in its header.
  static absl::StatusOr<std::unique_ptr<SharedSegment>> Create(uint64_t capacity);

  // Maps an existing segment. INVALID_ARGUMENT for a name not made by
  // Create; NOT_FOUND when no such segment is visible here; FAILED_PRECONDITION
  // when its size or token differ from what the creator said.
  static absl::StatusOr<std::unique_ptr<SharedSegment>> Open(const std::string& name,
                                                             uint64_t capacity,
                                                             const std::string& token);

  ~SharedSegment();
  SharedSegment(const SharedSegment&) = delete;
  SharedSegment& operator=(const SharedSegment&) = delete;

  const std::string& name() const { return name_; }
  const std::string& token() const { return token_; }
  uint64_t capacity() const { return capacity_; }

  // Largest capacity Open accepts (1 TiB): far above any real segment, far
  // below where offset arithmetic could wrap.
  static constexpr uint64_t kMaxCapacity = uint64_t{1} << 40;

  // The payload bytes [offset, offset + bytes). INVALID_ARGUMENT when they
  // do not lie inside the payload or offset is not a multiple of 8.
  // For the creator only (see above).
  absl::StatusOr<char*> Bytes(uint64_t offset, uint64_t bytes) const;

  // Copies payload [offset, offset + n) out to `dst`, or `src` into it.
  // INVALID_ARGUMENT outside the payload (as Bytes); DATA_LOSS when the
  // memory is gone under the mapping (the file was shrunk): the bytes copied
  // so far are unspecified. Thread-safe; async-signal-unsafe.
  absl::Status CopyOut(uint64_t offset, void* dst, uint64_t n) const;
  absl::Status CopyIn(uint64_t offset, const void* src, uint64_t n) const;

  // Removes the name; mappings stay valid. Idempotent.
  void Unlink();

  // Makes SIGTERM and SIGINT remove the names of every segment this process
  // created and has not unlinked yet, then end the process as the signal
  // would (a worker stopped while it waits for its servers leaves nothing in
  // /dev/shm). Replaces those signals' dispositions: for daemons that do not
  // handle them otherwise. SIGKILL cannot be caught; names carry the pid.
  static void UnlinkOnTermination();

 private:
  SharedSegment(std::string name, std::string token, uint64_t capacity, char* base, bool owner);

  const std::string name_;
  const std::string token_;
  const uint64_t capacity_;
  char* const base_;  // the mapping: header, then payload
  std::atomic<bool> linked_;  // the creator still owns the name
};

}  // namespace tessera

#endif  // TESSERA_COMMON_SHARED_MEMORY_H_
