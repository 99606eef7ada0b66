"""Transfer learning on an image folder (`DIR/<label>/*.jpg`): the pretrained default body, a new head.

The head trains first on features of the frozen body, computed once (with horizontally flipped copies
as augmentation), which makes it fast on a small CPU. Optionally the whole network is fine-tuned after,
with BatchNorm statistics frozen (small folders would ruin them). The best epoch by validation accuracy
(then loss) is kept, and the result is exported like any other model.
"""

from __future__ import annotations

import copy
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .artifact import Source
from .errors import ExportError
from .imaging import decode, preprocess
from .names import check_name, name_from
from .photos import IMAGE_SUFFIXES
from .quantize import Quantization
from .sources import default
from .tracing import check_export, export_classifier


@dataclass
class TrainConfig:
    data: Path
    out: Path
    epochs: int = 6
    fine_tune_epochs: int = 0
    seed: int = 0
    val_fraction: float = 0.2
    batch_size: int = 16
    learning_rate: float = 3e-3
    fine_tune_learning_rate: float = 1e-4
    format: str | None = None  # by the suffix of `out` (choripan.tracing.format_for)
    target_cpu: str = "native"  # for a .pt2 package (choripan.aoti.TARGET_CPUS)
    name: str | None = None  # the served model's name (choripan.names.NAME_RULE); by default `out`'s stem
    quantization: Quantization | None = None  # int8 (choripan.quantize), calibrated on `data` unless it says

    def __post_init__(self):
        # Before the training, not after.
        check_export(self.out, format=self.format, target_cpu=self.target_cpu, quantization=self.quantization)
        if self.name is not None:
            check_name(self.name)
        if self.epochs < 1 or self.fine_tune_epochs < 0:
            raise ExportError("--epochs must be at least 1 and --fine-tune-epochs at least 0")
        if not 0 <= self.val_fraction < 1:
            raise ExportError("--val-fraction must be in [0, 1)")
        if self.batch_size < 1:
            raise ExportError("--batch-size must be at least 1")


@dataclass
class EpochReport:
    phase: str  # "head" or "fine-tune"
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None


@dataclass
class TrainReport:
    labels: list[str]
    train_images: int
    val_images: int
    history: list[EpochReport] = field(default_factory=list)
    best: EpochReport | None = None
    artifact: Path | None = None
    name: str = ""  # the served model's name


