#!/usr/bin/env bash
# #29's partition target: a 2x2 BSP job under `tessera run --replicas 1` on
# the emulated network, shard 0's primary cut off from everyone (workers,
# standby, etcd) for 5 s and then healed, ROUNDS times. Each round is the
# partition case of tests/e2e/network_test.cc, which checks it completed,
# lost no clock, ended with an uninterrupted run's model to the bit (no
# acknowledged update lost), and that the terms the workers' pushes were
# accepted under never went back (one primary at a time). Printed per round,
# from the daemons' own logs: the cut to the standby's "is primary now", and
# to the last worker's "reconnected" (training goes on).
#   [MODE=asp] bench/partition.sh [ROUNDS]
# MODE=asp runs the ASP case instead (hidden from CI): the same checks, but
# the model is compared between each shard's two daemons, not with a run
# without the partition (ASP's pushes apply in an order no two runs share).
# Needs root (network namespaces), /usr/bin/etcd and
# `bazel build //tests:e2e/network_test`.
set -uo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
case "${MODE:-bsp}" in
  bsp) case_name="a primary cut off from*" ;;
  asp) case_name="a primary cut off for 5 s under ASP*" ;;
  *) echo "MODE is bsp or asp, not '$MODE'"; exit 2 ;;
esac
bin=bazel-bin/tests/e2e/network_test
[ -x "$bin" ] || { echo "build it first: bazel build //tests:e2e/network_test"; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
for round in $(seq "$rounds"); do
  rm -rf "${tmp:?}"/*
  if ! (cd "$bin.runfiles/tessera" && TEST_SRCDIR="$PWD/.." TEST_TMPDIR="$tmp" \
          ../../network_test "$case_name" > "$tmp/out.txt" 2>&1); then
    echo "round $round FAILED:"; grep -a -B2 -A6 "FAILED\|REQUIRE\|CHECK" "$tmp/out.txt" | head -40
    continue
  fi
  passed=$((passed + 1))
  /usr/bin/python3 - "$tmp/partition" "$tmp/out.txt" "$round" <<'PY'
import datetime, glob, json, re, sys
d, out, round_ = sys.argv[1], sys.argv[2], sys.argv[3]
stamp = lambda s: datetime.datetime.strptime(s[:23], "%Y-%m-%d %H:%M:%S.%f")
cut = stamp(re.search(r"cut at (\S+ \S+)", open(out).read()).group(1))
def lines(pattern, text):
    return [stamp(l) for l in text.splitlines() if pattern in l and re.match(r"\d{4}-", l)]
workers = "".join(open(f).read() for f in sorted(glob.glob(d + "/worker-*.log")))
promoted = min(lines("is primary now", open(d + "/standby-0.log").read()))
back = max(lines("reconnected", workers))
summary = json.load(open(d + "/summary.json"))
ms = lambda t: (t - cut).total_seconds() * 1000
print(f"round {round_}: passed; standby primary {ms(promoted):.0f} ms after the cut, workers "
      f"training again at {ms(back):.0f} ms; lost clocks {summary['lost_clocks']}, "
      f"job {summary['wall_seconds']:.1f} s")
PY
done
echo "$passed of $rounds rounds passed"
[ "$passed" = "$rounds" ]
