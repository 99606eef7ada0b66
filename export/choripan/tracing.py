"""Trace, freeze, verify and write an artifact. The one path every model source goes through."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from . import aoti, artifact, quantize
from .artifact import Metadata
from .errors import ExportError, counted, first_line
from .imaging import load_batch
from .labels import check_count
from .names import check_name
from .photos import reference_photos
from .predictor import Predictor
from .progress import Steps
from .quantize import Quantization

TOLERANCE = 1e-4


class Probabilities(nn.Module):
    """Wraps a classifier that returns logits so that the artifact returns softmax probabilities."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(x), dim=1)


_SCRIPT_IT = (
    "script it instead of tracing it, which keeps its control flow: pass --script on the command line, "
    "or script=True to choripan.tracing.export_classifier"
)


def trace_classifier(
    model: nn.Module, example: torch.Tensor, check_inputs: Sequence[torch.Tensor] = ()
) -> torch.jit.ScriptModule:
    """Trace and freeze `model` (already returning probabilities) on `example`.

    Python control flow on a tensor's value (a TracerWarning about a Python boolean) freezes one branch
    into the trace: the artifact could silently be wrong for other inputs, so it is an error. The trace
    is also repeated on `check_inputs` (other photos, another batch size): a graph that differs means a
    value or a batch size was baked in, which is an error too. Other TracerWarnings (a tensor read as a
    Python number, typically an input-size check) pass once both checks hold.
    """
    model = model.eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.no_grad():
                traced = torch.jit.trace(
                    model,
                    example,
                    check_trace=bool(check_inputs),
                    check_inputs=[(x,) for x in check_inputs] or None,
                    check_tolerance=TOLERANCE,
                )
        except torch.jit.TracingCheckError as error:
            raise ExportError(
                f"the trace is not the same for other inputs ({first_line(error)}): the model's forward "
                f"depends on values or on the batch size in Python; {_SCRIPT_IT}"
            ) from error
    tracer_warnings = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    for other in caught:
        if not issubclass(other.category, (torch.jit.TracerWarning, FutureWarning, DeprecationWarning)):
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    branches = [w for w in tracer_warnings if "Python boolean" in str(w.message)]
    if branches:
        first = branches[0]
        raise ExportError(
            f"tracing is unsafe for this model ({Path(first.filename).name}:{first.lineno}: "
            f"{str(first.message).splitlines()[0]}): its forward has data-dependent control flow; {_SCRIPT_IT}"
        )
    return torch.jit.freeze(traced)


def verify(
    eager: nn.Module,
    candidates: dict[str, torch.jit.ScriptModule],
    batches: list[torch.Tensor],
    reference: str = "eager",
) -> None:
    """Every candidate answers like the `reference` model (`eager`) on every batch, within TOLERANCE."""
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
                        f"the {name} model differs from the {reference} model at batch size {len(batch)} "
                        f"(largest difference {worst}, tolerance {TOLERANCE}): {str(error).splitlines()[0]}"
                    ) from error


def golden_path(artifact_path: Path) -> Path:
    """`<artifact file name>.golden.json` beside it: models/default.pt.golden.json, models/default.pt2.golden.json."""
    path = Path(artifact_path)
    return path.with_name(path.name + ".golden.json")


def script_classifier(model: nn.Module) -> torch.jit.ScriptModule:
    """`model` compiled by TorchScript's scripting, for forwards with Python control flow."""
    try:
        return torch.jit.script(model.eval())
    except Exception as error:  # the scripting compiler raises many kinds, all meaning "cannot script"
        raise ExportError(f"the model cannot be scripted either: {first_line(error)}") from error


FORMATS = ("torchscript", "aoti")
SUFFIXES = {"torchscript": ".pt", "aoti": aoti.SUFFIX}
_WHAT = {"torchscript": "TorchScript", "aoti": "an AOTInductor package"}


def format_for(out: Path, format: str | None = None) -> str:
    """The artifact format: as given, or by the file name; either way the name must end as that format's
    files do (SUFFIXES: `.pt` TorchScript, `.pt2` an AOTInductor package), so that a file says what it is."""
    if format is not None and format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    chosen = format or next((f for f, suffix in SUFFIXES.items() if suffix == out.suffix), None)
    if chosen is None:
        which = f"'{out.suffix}'" if out.suffix else "no suffix"
        raise ExportError(
            f"--out {out} has {which}; its suffix says what to write: {out.with_suffix('.pt')} for TorchScript "
            f"or {out.with_suffix(aoti.SUFFIX)} for an AOTInductor package"
        )
    if out.suffix != SUFFIXES[chosen]:
        other = next(f for f in FORMATS if f != chosen)
        raise ExportError(
            f"--out {out}: --format {chosen} writes {_WHAT[chosen]}, named *{SUFFIXES[chosen]}: name it "
            f"{out.with_suffix(SUFFIXES[chosen])} (or {out.with_suffix(SUFFIXES[other])} for {_WHAT[other]})"
        )
    return chosen


def check_export(
    out: Path,
    *,
    script: bool = False,
    format: str | None = None,
    target_cpu: str = "native",
    quantization: Quantization | None = None,
) -> str:
    """The format `export_classifier(…, out, …)` writes, once the options agree; an ExportError otherwise.
    Cheap: the command line calls it before it loads anything."""
    format = format_for(out, format)
    if quantization is not None:
        if format != "aoti":
            raise ExportError(
                f"--quantize int8 compiles an AOTInductor package: name it {Path(out).with_suffix(aoti.SUFFIX)}"
            )
        quantize.require_torchao()
        quantize.split(quantization)  # a folder without enough photos, said before any model loads
    if target_cpu not in aoti.TARGET_CPUS:
        raise ExportError(f"unknown target CPU {target_cpu!r}; choose one of {', '.join(aoti.TARGET_CPUS)}")
    if target_cpu != "native" and format != "aoti":
        raise ExportError("--target-cpu is for AOTInductor packages (*.pt2); TorchScript runs on any CPU")
    if script and format == "aoti":
        raise ExportError("--script is for TorchScript artifacts; an AOTInductor package is captured by torch.export")
    return format


