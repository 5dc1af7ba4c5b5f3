#!/usr/bin/env python3
"""Recovery times of restarted shards, read from the logs of `tessera run` output folders.

    scripts/recovery_times.py runs/chaos-*/run-*

For every server that was restarted (a second "ready" line in server-N.log), it prints
the restore (what the shard read and how long it took, from its own log line), the time
from the restarted process's first line to its "ready" line (start-up, restore included),
and from "ready" until every worker had reconnected ("reconnected" in worker-N.log): the
job can make progress again from then on. The last line gives the medians and maxima.
"""
import datetime
import glob
import os
import re
import statistics
import sys

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")
RESTORED = re.compile(r"restored checkpoint of clock (\d+) from \S+: (\d+) bytes in ([\d.]+) s")


def stamp(line):
    m = STAMP.match(line)
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f") if m else None


def lines(path):
    with open(path, errors="replace") as f:
        return [(stamp(l), l) for l in f if stamp(l)]


def restarts(server_log):
    """(first line time, ready time, restore seconds or None) of each restarted process.

    A process with checkpoints on opens its log with its restore line ("restored
    checkpoint ..." or "checkpoint: none to restore"); its "ready" line follows.
    """
    out, first, restore = [], None, None
    processes = 0
    for t, l in lines(server_log):
        m = RESTORED.search(l)
        if m or "checkpoint: none to restore" in l:
            processes += 1
            first, restore = t, (float(m.group(3)) if m else None)
        if " ready on " in l and first is not None:
            if processes > 1:
                out.append((first, t, restore))
            first = None
    return out


def main(dirs):
    starts, reconnects, restores = [], [], []
    for d in dirs:
        workers = sorted(glob.glob(os.path.join(d, "worker-*.log")))
        reconnected = [[t for t, l in lines(w) if "reconnected" in l] for w in workers]
        for server_log in sorted(glob.glob(os.path.join(d, "server-*.log"))):
            for first, ready, restore in restarts(server_log):
                # Each worker's first reconnect after this restart.
                after = [min((t for t in ts if t >= first), default=None) for ts in reconnected]
                if None in after:
                    continue
                back = (max(after) - ready).total_seconds()
                start = (ready - first).total_seconds()
                starts.append(start)
                reconnects.append(back)
                restores.append(restore or 0.0)
                print(f"{server_log}: restore {restore if restore is not None else 'none'} s, "
                      f"start to ready {start:.3f} s, ready to every worker reconnected {back:.3f} s")
    if not reconnects:
        print("no restarted shard found")
        return 1
    print(f"{len(reconnects)} restarts: start-up (restore included) median "
          f"{statistics.median(starts):.3f} s, max {max(starts):.3f} s; ready to every worker back "
          f"median {statistics.median(reconnects):.3f} s, max {max(reconnects):.3f} s; restore "
          f"read max {max(restores):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
