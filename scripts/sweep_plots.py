#!/usr/bin/python3
"""Plots of a `tessera sweep` folder (launcher/sweep.h), with matplotlib.

    scripts/sweep_plots.py SWEEP_DIR

Reads SWEEP_DIR/results.csv and each successful run's metrics.jsonl, writes
  accuracy_vs_seconds.png  rank 0's test accuracy against its training seconds
  accuracy_vs_clock.png    the same against the clock (steps of rank 0)
  train_loss.png           rank 0's training loss (progress lines) against the clock
  throughput.png           samples/s of the whole job against the first grid key whose
                           values are numbers (e.g. cluster.workers), one line per
                           setting of the other keys, the mean of the repeats
                           (only when such a key exists)
one line per run, one colour per setting (the grid's values), and prints the
name of each PNG it wrote, one a line. The periodic points come from
training.eval_every_steps; each accuracy curve ends at the run's final
evaluation. Exit 1 with a message when the folder holds no usable run.
"""
import csv
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_runs(folder):
    with open(os.path.join(folder, "results.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return [], []
    columns = list(rows[0].keys())
    keys = columns[columns.index("repeat") + 1:columns.index("exit_code")]
    runs = []
    for row in rows:
        if row["exit_code"] != "0":
            continue
        run = {
            "setting": " ".join(f"{k}={row[k]}" for k in keys) or "as configured",
            "values": {k: row[k] for k in keys},
            "rate": float(row["samples_per_second"] or 0),
            "evals": [],
            "losses": [],
            "final": None,
        }
        path = os.path.join(row["out_dir"], "metrics.jsonl")
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if event.get("rank") != 0:
                        continue
                    if event.get("event") == "eval":
                        run["evals"].append((event["elapsed_s"], event["clock"], event["test_accuracy"]))
                    elif event.get("event") == "progress":
                        run["losses"].append((event["clock"], event["loss"]))
                    elif event.get("event") == "final" and "test_accuracy" in event:
                        run["final"] = (event["train_seconds"], event["steps"], event["test_accuracy"])
        runs.append(run)
    return keys, runs


def plot(runs, folder, name, title, xlabel, ylabel, points):
    """points(run) -> list of (x, y); one line per run, one colour per setting."""
    settings = list(dict.fromkeys(r["setting"] for r in runs))
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = False
    for run in runs:
        xy = points(run)
        if not xy:
            continue
        i = settings.index(run["setting"])
        label = run["setting"] if not any(l.get_label() == run["setting"] for l in ax.lines) else None
        ax.plot([p[0] for p in xy], [p[1] for p in xy], color=colours(i % 10), marker=".",
                linewidth=1.2, alpha=0.85, label=label)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(folder, name), dpi=100)
    plt.close(fig)
    return name


def number(text):
    try:
        return float(text)
    except ValueError:
        return None


def shown(key, value):
    """A grid value as a legend shows it: a list by its length (cluster.servers)."""
    if value.startswith("[") and value.endswith("]"):
        return f"{key}: {len([v for v in value[1:-1].split(',') if v.strip()])}"
    return f"{key}={value}"


def throughput(keys, runs, folder):
    """samples/s against the first numeric grid key; None when there is none."""
    numeric = [k for k in keys if all(number(r["values"][k]) is not None for r in runs)]
    if not numeric:
        return None
    x_key = numeric[0]
    others = [k for k in keys if k != x_key]
    series = {}
    for run in runs:
        label = " ".join(shown(k, run["values"][k]) for k in others) or "as configured"
        x = number(run["values"][x_key])
        series.setdefault(label, {}).setdefault(x, []).append(run["rate"])
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (label, points) in enumerate(series.items()):
        xs = sorted(points)
        ys = [sum(points[x]) / len(points[x]) for x in xs]
        ax.plot(xs, ys, color=colours(i % 10), marker="o", linewidth=1.4, label=label)
    ax.set_title("Throughput")
    ax.set_xlabel(x_key)
    ax.set_ylabel("samples/s, whole job (mean of repeats)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "throughput.png"), dpi=100)
    plt.close(fig)
    return "throughput.png"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    folder = sys.argv[1]
    keys, runs = read_runs(folder)
    if not runs:
        sys.exit(f"sweep_plots: {folder}/results.csv holds no successful run")

    def accuracy(x_index):
        def points(run):
            xy = [(e[x_index], e[2]) for e in run["evals"]]
            if run["final"]:
                xy.append((run["final"][x_index], run["final"][2]))
            return xy
        return points

    written = [
        plot(runs, folder, "accuracy_vs_seconds.png", "Test accuracy over training time",
             "training seconds (rank 0)", "test accuracy", accuracy(0)),
        plot(runs, folder, "accuracy_vs_clock.png", "Test accuracy over clocks",
             "clock (rank 0's steps)", "test accuracy", accuracy(1)),
        plot(runs, folder, "train_loss.png", "Training loss", "clock (rank 0's steps)",
             "training loss (mean since the last progress line)", lambda run: run["losses"]),
        throughput(keys, runs, folder),
    ]
    for name in written:
        if name:
            print(name)


if __name__ == "__main__":
    main()
