#!/usr/bin/env python3
"""Plots `mrc bench --json` results (JSON lines) as PNGs for docs/PERFORMANCE.md.

usage: python3 scripts/plot.py RESULTS.jsonl [MORE.jsonl ...] [--out DIR]

Writes into DIR (default: the first file's folder):
  throughput.png  delivered/s against offered, per scenario and label, with the raw NATS
                  request-reply and publish-subscribe rates of the same run as lines
  latency.png     end-to-end p50 / p99 / p99.9 against offered rate (1to1), with the
                  issue's targets (p99 <= 3 ms at 10k/s, <= 5 ms at 20k/s)
  cpu.png         CPU% of every process per 1to1 step (100% = one core)

scripts/bench.sh --plot installs matplotlib into .tools/py-bench and runs this.
"""

import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


def load(paths):
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    print(f"{path}:{n}: skipped ({e})", file=sys.stderr)
    return rows


def series_key(row):
    label = row.get("label") or ""
    return (row["scenario"], label)


def name(key):
    scenario, label = key
    return f"{scenario} ({label})" if label else scenario


def steps_by_series(rows, scenarios):
    series = {}
    for row in rows:
        if row.get("type") == "step" and row.get("scenario") in scenarios:
            series.setdefault(series_key(row), []).append(row)
    for key in series:
        series[key].sort(key=lambda r: r["offered"])
    return series


def throughput(rows, out):
    series = steps_by_series(rows, {"1to1", "multi"})
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    top = 0
    for key, steps in series.items():
        x = [s["offered"] * s.get("fanout", 1) for s in steps]
        y = [s["delivered_per_s"] for s in steps]
        top = max(top, max(x), max(y))
        ax.plot(x, y, marker="o", label=f"MRC {name(key)}")
    ax.plot([0, top], [0, top], color="grey", linestyle=":", label="delivered = offered")
    baselines = [r for r in rows if r.get("type") == "baseline"]
    if baselines:
        # The mean of the last run's measurements (before and after its steps), as the
        # bench's summary compares with.
        run = baselines[-1]["run"]
        same_run = [r for r in baselines if r["run"] == run]
        b = same_run[-1]
        rr = sum(r["request_reply_per_s"] for r in same_run) / len(same_run)
        ax.axhline(rr, color="tab:red", linestyle="--",
                   label=f"NATS request-reply, {b['in_flight']} in flight ({rr / 1e3:.0f}k/s)")
        ax.axhline(rr / 2, color="tab:red", linestyle=":", label="target: 0.5 x request-reply")
    ax.set_xlabel("offered deliveries per second (messages x receivers)")
    ax.set_ylabel("delivered per second")
    ax.set_title("Throughput: delivered vs offered")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    path = os.path.join(out, "throughput.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency(rows, out):
    series = steps_by_series(rows, {"1to1"})
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    styles = ["-", "--", "-.", ":"]
    for i, (key, steps) in enumerate(series.items()):
        x = [s["offered"] for s in steps]
        for q, color in (("p50", "tab:green"), ("p99", "tab:orange"), ("p999", "tab:red")):
            y = [max(s["latency"][f"{q}_us"], 1) / 1000 for s in steps]
            ax.plot(x, y, marker="o", color=color, linestyle=styles[i % len(styles)],
                    label=f"{q} {name(key)}")
    ax.scatter([10_000, 20_000], [3, 5], marker="x", s=80, color="black", zorder=5,
               label="target p99 (3 ms @10k, 5 ms @20k)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks([2_000, 5_000, 10_000, 20_000, 40_000, 80_000])
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks([1, 2, 3, 5, 10, 20, 50, 100, 1000, 10000])
    ax.set_xlabel("offered messages per second")
    ax.set_ylabel("end-to-end latency (ms)")
    ax.set_title("1:1 latency, send to receipt")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    path = os.path.join(out, "latency.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cpu(rows, out):
    series = steps_by_series(rows, {"1to1"})
    if not series:
        return None
    key, steps = list(series.items())[-1]
    labels = list(steps[0]["procs"].keys())
    fig, ax = plt.subplots(figsize=(8, 5))
    x = range(len(steps))
    bottom = [0.0] * len(steps)
    for label in labels:
        y = [(s["procs"].get(label, {}).get("cpu_pct") or 0) for s in steps]
        ax.bar(x, y, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, y)]
    ax.axhline(200, color="black", linestyle=":", label="2 cores")
    ax.set_xticks(list(x), [f"{s['offered'] / 1e3:g}k" for s in steps])
    ax.set_xlabel("offered messages per second")
    ax.set_ylabel("CPU % (100 = one core)")
    ax.set_title(f"CPU per process, {name(key)}")
    ax.legend(fontsize=8)
    path = os.path.join(out, "cpu.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+")
    parser.add_argument("--out")
    args = parser.parse_args()
    out = args.out or os.path.dirname(os.path.abspath(args.results[0]))
    os.makedirs(out, exist_ok=True)
    rows = load(args.results)
    for plot in (throughput, latency, cpu):
        path = plot(rows, out)
        if path:
            print(f"plot.py: wrote {path}")


if __name__ == "__main__":
    main()
