"""LitServe serving a choripan artifact as LitServe's documentation shows, for bench/run.js.

    python bench/litserve_server.py --model models/default.pt2 --port 8000

POST /predict, multipart/form-data with the photo in the field `image` (LitServe parses a form or JSON,
never a raw body), answers {label, probability, top}. TorchScript files load with torch.jit.load,
AOTInductor packages with torch._inductor.aoti_load_package; the photo is decoded by PIL and transformed by
torchvision as the artifact's metadata says, in each request's decode_request; predict runs one batch.
"""

from __future__ import annotations

import argparse
import io
import os
import zipfile

import litserve as ls
import torch
from PIL import Image
from torchvision import transforms

from choripan import aoti
from choripan.artifact import read_metadata


class Classifier(ls.LitAPI):
    def __init__(self, model: str, threads: int, **batching):
        super().__init__(**batching)
        self.path = model
        self.threads = threads

    def setup(self, device):
        # Each inference worker is its own process: its threads times the workers make the cores, or the
        # workers' OpenMP teams fight over them. PyTorch's launcher (torch.backends.xeon.run_cpu, which
        # TorchServe runs) gives each instance its share the same way; LitServe's docs say nothing of threads.
        torch.set_num_threads(self.threads)
        metadata = read_metadata(self.path)
        spec = metadata["preprocessing"]
        self.labels = metadata["labels"]
        self.transform = transforms.Compose(
            [
                transforms.Resize(spec["resize"], interpolation=transforms.InterpolationMode(spec["interpolation"])),
                transforms.CenterCrop(spec["crop"]),
                transforms.ToTensor(),
                transforms.Normalize(spec["mean"], spec["std"]),
            ]
        )
        if self.path.endswith(".pt2"):
            # choripan's packages hold a dynamic-batch model and ones compiled for batches of 1 and 2
            # (export/choripan/aoti.py): aoti_load_package loads the first, and its docstring says to load a
            # named one with load_package.
            from torch._inductor.package import load_package

            self.models = {"model": torch._inductor.aoti_load_package(self.path)}
            with zipfile.ZipFile(self.path) as archive:
                folders = {name.split("/")[3] for name in archive.namelist() if "/data/aotinductor/" in name}
            for name, size in aoti.PACKED.items():
                if name in folders:  # packages exported before the batch-2 model lack it
                    self.models[size] = load_package(self.path, name)
        else:
            self.models = {"model": torch.jit.load(self.path, map_location="cpu").eval()}

    def decode_request(self, request):
        with Image.open(io.BytesIO(request["image"].file.read())) as image:
            return self.transform(image.convert("RGB"))

    def predict(self, x):
        # x: the requests' tensors, stacked by LitAPI's own batch(); its unbatch() splits the rows again.
        with torch.inference_mode():
            return self.models.get(len(x), self.models["model"])(x)  # probabilities

    def encode_response(self, probabilities):
        values, indices = probabilities.topk(5)
        pairs = zip(values.tolist(), indices.tolist(), strict=True)
        top = [{"label": self.labels[i], "probability": v} for v, i in pairs]
        return {"label": top[0]["label"], "probability": top[0]["probability"], "top": top}


def main():
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a choripan artifact: .pt (TorchScript) or .pt2")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=cores, help="inference workers (LitServe: one per CPU core)")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout", type=float, default=0.005, help="seconds a batch waits to fill")
    args = parser.parse_args()
    api = Classifier(
        args.model,
        threads=max(1, cores // args.workers),
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=args.workers)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
