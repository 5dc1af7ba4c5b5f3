#!/usr/bin/env bash
# A dense pull and push through one shard over an emulated link, against the
# link's own TCP rate (iperf3) measured on the same link in the same sitting:
#
#   scripts/link_bench.sh [RATE] [REPEATS] [PS_BENCH FLAGS...]
#                                  # RATE as tc writes it: 10gbit (default), 1gbit
#
# Two emulated hosts (tessera net up): the shard on one, ps_bench on the
# other, each host's link shaped to RATE both ways. Prints iperf3's rate each
# way, then ps_bench's dense lines (64 MiB as 8 requests at once, Adam on the
# shard). Needs root (network namespaces) and a build (bazel build //...).
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-10gbit}
repeats=${2:-10}
shift $(( $# >= 2 ? 2 : $# ))
extra=("$@")  # more ps_bench flags, e.g. --channels 4
dir=$(mktemp -d)
bin=bazel-bin
bazel-bin/launcher/tessera net up "$dir" "$rate" server client > "$dir/hosts" &
net=$!
cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2> /dev/null || true
  kill "$net" 2> /dev/null || true
  wait 2> /dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 100); do [ -s "$dir/network.json" ] && [ -s "$dir/hosts" ] && break; sleep 0.1; done
server_ns=$(awk '$1 == "server" {print $2}' "$dir/hosts")
server_ip=$(awk '$1 == "server" {print $3}' "$dir/hosts")
client_ns=$(awk '$1 == "client" {print $2}' "$dir/hosts")

# The link's own TCP rate, one stream each way (client -> server is a push).
ip netns exec "$server_ns" iperf3 -s -D -1 -B "$server_ip" > /dev/null
sleep 0.5
up=$(ip netns exec "$client_ns" iperf3 -c "$server_ip" -t 5 -J |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
ip netns exec "$server_ns" iperf3 -s -D -1 -B "$server_ip" > /dev/null
sleep 0.5
down=$(ip netns exec "$client_ns" iperf3 -c "$server_ip" -t 5 -R -J |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
python3 -c "print('iperf3 over the $rate link: client->server %.3f GB/s, server->client %.3f GB/s' % ($up / 8e9, $down / 8e9))"

sets=(--set "cluster.servers=[$server_ip:50071]" --set model.tables.1.reserve_rows=0)
ip netns exec "$server_ns" "$bin/server/tessera-server" --config configs/bench.yaml --shard 0 \
  "${sets[@]}" > "$dir/server.log" 2>&1 &
server=$!
ip netns exec "$client_ns" "$bin/bench/ps_bench" --config configs/bench.yaml "${sets[@]}" \
  --only dense --repeats "$repeats" "${extra[@]}"
