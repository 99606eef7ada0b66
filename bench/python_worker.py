"""A benchmark child: one Python system, driven by bench/run.js over stdin/stdout (one JSON per line).

Systems:
  core   choripan's C++ core (choripan_core) on the photo's JPEG bytes: decode, preprocess, queue, batch,
         forward — what predict(jpeg) asks of it from Node
  eager  the seed's way: PIL decode, preprocessing, PyTorch eager forward, per request

Commands (stdin): {"run": {"concurrency": C, "requests": N}} → {"latencies_ms": [...], "seconds": S, ...}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import torch


def load(system: str, model: str, photo: str):
    from choripan.imaging import decode, preprocess

    if system == "core":
        import choripan_core
        from PIL import Image

        core = choripan_core.Model(model)
        jpeg = Path(photo).read_bytes()
        with Image.open(photo) as image:
            assert image.format == "JPEG", "the benchmark's photo is a JPEG"
            width, height = image.size

        def predict():
            return core.labels[int(core.predict_jpeg(jpeg, width, height).argmax())]

        return predict, core.stats

    from choripan.sources import default
    from choripan.tracing import Probabilities

    eager, metadata = default.build()
    eager = Probabilities(eager).eval()
    spec = metadata.preprocessing

    def predict():
        x = preprocess(decode(photo, spec.decode), spec)
        with torch.inference_mode():
            values, indices = eager(x.unsqueeze(0))[0].topk(5)
        return metadata.labels[int(indices[0])]

    return predict, None


def run(predict, concurrency: int, requests: int) -> dict:
    latencies: list[float] = []
    lock = threading.Lock()
    remaining = [requests]

    def client():
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            started = time.perf_counter()
            predict()
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                latencies.append(elapsed)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies_ms": latencies, "seconds": time.perf_counter() - started}


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--system", choices=["core", "eager"], required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--photo", required=True)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    predict, stats = load(args.system, args.model, args.photo)
    label = predict()
    for _ in range(5):
        predict()
    print(json.dumps({"ready": True, "label": label}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if "run" not in command:
            break
        before = stats() if stats else None
        result = run(predict, **command["run"])
        if stats:
            after = stats()
            batches = max(1, after["batches"] - before["batches"])
            result["mean_batch"] = (after["requests"] - before["requests"]) / batches
        result["rss_bytes"] = rss_bytes()
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
