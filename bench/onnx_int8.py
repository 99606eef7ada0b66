"""ONNX Runtime's own static int8 quantization of the ONNX twin, for the int8 comparison (bench/int8.js).

Calibrated on the photos choripan's `--quantize int8` calibrates on (the same folder, the same split:
choripan.quantize.split), as ORT documents it for x86: pre-processing (shape inference, graph
optimisation), then quantize_static in QDQ format with unsigned activations, signed per-channel weights
and the MinMax calibration. Checked against the float32 twin on the held-out photos before it is written.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from choripan import quantize
from choripan.imaging import Preprocessing, load_batch


class Photos(CalibrationDataReader):
    def __init__(self, photos: list[Path], preprocessing: Preprocessing, input_name: str):
        self.batches = iter([{input_name: load_batch([photo], preprocessing).numpy()} for photo in photos])

    def get_next(self):
        return next(self.batches, None)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True, help="the ONNX twin (bench/onnx_twin.py)")
    parser.add_argument("--metadata", type=Path, required=True, help="the artifact's metadata document (JSON)")
    parser.add_argument("--calibration", type=Path, required=True, help="the folder choripan calibrated on")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    preprocessing = Preprocessing.from_json(json.loads(args.metadata.read_text())["preprocessing"])
    calibration, check = quantize.split(quantize.Quantization(args.calibration))
    fp32 = onnxruntime.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    name = fp32.get_inputs()[0].name
    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(args.model), str(prepared))
        partial = args.out.with_name(args.out.name + ".partial")
        quantize_static(
            str(prepared),
            str(partial),
            Photos(calibration, preprocessing, name),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.Percentile,
        )
    int8 = onnxruntime.InferenceSession(str(partial), providers=["CPUExecutionProvider"])
    batch = load_batch(check, preprocessing).numpy()
    expected = np.concatenate([fp32.run(None, {name: x[None]})[0] for x in batch])
    actual = np.concatenate([int8.run(None, {name: x[None]})[0] for x in batch])
    agreement = float((expected.argmax(1) == actual.argmax(1)).mean())
    worst = float(np.abs(actual - expected).max())
    partial.replace(args.out)
    measured = f"top-1 agreement {agreement:.4f}, largest difference {worst:.4f}"
    print(f"wrote {args.out} (on {len(check)} held-out photos: {measured})")


if __name__ == "__main__":
    main()