def scan_image_folder(root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """(path, class index) for every image under `root/<label>/`, and the labels in sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise ExportError(f"{root} is not a folder")
    labels = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    samples: list[tuple[Path, int]] = []
    for index, label in enumerate(labels):
        images = sorted(p for p in (root / label).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not images:
            raise ExportError(f"{root / label} holds no images (.jpg, .jpeg, .png, .webp)")
        samples += [(image, index) for image in images]
    if len(labels) < 2:
        raise ExportError(
            f"{root} is not an image folder: expected at least two subfolders, one per label, "
            f"each holding images (e.g. {root}/Choripan/*.jpg and {root}/Not Choripan/*.jpg)"
        )
    return samples, labels


def split(samples: list[tuple[Path, int]], fraction: float, seed: int):
    """A stratified split: each class keeps at least one training image and, if it has two or more
    and `fraction` > 0, gives at least one to validation."""
    rng = random.Random(seed)
    train, val = [], []
    for index in sorted({i for _, i in samples}):
        members = [s for s in samples if s[1] == index]
        rng.shuffle(members)
        count = (
            0 if fraction == 0 or len(members) < 2 else min(len(members) - 1, max(1, round(len(members) * fraction)))
        )
        val += members[:count]
        train += members[count:]
    return train, val


def _load(samples, preprocessing, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = []
    for path, _ in tqdm(samples, desc=desc, unit="image", file=sys.stderr, leave=False):
        try:
            tensors.append(preprocess(decode(path, preprocessing.decode), preprocessing))
        except ExportError as error:
            raise ExportError(f"{path}: {error}") from error
    return torch.stack(tensors), torch.tensor([i for _, i in samples])


def _features(body: nn.Module, images: torch.Tensor, batch_size: int, desc: str) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", file=sys.stderr, leave=False):
            out.append(body(images[start : start + batch_size]))
    return torch.cat(out)


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    model.eval()
    losses, correct = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size])
            target = y[start : start + batch_size]
            losses += nn.functional.cross_entropy(logits, target, reduction="sum").item()
            correct += (logits.argmax(1) == target).sum().item()
    return losses / len(x), correct / len(x)


def _fit(model, trainable, x, y, val, config, epochs, learning_rate, phase, report, augment=None):
    """Trains `trainable` parameters of `model`; returns (state, rank, report) of its best epoch."""
    optimiser = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(config.seed)
    best_state, best_key, best_entry = None, None, None
    for epoch in range(1, epochs + 1):
        model.train()
        if phase == "fine-tune":
            for module in model.modules():  # keep the pretrained BatchNorm statistics
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        order = torch.randperm(len(x), generator=generator)
        progress = tqdm(
            range(0, len(x), config.batch_size),
            desc=f"{phase} {epoch}/{epochs}",
            unit="batch",
            file=sys.stderr,
            leave=False,
        )
        for start in progress:
            batch = order[start : start + config.batch_size]
            inputs = x[batch] if augment is None else augment(x[batch], generator)
            loss = nn.functional.cross_entropy(model(inputs), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            progress.set_postfix(loss=f"{loss.item():.3f}")
        train_loss, train_accuracy = _evaluate(model, x, y, config.batch_size)
        val_loss, val_accuracy = _evaluate(model, *val, config.batch_size) if len(val[0]) else (None, None)
        entry = EpochReport(phase, epoch, train_loss, train_accuracy, val_loss, val_accuracy)
        report.history.append(entry)
        key = (val_accuracy, -val_loss) if val_loss is not None else (train_accuracy, -train_loss)
        is_best = best_key is None or key > best_key
        if is_best:
            best_key, best_state, best_entry = key, copy.deepcopy(model.state_dict()), entry
        val_text = f"  val loss {val_loss:.4f} acc {val_accuracy:.3f}" if val_loss is not None else ""
        print(
            f"{phase} epoch {epoch}/{epochs}  train loss {train_loss:.4f} acc {train_accuracy:.3f}{val_text}"
            f"{'  *best' if is_best else ''}",
            file=sys.stderr,
            flush=True,
        )
    return best_state, best_key, best_entry


def _flip_some(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def train(config: TrainConfig) -> TrainReport:
    """Train on `config.data` and export to `config.out`."""
    torch.manual_seed(config.seed)
    samples, labels = scan_image_folder(config.data)
    train_samples, val_samples = split(samples, config.val_fraction, config.seed)
    report = TrainReport(labels=labels, train_images=len(train_samples), val_images=len(val_samples))
    print(
        f"{len(labels)} labels ({', '.join(labels)}): {len(train_samples)} training and "
        f"{len(val_samples)} validation images",
        file=sys.stderr,
    )

    model, metadata = default.build()
    spec = metadata.preprocessing
    x_train, y_train = _load(train_samples, spec, "decoding training images")
    x_val, y_val = (
        _load(val_samples, spec, "decoding validation images")
        if val_samples
        else (torch.empty(0, 3, spec.crop, spec.crop), torch.empty(0, dtype=torch.long))
    )

    # Phase 1: the head, on features of the frozen pretrained body (and of mirrored images).
    model._fc = nn.Identity()
    model.eval()
    features = _features(model, torch.cat([x_train, x_train.flip(-1)]), config.batch_size, "body features")
    val_features = _features(model, x_val, config.batch_size, "validation features") if len(x_val) else x_val
    head = nn.Linear(features.shape[1], len(labels))
    state, rank, report.best = _fit(
        head,
        list(head.parameters()),
        features,
        torch.cat([y_train, y_train]),
        (val_features, y_val),
        config,
        config.epochs,
        config.learning_rate,
        "head",
        report,
    )
    head.load_state_dict(state)
    model._fc = head

    # Phase 2, optional: the whole network, gently.
    if config.fine_tune_epochs:
        before = copy.deepcopy(model.state_dict())
        state, fine_rank, fine_best = _fit(
            model,
            list(model.parameters()),
            x_train,
            y_train,
            (x_val, y_val),
            config,
            config.fine_tune_epochs,
            config.fine_tune_learning_rate,
            "fine-tune",
            report,
            augment=_flip_some,
        )
        # Keep fine-tuning only if its best epoch beats the head's best.
        if fine_rank >= rank:
            model.load_state_dict(state)
            report.best = fine_best
        else:
            model.load_state_dict(before)

    model.eval()
    metadata.name = report.name = config.name or name_from(config.out)
    metadata.labels = labels
    metadata.source = Source(
        kind="train", arch=default.ARCH, checkpoint=str(config.data), pretrained=metadata.source.pretrained
    )
    report.artifact = export_classifier(
        model,
        metadata,
        config.out,
        format=config.format,
        target_cpu=config.target_cpu,
        quantization=config.quantization,
    )
    best = report.best
    print(
        f"best: {best.phase} epoch {best.epoch} (train acc {best.train_accuracy:.3f}"
        + (f", val acc {best.val_accuracy:.3f})" if best.val_accuracy is not None else ")"),
        file=sys.stderr,
    )
    return report
