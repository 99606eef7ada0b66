"""Forward-only: the artifact through choripan's C++ core (choripan_core) vs torch.jit.load in Python.

Both in one process, same libtorch, same thread count, same inputs, interleaved so that the noise of a
shared machine falls on both. Prints one JSON document (bench/native.js reads it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import choripan_core
import torch


def timed(call, x, repeats):
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call(x)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    core = choripan_core.Model(args.model, intra_op_threads=args.threads, warmup=False)
    python = torch.jit.load(args.model).eval()
    crop = core.metadata["preprocessing"]["crop"]
    rows = []
    with torch.inference_mode():
        for batch in args.batches:
            x = torch.randn(batch, 3, crop, crop)
            for _ in range(3):  # warm both up: the profiling executor optimises after the first runs
                core.forward(x)
                python(x)
            c, p = [], []
            for _ in range(args.repeats):
                c += timed(core.forward, x, 1)
                p += timed(python, x, 1)
            for name, samples in (("C++ core (choripan_core)", c), ("Python torch.jit.load", p)):
                rows.append(
                    {
                        "path": name,
                        "batch": batch,
                        "threads": args.threads,
                        "median_ms": statistics.median(samples),
                        "min_ms": min(samples),
                        "images_per_s": batch * 1000 / statistics.median(samples),
                    }
                )
    core.dispose()
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
