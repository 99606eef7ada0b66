"""Classifiers that fastai's `vision_learner` (formerly `cnn_learner`) built on a torchvision body, from the
file `Learner.save` wrote, rebuilt in plain torch so that exporting them needs no fastai.

`vision_learner(dls, arch)` makes `nn.Sequential(body, head)`: the body is the torchvision model cut before
its pooling (fastai.vision.learner `create_body` and `model_meta`), the head is `create_head` with its
defaults. The rebuilt module has the same children at the same indices, so fastai's state_dict keys
(`0.…` for the body, `1.…` for the head) load into it unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..artifact import Metadata, Source, sha256_file
from ..checkpoints import load_checkpoint, load_strict, state_dict_of
from ..errors import ExportError, first_line
from ..imaging import Preprocessing
from ..labels import check_count
from ..names import name_from
from .torchvision import architecture, check_architecture

# fastai.vision.core.imagenet_stats: what vision_learner normalises with when the body is pretrained.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# fastai.vision.learner.model_meta: how many of the torchvision model's children the body drops. Any other
# architecture is cut before its last child that holds a pooling layer, as create_body does with cut=None.
_CUTS = {
    **dict.fromkeys(("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"), -2),
    **dict.fromkeys(("squeezenet1_0", "squeezenet1_1"), -1),
    **dict.fromkeys(("densenet121", "densenet161", "densenet169", "densenet201"), -1),
    **dict.fromkeys(("vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"), -2),
    "alexnet": -2,
}

# The head's last Linear: its weight's first dimension is the class count.
LOGITS = "1.8.weight"


class _Discarded:
    """Stands in for the Python objects in fastai's optimizer state (fastcore's `L`, numpy scalars) while
    the file is read with torch's weights-only unpickler: only the model's tensors are kept, so nothing of
    fastai has to be installed and nothing in the file gets to run code."""

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


_OPTIMIZER_OBJECTS = [
    (_Discarded, name)
    for name in (
        "fastcore.foundation.L",
        "numpy.dtype",
        "numpy.core.multiarray.scalar",  # numpy 1.x
        "numpy._core.multiarray.scalar",  # numpy 2.x
    )
]


class ConcatPool(nn.Module):
    """fastai's AdaptiveConcatPool2d: max pooling and average pooling, concatenated in that order."""

    def __init__(self):
        super().__init__()
        self.ap = nn.AdaptiveAvgPool2d(1)
        self.mp = nn.AdaptiveMaxPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.mp(x), self.ap(x)], 1)


def body(arch: str, model: nn.Module) -> nn.Sequential:
    """`model` cut as fastai's create_body(model, cut=model_meta[arch]['cut']) cuts it."""
    children = list(model.children())
    cut = _CUTS.get(arch)
    if cut is None:
        pooled = [i for i, child in enumerate(children) if _has_pool(child)]
        if not pooled:
            raise ExportError(f"fastai cannot cut {arch} into a body either: none of its children pools")
        cut = pooled[-1]
    return nn.Sequential(*children[:cut])


def head(features: int, classes: int) -> nn.Sequential:
    """fastai's create_head(features, classes) with vision_learner's defaults.

    Concat pooling doubles the features; lin_ftrs=None means one hidden layer of 512; ps=0.5 becomes
    dropouts of 0.25 then 0.5; each Linear follows a BatchNorm1d (first_bn=True), which is why it has no
    bias (fastai's LinBnDrop); no bn_final, no y_range.
    """
    return nn.Sequential(
        ConcatPool(),
        nn.Flatten(),
        nn.BatchNorm1d(2 * features),
        nn.Dropout(0.25),
        nn.Linear(2 * features, 512, bias=False),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(512),
        nn.Dropout(0.5),
        nn.Linear(512, classes, bias=False),
    )


def build(
    arch: str,
    checkpoint: Path,
    labels: list[str],
    *,
    trust_pickle: bool = False,
    preprocessing: Preprocessing | None = None,
) -> tuple[nn.Module, Metadata]:
    """The eager model (returning logits) that `vision_learner(dls, arch)` trained, and its metadata.

    `checkpoint` is what `learn.save(name)` wrote (`{'model': state_dict, 'opt': …}`) or a bare state_dict
    (`with_opt=False`). Preprocessing defaults to ImageNet's statistics, which vision_learner adds for a
    pretrained body; give `preprocessing` if the DataLoaders normalised otherwise (pretrained=False adds none).
    """
    check_architecture(arch)
    checkpoint = Path(checkpoint)
    preprocessing = preprocessing or Preprocessing(resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    state_dict = state_dict_of(_load(checkpoint, trust_pickle), checkpoint)
    if LOGITS not in state_dict:
        shown = [k for k in state_dict if k.startswith("1.")] or list(state_dict)
        raise ExportError(
            f"{checkpoint} is not from fastai's vision_learner with the default head: {LOGITS} is missing "
            f"(it has {', '.join(shown[:6])}, …)"
        )
    classes = state_dict[LOGITS].shape[0]
    check_count(labels, classes, f"{checkpoint.name} (fastai {arch})")
    cut = body(arch, architecture(arch, 1000))  # the cut drops the classifier, whatever its size
    model = nn.Sequential(cut, head(_features(arch, cut, preprocessing.crop), classes))
    load_strict(model, state_dict, f"fastai's vision_learner on {arch}")
    metadata = Metadata(
        name=name_from(checkpoint),
        labels=labels,
        preprocessing=preprocessing,
        source=Source(
            kind="fastai",
            arch=arch,
            checkpoint=checkpoint.name,
            checkpoint_sha256=sha256_file(checkpoint),
            fastai=True,
        ),
    )
    return model.eval(), metadata


def _load(path: Path, trust_pickle: bool) -> object:
    """The checkpoint, read weights-only with the optimizer's objects discarded; a file that needs more
    (a whole pickled model) is unpickled only when `trust_pickle` says so."""
    try:
        with torch.serialization.safe_globals(_OPTIMIZER_OBJECTS):
            return load_checkpoint(path)
    except ExportError:
        if not trust_pickle:
            raise
    try:
        return load_checkpoint(path, trust_pickle=True)
    except ImportError as error:
        raise ExportError(
            f"{path} pickles objects of {error.name}, which is not installed here; save the weights with "
            "learn.save(name) instead"
        ) from error


def _has_pool(module: nn.Module) -> bool:
    """fastai's has_pool_type: the module or one inside it is a pooling layer, by its class name."""
    return any(re.search(r"Pool[123]d$", type(m).__name__) for m in module.modules())


def _features(arch: str, cut: nn.Module, size: int) -> int:
    """The channels the body puts out (fastai's num_features_model), from one forward pass of zeros."""
    try:
        with torch.no_grad():
            return cut.eval()(torch.zeros(1, 3, size, size)).shape[1]
    except (RuntimeError, ValueError, TypeError) as error:
        raise ExportError(f"{arch} cut as fastai cuts it does not run as a body: {first_line(error)}") from error
