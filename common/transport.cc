#include "common/transport.h"

namespace tessera {
namespace {

// Applies the shared settings through `set(name, value)`. Measured on the
// build machine (docs/PERFORMANCE.md); a larger window did not help further.
template <typename Set>
void Tune(Set set) {
  // HTTP/2 flow-control window per stream (gRPC's "lookahead").
  set("grpc.http2.lookahead_bytes", 1 << 20);
  // Largest HTTP/2 frame the peer may send: fewer frames per megabyte.
  set("grpc.http2.max_frame_size", 1 << 20);
  // Read from the socket in large chunks.
  set("grpc.experimental.tcp_read_chunk_size", 1 << 20);
  set("grpc.experimental.tcp_min_read_chunk_size", 256 << 10);
  set("grpc.experimental.tcp_max_read_chunk_size", 4 << 20);
}

}  // namespace

grpc::ChannelArguments ClientChannelArgs(int64_t max_message_bytes, int channel_id) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(max_message_bytes));
  args.SetMaxSendMessageSize(static_cast<int>(max_message_bytes));
  args.SetInt("tessera.channel_id", channel_id);
  // A restarted shard is back within a second or two: reconnect attempts
  // start 100 ms apart (gRPC's default is 1 s) and back off to at most 2 s.
  // GRPC_ARG_MIN_RECONNECT_BACKOFF_MS is left at gRPC's 20 s on purpose: it is
  // not a backoff but the time a connection attempt may take (TCP + HTTP/2
  // SETTINGS + TLS). At 100 ms a busy shard's handshakes timed out, and 128
  // clients starting at once got UNAVAILABLE for two calls in three
  // (bench/abuse_bench --mode pulls). A refused connection still fails at once.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  // A peer cut off (a partition, a host that froze) sends no RST: without a
  // ping, a call in flight to it would wait out its whole deadline (30 s for
  // a push). While calls are in flight the channel pings every second, and
  // a ping not answered within kKeepaliveTimeoutMs fails those calls
  // UNAVAILABLE, so a worker turns to the shard's standby. The ack of a ping
  // may queue behind a full socket buffer (about 4 MB): 2 s allows links
  // down to about 20 Mbit/s.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  Tune([&](const char* name, int value) { args.SetInt(name, value); });
  return args;
}

void ApplyServerTransport(grpc::ServerBuilder* builder, int64_t max_message_bytes) {
  builder->SetMaxReceiveMessageSize(static_cast<int>(max_message_bytes));
  builder->SetMaxSendMessageSize(static_cast<int>(max_message_bytes));
  Tune([&](const char* name, int value) { builder->AddChannelArgument(name, value); });
  // A connection holds a descriptor until it closes. One that has not sent
  // its HTTP/2 preface and SETTINGS (TLS included) within 10 s is closed
  // (gRPC's default is 120 s), and one with no call for 5 minutes gets a
  // GOAWAY (a worker's channel reconnects on its next call): idle sockets
  // from strangers cannot pile up against the descriptor limit.
  builder->AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, 10'000);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, 5 * 60'000);
  // The clients' keepalive pings (ClientChannelArgs) are welcome, however
  // often, and never cost a connection a GOAWAY ("too_many_pings").
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                              kKeepaliveTimeMs / 2);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
}

bool IsLoopbackAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  const std::string host = address.substr(0, colon == std::string::npos ? address.size() : colon);
  return host == "localhost" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

}  // namespace tessera
