// What the codecs' own files share (common/codec.cc, common/topk_codec.cc);
// nothing else includes this. Users see common/codec.h.
#ifndef TESSERA_COMMON_CODEC_INTERNAL_H_
#define TESSERA_COMMON_CODEC_INTERNAL_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/codec.h"
#include "proto/tessera.pb.h"

namespace tessera {

// INVALID_ARGUMENT naming the payload's codec and what is wrong with it.
inline absl::Status BadPayload(const v1::Payload& p, const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("payload (", v1::Codec_Name(p.codec()), "): ", what));
}

// The TOPK encoder (common/topk_codec.cc): keeps ceil(ratio x n) values (at
// least 1, none of them 0), sent in `values`, a fixed-width codec that must
// outlive it (CodecOf's).
std::unique_ptr<Codec> MakeTopkCodec(double ratio, const Codec& values);

}  // namespace tessera

#endif  // TESSERA_COMMON_CODEC_INTERNAL_H_
