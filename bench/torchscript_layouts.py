"""The TorchScript artifact's forward pass on one thread, per image, by batch size and memory layout.

    python bench/torchscript_layouts.py [--model models/default.pt] [--rounds 6]

What choripan's workers run (one thread each, batches of up to 2, channels-last input: native/core/runner.cc)
against what LitServe and TorchServe run (contiguous NCHW, batches of up to 8). Each figure is the median of
the calling thread's CPU time, not wall time, so that co-tenants of a shared machine count for less; the
cases take turns, round after round. Run it with ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 for
libtorch's AVX2 kernels on a CPU that has AVX-512.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/default.pt")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = torch.jit.load(args.model, map_location="cpu").eval()
    layouts = {"NCHW": torch.contiguous_format, "channels-last": torch.channels_last}
    cases = [(batch, layout) for batch in (1, 2, 8) for layout in layouts]
    inputs = {case: torch.randn(case[0], 3, 224, 224).contiguous(memory_format=layouts[case[1]]) for case in cases}
    cpu_ms = {case: [] for case in cases}
    with torch.inference_mode():
        for case in cases:  # the profiling executor's first runs, and oneDNN's first calls for each shape
            for _ in range(3):
                model(inputs[case])
        for _ in range(args.rounds):
            for case in cases:
                started = time.thread_time()
                model(inputs[case])
                cpu_ms[case].append((time.thread_time() - started) * 1000 / case[0])
    print(f"{'batch':>5}  {'layout':>13}  CPU ms/image (median of {args.rounds})")
    for (batch, layout), values in cpu_ms.items():
        print(f"{batch:>5}  {layout:>13}  {statistics.median(values):.1f}")


if __name__ == "__main__":
    main()