def export_classifier(
    model: nn.Module,
    metadata: Metadata,
    out: Path,
    *,
    script: bool = False,
    format: str | None = None,
    target_cpu: str = "native",
    quantization: Quantization | None = None,
    progress: bool | None = None,
) -> Path:
    """Trace `model` (returning logits), verify it on real photos, write `out` and its golden file.

    `format` is "torchscript" (a frozen trace) or "aoti" (an AOTInductor package, compiled for
    `target_cpu`: this machine's CPU, or an x86-64 level, aoti.TARGET_CPUS); by default `out`'s suffix
    decides, and either way it must be the format's (SUFFIXES). With `script`, the classifier is
    scripted first (TorchScript only; the softmax around it is still traced, which keeps the scripted part
    whole). `metadata.name` must be a served model's name (names.NAME_RULE). Nothing is written unless
    every check passes; a failure leaves no file. `progress`: each step on stderr where it is a terminal
    (None), always (True) or never (False).

    With `quantization`, the package is int8 (choripan.quantize): calibrated on some of its photos, then
    compared with the float32 model on the others, and refused past its bounds; what was measured goes
    into the metadata's `quantization`.
    """
    out = Path(out)
    format = check_export(out, script=script, format=format, target_cpu=target_cpu, quantization=quantization)
    check_name(metadata.name)
    if quantization is not None:
        calibration, held_out = quantize.split(quantization)
        labelled = quantization.accuracy_data and quantize.scan_labelled(quantization.accuracy_data, metadata.labels)
    # Checking, verifying, the golden answers; and tracing and saving, or capturing and compiling three
    # times; and quantizing and checking int8.
    avx2_packing = format == "aoti" and quantization is None and aoti.packs_for_avx2(target_cpu)
    total = int(script) + 3 + (6 if format == "aoti" else 2) + (2 if quantization is not None else 0) + avx2_packing
    with Steps(total, show=progress) as steps:
        if script:
            steps.step("scripting")
        eager = Probabilities(script_classifier(model) if script else model).eval()
        steps.step("checking the model on photos")
        photos = reference_photos()
        batch = load_batch(photos[:4], metadata.preprocessing)
        with torch.no_grad():
            probabilities = eager(batch[:1])
        if probabilities.dim() != 2:
            raise ExportError(
                f"the model answers a tensor of shape {list(probabilities.shape)} for one image; a classifier "
                "answers [1, classes], one score per class"
            )
        check_count(metadata.labels, probabilities.shape[1], "the model")
        with artifact.atomic_path(out) as partial:
            if format == "aoti" and quantization is not None:
                steps.step(f"quantizing to int8 on {counted(len(calibration), 'photo')}")
                int8 = quantize.quantize(eager, batch, calibration, metadata.preprocessing)

                def check(package_path: Path) -> dict:
                    steps.step(f"checking int8 against float32 on {counted(len(held_out), 'held-out photo')}")
                    package = aoti.Package(artifact.CheckedArchive(package_path))
                    measured = quantize.measure(eager, package, held_out, metadata.preprocessing, labelled)
                    document = quantize.record(measured, len(calibration), len(held_out))
                    quantize.check_gate(document, quantization)
                    return {"quantization": document}

                exported = artifact.save_package(int8, metadata, partial, batch, target_cpu, steps.step, check)
                steps.step("verifying")
                # The exported graph against the quantized one it was captured from; the compiled package
                # was measured against the float32 model by `check`, which is what int8 may differ in, and
                # its models compiled for batches of 1 and 2 must answer as its any-batch model does.
                verify(int8, {"exported": exported}, [batch[:1], batch])
                reloaded = artifact.load(partial)[0]
                any_batch = reloaded.models[aoti.BATCHED]
                verify(any_batch, {"compiled and reloaded": reloaded}, [batch[:1], batch[:2]], "any-batch")
            elif format == "aoti":
                exported = artifact.save_package(
                    eager, metadata, partial, batch, target_cpu, step=steps.step, avx2_packing=avx2_packing
                )
                steps.step("verifying")
                # The exported graph (padding folded) run eagerly, then the compiled models loaded back; the
                # ones packed for AVX2 kernels too, which run here repacking their weights, but run.
                reloaded = artifact.load(partial)[0]
                verify(eager, {"exported": exported, "compiled and reloaded": reloaded}, [batch[:1], batch[:2], batch])
                for name, mirrored in aoti.AVX2_PACKED.items():
                    if name in reloaded.models:
                        size = aoti.PACKED[mirrored]
                        verify(eager, {f"compiled ({name}) and reloaded": reloaded.models[name]}, [batch[:size]])
            else:
                steps.step("tracing")
                traced = trace_classifier(eager, batch[:1], check_inputs=[batch[1:2], batch])
                steps.step("saving")
                artifact.save(traced, metadata, partial)
                steps.step("verifying")
                reloaded = artifact.load(partial)[0]
                verify(eager, {"traced": traced, "saved and reloaded": reloaded}, [batch[:1], batch])
            steps.step("writing the golden answers")
            golden = Predictor(partial).golden(photos)
            with artifact.atomic_path(golden_path(out)) as golden_partial:
                golden_partial.write_text(json.dumps(golden, indent=1) + "\n")
    return out
