"""int8 static quantization of a package, and the gate that decides whether what it costs is acceptable.

PyTorch's PT2E flow with the x86 Inductor quantizer (torchao): the model is captured, its activation
ranges are observed on calibration photos, it is converted to quantize/dequantize pairs around
convolutions and linears, each convolution's bias is corrected for what rounding its weights moved
(correct_biases), and Inductor (with frozen weights) lowers those to oneDNN's int8 kernels, VNNI or AMX
where the CPU has them. What serves it is unchanged: the package takes and returns float32.

The photos are split: activation ranges are fitted to the calibration photos, so agreement measured on
those same photos would measure the fit, not how the model does on photos it has not seen. A held-out
share of the folder is the check set, and the compiled package, loaded back as it will be served, is
compared with the float32 model there.
"""

from __future__ import annotations

import functools
import math
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .contract import ARTIFACT, MAX_BATCH
from .errors import ExportError, counted, first_line
from .photos import IMAGE_SUFFIXES

if TYPE_CHECKING:  # torch loads where it is used: the command line reads the defaults here without it
    import torch
    from torch import nn

    from .imaging import Preprocessing

SCHEME = "int8-static-x86"
SCHEMES = ("int8",)  # what --quantize takes
_INSTALL = "pip install 'choripan[int8]'"
_BATCH = 8  # photos per forward pass while calibrating and checking
# Calibration photos that bias correction measures on, in one batch (correct_biases): the first of those drawn.
BIAS_CORRECTION_IMAGES = 32


