"""The Python reference predictor: PIL decode with the artifact's policy, its preprocessing, the artifact."""

from __future__ import annotations

from pathlib import Path

import torch

from . import artifact
from .imaging import Preprocessing, decode, preprocess


class Predictor:
    def __init__(self, path: Path, sha256: str | None = None):
        """`sha256`: load only a file with this digest (a signature's, signing.verified_digest)."""
        self.path = Path(path)
        self.module, self.metadata = artifact.load(self.path, sha256)
        self.labels: list[str] = self.metadata["labels"]
        self.preprocessing = Preprocessing.from_json(self.metadata["preprocessing"])

    def probabilities(self, image: bytes | str | Path) -> torch.Tensor:
        x = preprocess(decode(image, self.preprocessing.decode), self.preprocessing)
        with torch.inference_mode():
            return self.module(x.unsqueeze(0))[0]

    def predict(self, image: bytes | str | Path, topk: int = 5) -> dict:
        probabilities = self.probabilities(image)
        values, indices = probabilities.topk(min(topk, len(self.labels)))
        top = [
            {"label": self.labels[i], "probability": v} for v, i in zip(values.tolist(), indices.tolist(), strict=True)
        ]
        return {"label": top[0]["label"], "probability": top[0]["probability"], "top": top}

    def golden(self, photos: list[Path]) -> dict:
        """Top-5 of each photo: what the other languages must answer (tests/js/parity)."""
        return {
            "artifact_checksum": artifact.read_metadata(self.path)["checksum"]["value"],
            "photos_from": "scikit-image data",
            "photos": [{"file": photo.name, **self.predict(photo, topk=5)} for photo in photos],
        }
