"""Any classification architecture in torchvision.models, with weights from a checkpoint."""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
import torchvision
from torch import nn

from ..artifact import Metadata, Source, sha256_file
from ..checkpoints import load_checkpoint, load_strict, state_dict_of
from ..errors import ExportError
from ..imaging import Preprocessing
from ..labels import check_count
from ..names import name_from

# Models whose auxiliary classifiers exist only in training checkpoints; eval mode never runs them.
_AUXILIARY = {"inception_v3": "AuxLogits.", "googlenet": "aux1."}


def architectures() -> list[str]:
    """The classification models torchvision offers (not detection, segmentation or video)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_architecture(name: str) -> str:
    known = architectures()
    if name not in known:
        close = difflib.get_close_matches(name.lower(), known, n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see torchvision.models.list_models()"
        raise ExportError(f"unknown architecture '{name}'{hint}")
    return name


def architecture(name: str, num_classes: int, **config) -> nn.Module:
    """An untrained `name` with a `num_classes`-way classifier."""
    check_architecture(name)
    if name in _AUXILIARY:
        config.setdefault("init_weights", False)
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **config)


def classifier_key(name: str) -> str:
    """The state_dict prefix of the layer that produces the logits (its weight's first dimension is the
    class count). Found on a weightless copy, so even the largest architectures cost nothing."""
    config = {"aux_logits": False} if name in _AUXILIARY else {}
    try:
        with torch.device("meta"):
            model = architecture(name, 1000, **config)
    except NotImplementedError:  # a constructor that copies data (regnet's) needs real tensors
        model = architecture(name, 1000, **config)
    last = None
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            out = module.out_features if isinstance(module, nn.Linear) else module.out_channels
            if out == 1000:
                last = module_name
    if last is None:
        raise ExportError(f"cannot find the classification layer of {name}")
    return last


def preprocessing_for(name: str) -> Preprocessing:
    """What torchvision's own weights for `name` were evaluated with: resize, crop, mean, std, interpolation."""
    try:
        transforms = next(iter(torchvision.models.get_model_weights(name))).transforms()
    except (ValueError, StopIteration, KeyError):
        return Preprocessing()
    interpolation = transforms.interpolation.value
    return Preprocessing(
        resize=int(transforms.resize_size[0]),
        crop=int(transforms.crop_size[0]),
        mean=tuple(float(v) for v in transforms.mean),
        std=tuple(float(v) for v in transforms.std),
        interpolation=interpolation if interpolation in ("bilinear", "bicubic") else "bilinear",
    )


def build(
    arch: str,
    weights: Path,
    labels: list[str],
    *,
    trust_pickle: bool = False,
    preprocessing: Preprocessing | None = None,
) -> tuple[nn.Module, Metadata]:
    """The eager model for `arch` with the checkpoint's weights, and its metadata."""
    check_architecture(arch)
    weights = Path(weights)
    preprocessing = preprocessing or preprocessing_for(arch)
    checkpoint = load_checkpoint(weights, trust_pickle=trust_pickle)
    if isinstance(checkpoint, nn.Module):
        model = checkpoint.eval()  # trusted pickle: the very module that was trained
        with torch.no_grad():
            classes = model(torch.zeros(1, 3, preprocessing.crop, preprocessing.crop)).shape[-1]
    else:
        state_dict = state_dict_of(checkpoint, weights)
        key = classifier_key(arch)
        if f"{key}.weight" not in state_dict:
            raise ExportError(
                f"the weights do not fit {arch}: its classifier {key}.weight is missing from {weights} "
                f"(first keys: {', '.join(list(state_dict)[:5])})"
            )
        classes = state_dict[f"{key}.weight"].shape[0]
        config = {}
        if arch in _AUXILIARY:
            config["aux_logits"] = any(k.startswith(_AUXILIARY[arch]) for k in state_dict)
        model = load_strict(architecture(arch, classes, **config), state_dict, arch).eval()
    check_count(labels, classes, f"{weights.name} ({arch})")
    metadata = Metadata(
        name=name_from(weights),
        labels=labels,
        preprocessing=preprocessing,
        source=Source(kind="torchvision", arch=arch, checkpoint=weights.name, checkpoint_sha256=sha256_file(weights)),
    )
    return model, metadata