@dataclass
class Quantization:
    """What `--quantize int8` asks for: the photos, and the bounds past which no artifact is written.

    `calibration` is a folder of photos (searched below it), of which at most `images` are drawn (in an
    order fixed by `seed`) and `check_fraction` of those held out to check the result. `accuracy_data` is an
    image folder (`DIR/<label>/*.jpg`, labels as the model names them) to measure accuracy on.
    """

    calibration: Path
    calibration_images: int = 256
    check_fraction: float = 0.25
    min_agreement: float = 0.99
    max_prob_diff: float | None = None
    accuracy_data: Path | None = None
    max_accuracy_drop: float = 0.01
    seed: int = 0

    def __post_init__(self):
        self.calibration = Path(self.calibration)
        for name in ("min_agreement", "max_prob_diff", "max_accuracy_drop"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ExportError(f"--{name.replace('_', '-')} must be in [0, 1], not {value}")
        if not 0 < self.check_fraction < 1:
            raise ExportError(f"--check-fraction must be in (0, 1), not {self.check_fraction}")
        if (n := self.calibration_images) < 2:
            raise ExportError(f"--calibration-images must be at least 2 (to calibrate and to check), not {n}")


def require_torchao() -> None:
    """torchao holds PT2E quantization since torch 2.10; an optional dependency, asked for by name."""
    try:
        _torchao()
    except ImportError as error:
        raise ExportError(
            f"--quantize int8 needs the torchao package ({first_line(error)}): {_INSTALL}", "E_INVALID_ARGUMENT"
        ) from error


def _torchao():
    with warnings.catch_warnings():  # torchao 0.18 registers an enum with torch.compile the deprecated way
        warnings.simplefilter("ignore")
        import logging

        logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    return prepare_pt2e, convert_pt2e, x86


def photos_in(folder: Path) -> list[Path]:
    """The photos below `folder` (by suffix, as `train` reads them), in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"the calibration photos' folder {folder} is not a folder")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def split(config: Quantization) -> tuple[list[Path], list[Path]]:
    """(calibration photos, check photos): disjoint, at least one each, drawn in an order `seed` fixes
    (a folder sorted by label would otherwise give every photo of one label to one side)."""
    photos = photos_in(config.calibration)
    suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
    if len(photos) < 2:
        raise ExportError(
            f"the calibration photos' folder {config.calibration} holds {counted(len(photos), 'photo')} "
            f"({suffixes}); int8 needs at least 2: some to calibrate on, others to check the result on"
        )
    random.Random(config.seed).shuffle(photos)
    photos = photos[: config.calibration_images]
    held = min(len(photos) - 1, max(1, round(len(photos) * config.check_fraction)))
    return photos[held:], photos[:held]


def _batches(photos: list[Path], preprocessing: Preprocessing):
    from .imaging import load_batch

    for start in range(0, len(photos), _BATCH):
        yield load_batch(photos[start : start + _BATCH], preprocessing)


def quantize(model: nn.Module, example: torch.Tensor, photos: list[Path], preprocessing: Preprocessing) -> nn.Module:
    """`model` (float32, returning probabilities) quantized to int8 with activation ranges observed on `photos`,
    and its biases corrected on the first of them (correct_biases).

    Returned as the converted graph, which torch.export captures again for compilation.
    """
    _, convert_pt2e, _ = _torchao()
    prepared = prepare(model, example, photos, preprocessing)
    try:
        correction = bias_correction_batch(photos, preprocessing)
        expected = convolution_means(prepared, correction)
        quantized = convert_pt2e(prepared)
        correct_biases(quantized, correction, expected)
        return quantized
    except ExportError:
        raise
    except Exception as error:  # the converted graph may fail to run where the quantizer accepted it
        raise ExportError(f"PT2E int8 quantization failed: {first_line(error)}", "E_INTERNAL") from error


def prepare(
    model: nn.Module, example: torch.Tensor, photos: list[Path], preprocessing: Preprocessing
) -> torch.fx.GraphModule:
    """`model` captured, annotated by the x86 quantizer and run on `photos`: its observers hold the ranges
    that converting it to int8 uses. Pads are folded into the convolutions first, so that each convolution
    is quantized as one with its padding."""
    import torch

    from . import aoti

    prepare_pt2e, _, x86 = _torchao()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    example = example if len(example) > 1 else example.expand(2, -1, -1, -1)
    try:
        # Strict: the quantizer finds convolutions and what follows them by the source function that
        # TorchDynamo's trace records on each node; a non-strict capture records none, and every
        # convolution would stay float32 without a word.
        with torch.no_grad():
            captured = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},), strict=True)
    except Exception as error:  # torch.export raises many kinds, all meaning "cannot export this forward"
        raise ExportError(f"torch.export cannot capture this model for int8 ({first_line(error)})") from error
    graph = captured.module(check_guards=False)
    aoti.fold_padding(graph)
    config = x86.get_default_x86_inductor_quantization_config(reduce_range=activation_bits() == 7)
    quantizer = x86.X86InductorQuantizer().set_global(config)
    if first := first_convolution(graph):
        quantizer.set_module_name_qconfig(first, None)
    try:
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for calibration in _batches(photos, preprocessing):
                prepared(calibration)
        return prepared
    except Exception as error:  # the quantizer raises many kinds for graphs it cannot annotate
        raise ExportError(f"PT2E int8 quantization failed: {first_line(error)}", "E_INTERNAL") from error


def first_convolution(graph: torch.fx.GraphModule) -> str | None:
    """The module name of the graph's first convolution, which stays float32; None where it is no module's.

    It sees the photo itself, with the fewest weights per output channel (27 for a 3x3 filter over RGB), where
    each rounded weight moves the answer most. Kept float32 in the default model, int8 agreed with float32 on
    0.91 of 520 random crops of scikit-image's photos instead of 0.88 (and 0.86 of another 156 against 0.81),
    and its largest probability difference was 0.34 instead of 0.44, for 1-6% of int8's speed.
    """
    convolutions = _convolutions(graph)
    stack = convolutions[0].meta.get("nn_module_stack") if convolutions else None
    return list(stack.values())[-1][0] if stack else None


def activation_bits() -> int:
    """8 where oneDNN's int8 kernels will multiply with VNNI here, else 7.

    VNNI sums each u8×s8 product in 32 bits. Without it (AVX2 CPUs, AVX-512 before Cascade Lake, or oneDNN
    held below VNNI by ONEDNN_MAX_CPU_ISA) oneDNN pairs the products into 16-bit sums that saturate, so the
    activations get 7 bits (the quantizer's reduce_range). Held to AVX2 kernels, 8-bit activations agreed
    with float32 on 52% of 156 crops of scikit-image's photos, 7-bit ones on 84%, as 8-bit ones do with VNNI.
    """
    from . import aoti

    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper()
    flags = aoti._cpu_flags()
    avx512_vnni = "avx512_vnni" in flags and cap in ARTIFACT["oneDnnAvx512VnniCaps"]
    avx_vnni = "avx_vnni" in flags and cap in ARTIFACT["oneDnnAvxVnniCaps"]  # Sierra Forest's, without AVX-512's
    return 8 if avx512_vnni or avx_vnni else 7


def require_vnni_for(path: Path, metadata: dict) -> None:
    """Refuses an int8 artifact whose 8-bit activations oneDNN would saturate here (activation_bits()), as
    native/core does: its answers would stray from those its export measured. Exported before the field
    was recorded, int8 activations had 8 bits."""
    if "quantization" not in metadata:
        return
    recorded = metadata["quantization"]
    if not isinstance(recorded, dict):
        raise ExportError(f"cannot load model {path}: metadata has a malformed quantization", "E_MODEL_LOAD")
    bits = recorded.get("activation_bits", 8)
    if not isinstance(bits, int) or isinstance(bits, bool):
        raise ExportError(
            f"cannot load model {path}: metadata has a malformed quantization.activation_bits", "E_MODEL_LOAD"
        )
    if bits == 8 and activation_bits() == 7:
        raise ExportError(
            f"cannot load model {path}: {ARTIFACT['eightBitActivationsRefusal']}",
            "E_MODEL_LOAD",
        )


def _convolutions(graph: torch.fx.GraphModule) -> list[torch.fx.Node]:
    import torch

    return [n for n in graph.graph.nodes if n.op == "call_function" and n.target is torch.ops.aten.conv2d.default]


def bias_correction_batch(photos: list[Path], preprocessing: Preprocessing) -> torch.Tensor:
    """The calibration photos that bias correction measures on (the first BIAS_CORRECTION_IMAGES), as one batch."""
    from .imaging import load_batch

    return load_batch(photos[:BIAS_CORRECTION_IMAGES], preprocessing)


def convolution_means(graph: torch.fx.GraphModule, batch: torch.Tensor) -> list[torch.Tensor]:
    """Each convolution's mean output per channel on `batch`, in graph order. Of a prepared graph: float32's,
    its BatchNorms folded into the convolutions as in the quantized one, its observers passed by, not fed."""
    import torch
    from torchao.quantization.pt2e.observer import ObserverBase

    convolutions = set(_convolutions(graph))
    means = []

    class Means(torch.fx.Interpreter):
        def run_node(self, node):
            if node.op == "call_module" and isinstance(self.module.get_submodule(node.target), ObserverBase):
                return self.env[node.args[0]]
            output = super().run_node(node)
            if node in convolutions:
                means.append(output.mean((0, 2, 3)))
            return output

    with torch.no_grad():
        Means(graph).run(batch)
    return means


def correct_biases(quantized: torch.fx.GraphModule, batch: torch.Tensor, expected: list[torch.Tensor]) -> int:
    """Empirical bias correction: shifts each convolution's bias so that its mean output per channel on `batch`,
    computed from int8 inputs and weights, is float32's (`expected`), convolution after convolution, each one
    seeing the ones before it corrected. Returns how many biases moved (a convolution without a bias of its
    own, or sharing one already moved, keeps it).

    Rounding a weight to int8 also moves the average of what its convolution answers, and nothing later
    undoes it: a depthwise 3x3 filter with one strong tap loses its weak ones to rounding, and so its
    response to flat areas. On scikit-image's photos this took top-1 agreement with float32 from 0.73 to
    0.89 (26 photos) and on 72 crops of held-out photos from 0.82 to 0.89, for no cost at serving: the
    quantized graph is unchanged but for 49 bias vectors.
    """
    import torch

    convolutions = _convolutions(quantized)
    if len(convolutions) != len(expected):
        raise ExportError(
            f"int8 bias correction found {len(convolutions)} convolutions where float32 has {len(expected)}",
            "E_INTERNAL",
        )
    order = {node: index for index, node in enumerate(convolutions)}
    corrected = set()  # the biases moved: one that two convolutions share moves for the first only

    class Correcting(torch.fx.Interpreter):
        def run_node(self, node):
            output = super().run_node(node)
            if node not in order:
                return output
            bias = node.args[2] if len(node.args) > 2 else None
            if bias is None or bias.op != "get_attr" or bias.target in corrected:
                return output
            shift = expected[order[node]] - output.mean((0, 2, 3))
            functools.reduce(getattr, bias.target.split("."), quantized).data += shift
            corrected.add(bias.target)
            return output + shift.view(1, -1, 1, 1)

    with torch.no_grad():
        Correcting(quantized).run(batch)
    return len(corrected)


def scan_labelled(folder: Path, labels: list[str]) -> list[tuple[Path, int]]:
    """(photo, class index) under `folder/<label>/`, every subfolder one of the model's `labels`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"--accuracy-data {folder} is not a folder")
    samples = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if sub.name not in labels:
            raise ExportError(
                f"--accuracy-data {folder}: the folder '{sub.name}' is not one of the model's labels; "
                "name each subfolder after the label its photos show"
            )
        samples += [(photo, labels.index(sub.name)) for photo in photos_in(sub)]
    if not samples:
        raise ExportError(f"--accuracy-data {folder} holds no photos in label folders (DIR/<label>/*.jpg)")
    return samples


def _answers(model, photos: list[Path], preprocessing: Preprocessing) -> torch.Tensor:
    import torch

    with torch.no_grad():
        return torch.cat([model(batch) for batch in _batches(photos, preprocessing)])


def measure(
    fp32: nn.Module,
    int8,
    photos: list[Path],
    preprocessing: Preprocessing,
    labelled: list[tuple[Path, int]] = (),
) -> dict:
    """The int8 model's answers against the float32 model's: top-1 agreement and the largest probability
    difference on `photos`; with `labelled` photos, both models' accuracy on them too."""
    expected, actual = _answers(fp32, photos, preprocessing), _answers(int8, photos, preprocessing)
    measured = {
        "top1_agreement": (expected.argmax(1) == actual.argmax(1)).float().mean().item(),
        "max_prob_diff": (expected - actual).abs().max().item(),
    }
    if labelled:
        import torch

        truth = torch.tensor([index for _, index in labelled])
        paths = [path for path, _ in labelled]
        for key, model in (("fp32_accuracy", fp32), ("accuracy", int8)):
            measured[key] = (_answers(model, paths, preprocessing).argmax(1) == truth).float().mean().item()
    return measured


def check_gate(measured: dict, config: Quantization) -> None:
    """ExportError(E_QUANTIZATION_GATE), with the measured numbers and the bounds, when one bound is passed.
    `measured` is the metadata's document (`record`)."""
    failures = []
    if measured["top1_agreement"] < config.min_agreement:
        failures.append(f"top-1 agreement {measured['top1_agreement']:.4f} < --min-agreement {config.min_agreement}")
    if config.max_prob_diff is not None and measured["max_prob_diff"] > config.max_prob_diff:
        failures.append(
            f"largest probability difference {measured['max_prob_diff']:.4g} > --max-prob-diff {config.max_prob_diff}"
        )
    if "accuracy" in measured:
        drop = measured["fp32_accuracy"] - measured["accuracy"]
        if drop > config.max_accuracy_drop + 1e-9:  # counts of photos: no rounding noise should fail it
            failures.append(
                f"accuracy {measured['accuracy']:.4f} vs float32 {measured['fp32_accuracy']:.4f}, a drop of "
                f"{drop:.4f} > --max-accuracy-drop {config.max_accuracy_drop}"
            )
    if failures:
        raise ExportError(
            f"the int8 model is refused, nothing was written: {'; '.join(failures)} "
            f"(on {counted(measured['checked_images'], 'held-out photo')})",
            "E_QUANTIZATION_GATE",
        )


def record(measured: dict, calibration_images: int, checked_images: int) -> dict:
    """The metadata's `quantization` document: the scheme, how many photos, what `measure` found."""
    rounded = {key: round(value, 6) if math.isfinite(value) else value for key, value in measured.items()}
    return {
        "scheme": SCHEME,
        "calibration_images": calibration_images,
        "bias_correction_images": min(calibration_images, BIAS_CORRECTION_IMAGES),
        "activation_bits": activation_bits(),
        "checked_images": checked_images,
        **rounded,
    }
