#include "common/transport.h"

#include <cstdlib>

namespace tessera {
namespace {

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}

// Applies the shared settings through `set(name, value)`.
template <typename Set>
void Tune(Set set) {
  // HTTP/2 flow-control window per stream (gRPC's "lookahead").
  set("grpc.http2.lookahead_bytes", EnvInt("TESSERA_LOOKAHEAD", 1 << 20));
  // Largest HTTP/2 frame: fewer frames (and wakeups) per megabyte.
  set("grpc.http2.max_frame_size", EnvInt("TESSERA_FRAME", 1 << 20));
  set("grpc.http2.write_buffer_size", EnvInt("TESSERA_WRITEBUF", 0));
  // Read from the socket in large chunks.
  set("grpc.experimental.tcp_read_chunk_size", EnvInt("TESSERA_READCHUNK", 1 << 20));
  set("grpc.experimental.tcp_min_read_chunk_size", EnvInt("TESSERA_MINREAD", 256 << 10));
  set("grpc.experimental.tcp_max_read_chunk_size", EnvInt("TESSERA_MAXREAD", 4 << 20));
}

}  // namespace

grpc::ChannelArguments ClientChannelArgs(int64_t max_message_bytes, int channel_id) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(max_message_bytes));
  args.SetMaxSendMessageSize(static_cast<int>(max_message_bytes));
  args.SetInt("tessera.channel_id", channel_id);
  Tune([&](const char* name, int value) {
    if (value > 0) args.SetInt(name, value);
  });
  return args;
}

void ApplyServerTransport(grpc::ServerBuilder* builder, int64_t max_message_bytes) {
  builder->SetMaxReceiveMessageSize(static_cast<int>(max_message_bytes));
  builder->SetMaxSendMessageSize(static_cast<int>(max_message_bytes));
  Tune([&](const char* name, int value) {
    if (value > 0) builder->AddChannelArgument(name, value);
  });
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address, int64_t max_message_bytes,
                                           int channel_id) {
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(),
                                   ClientChannelArgs(max_message_bytes, channel_id));
}

}  // namespace tessera
