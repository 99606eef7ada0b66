"""Trace, freeze, verify and write an artifact. The one path every model source goes through."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from . import artifact
from .artifact import Metadata
from .errors import ExportError
from .imaging import load_batch
from .photos import reference_photos
from .predictor import Predictor

TOLERANCE = 1e-4


class Probabilities(nn.Module):
    """Wraps a classifier that returns logits so that the artifact returns softmax probabilities."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(x), dim=1)


def trace_classifier(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Trace and freeze `model` (already returning probabilities) on `example`.

    A TracerWarning means the trace depends on the example's values or takes a Python branch that
    another input might not take: the artifact could silently be wrong, so it is an error.
    """
    model = model.eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            traced = torch.jit.trace(model, example, check_trace=False)
    tracer_warnings = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    for other in caught:
        if not issubclass(other.category, (torch.jit.TracerWarning, FutureWarning, DeprecationWarning)):
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    if tracer_warnings:
        first = tracer_warnings[0]
        raise ExportError(
            f"tracing is unsafe for this model ({Path(first.filename).name}:{first.lineno}: "
            f"{str(first.message).splitlines()[0]}); its forward has data-dependent control flow, "
            "so script it with torch.jit.script instead of tracing"
        )
    return torch.jit.freeze(traced)


def verify(eager: nn.Module, candidates: dict[str, torch.jit.ScriptModule], batches: list[torch.Tensor]) -> None:
    """Every candidate answers like the eager model on every batch, within TOLERANCE."""
    with torch.no_grad():
        for batch in batches:
            expected = eager(batch)
            for name, module in candidates.items():
                actual = module(batch)
                try:
                    torch.testing.assert_close(actual, expected, atol=TOLERANCE, rtol=0)
                except AssertionError as error:
                    worst = (actual - expected).abs().max().item() if actual.shape == expected.shape else None
                    raise ExportError(
                        f"the {name} model differs from the eager model at batch size {len(batch)} "
                        f"(largest difference {worst}, tolerance {TOLERANCE}): {str(error).splitlines()[0]}"
                    ) from error


def golden_path(artifact_path: Path) -> Path:
    return Path(artifact_path).with_suffix(".golden.json")


def export_classifier(model: nn.Module, metadata: Metadata, out: Path) -> Path:
    """Trace `model` (returning logits), verify it on real photos, write `out` and its golden file.

    Nothing is written unless every check passes; a failure leaves no file behind.
    """
    eager = Probabilities(model).eval()
    photos = reference_photos()
    batch = load_batch(photos[:4], metadata.preprocessing)
    with torch.no_grad():
        probabilities = eager(batch[:1])
    if probabilities.dim() != 2 or probabilities.shape[1] != len(metadata.labels):
        raise ExportError(
            f"the model has {tuple(probabilities.shape[1:])} outputs but {len(metadata.labels)} labels were given"
        )
    traced = trace_classifier(eager, batch[:1])
    out = Path(out)
    with artifact.atomic_path(out) as partial:
        artifact.save(traced, metadata, partial)
        reloaded = torch.jit.load(str(partial), map_location="cpu").eval()
        verify(eager, {"traced": traced, "saved and reloaded": reloaded}, [batch[:1], batch])
        golden = Predictor(partial).golden(photos)
        with artifact.atomic_path(golden_path(out)) as golden_partial:
            golden_partial.write_text(json.dumps(golden, indent=1) + "\n")
    return out
