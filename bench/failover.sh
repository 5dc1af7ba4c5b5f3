#!/usr/bin/env bash
# How long a 2x2 BSP job stands still when a primary is killed (#29's
# failover target), measured from the daemons' own logs: the kill -9 case of
# tests/e2e/replication_test.cc (a real etcd, standbys, the launcher; shard
# 0's primary killed once shard 0 checkpointed clock 60), run ROUNDS times.
#   bench/failover.sh [ROUNDS]
# Per round: "promoted" = from the first worker's "reconnecting" line (the
# kill, within a millisecond: the connection resets) to the standby's "is
# primary now"; "back" = to the last worker's "reconnected" (training goes on).
# Needs `bazel build //tests:e2e/replication_test` and /usr/bin/etcd.
set -uo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
bin=bazel-bin/tests/e2e/replication_test
[ -x "$bin" ] || { echo "build it first: bazel build //tests:e2e/replication_test"; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for round in $(seq "$rounds"); do
  rm -rf "${tmp:?}"/*
  (cd "$bin.runfiles/tessera" && TEST_SRCDIR="$PWD/.." TEST_TMPDIR="$tmp" \
     ../../replication_test "a primary killed*" \
       -c "kill -9; the old primary comes back as the new one's standby" > "$tmp/out.txt" 2>&1) ||
    { echo "round $round failed:"; tail -5 "$tmp/out.txt"; exit 1; }
  # A section name that matches nothing runs nothing, and passes.
  [ -f "$tmp/failover-kill/standby-0.log" ] ||
    { echo "round $round ran no kill (the test's section was renamed?)"; exit 1; }
  /usr/bin/python3 - "$tmp/failover-kill" "$round" <<'PY'
import re, sys, datetime, glob
d, round_ = sys.argv[1], sys.argv[2]
def stamp(line):
    return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
def lines(pattern, text):
    return [stamp(l) for l in text.splitlines() if pattern in l and re.match(r"\d{4}-", l)]
workers = "".join(open(f).read() for f in sorted(glob.glob(d + "/worker-*.log")))
standby = open(d + "/standby-0.log").read()
lost = min(lines("reconnecting for up to", workers))
promoted = min(lines("is primary now", standby))
back = max(lines("reconnected", workers))
early = "ends now" in standby
ms = lambda t: (t - lost).total_seconds() * 1000
print(f"round {round_}: promoted {ms(promoted):.0f} ms, workers back {ms(back):.0f} ms"
      f" ({'term ended at once: address refused' if early else 'lease expired'})")
PY
done
