"""The ONNX twin of a TorchScript artifact, for the onnxruntime-node peer: the same weights, exported by
torch.onnx from the artifact itself, checked against it on real photos before it is written."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from choripan.imaging import Preprocessing, load_batch
from choripan.photos import reference_photos


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True, help="a TorchScript artifact (.pt)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from choripan import artifact

    module, metadata = artifact.load(args.model)
    batch = load_batch(reference_photos()[:4], Preprocessing.from_json(metadata["preprocessing"]))
    partial = args.out.with_name(args.out.name + ".partial")
    torch.onnx.export(
        module,
        (batch[:1],),
        str(partial),
        input_names=["input"],
        output_names=["probabilities"],
        dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}},
        dynamo=False,
    )
    session = onnxruntime.InferenceSession(str(partial), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = module(batch).numpy()
    actual = session.run(None, {"input": batch.numpy()})[0]
    worst = float(np.abs(actual - expected).max())
    if worst > 1e-4:
        partial.unlink()
        raise SystemExit(f"the ONNX twin differs from {args.model} by {worst}")
    partial.replace(args.out)
    print(f"wrote {args.out} (largest difference from the artifact {worst:.1e})")


if __name__ == "__main__":
    main()
