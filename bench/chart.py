"""Draws bench/results/latest.json as a PNG: latency at concurrency 1 and throughput at 8 per system,
and the HTTP comparison. matplotlib draws it; nothing here positions a pixel by hand."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    rows = results["in_process"]

    def ours(system: str) -> bool:
        return system.startswith(("choripan", "C++ core"))

    figure, (latency, throughput, http) = plt.subplots(1, 3, figsize=(16, 5))
    for axis, concurrency, key, title in (
        (latency, 1, "p50_ms", "p50 latency at concurrency 1 (ms, lower is better)"),
        (throughput, 8, "throughput_per_s", "throughput at concurrency 8 (images/s, higher is better)"),
    ):
        shown = [r for r in rows if r["concurrency"] == concurrency]
        names = [r["system"] for r in shown]
        bars = axis.barh(names, [r[key] for r in shown], color=["#c0392b" if ours(n) else "#7f8c8d" for n in names])
        axis.bar_label(bars, fmt="%.1f", padding=3)
        axis.set_title(title, fontsize=10)
        axis.invert_yaxis()
        axis.margins(x=0.2)
    servers = [row["system"].replace(" + ", "\n+ ", 1) for row in results["http"]]
    colours = ["#c0392b" if ours(row["system"]) else "#7f8c8d" for row in results["http"]]
    bars = http.barh(servers, [row["throughput_per_s"] for row in results["http"]], color=colours)
    http.bar_label(
        bars, labels=[f"{r['throughput_per_s']:.0f}/s\np99 {r['p99_ms']:.0f} ms" for r in results["http"]], padding=3
    )
    http.set_title(f"HTTP POST /predict, {results['http'][0]['connections']} connections (req/s)", fontsize=10)
    http.invert_yaxis()
    http.margins(x=0.35)
    figure.suptitle(f"{results['machine']} — {results['date'][:10]}", fontsize=10)
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
