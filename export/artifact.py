"""The artifact: a frozen TorchScript module with its metadata document inside (`_extra_files`).

Contract (native/core and js/ rely on it): `forward(x)` takes a float32 NCHW batch that is already
preprocessed as `metadata["preprocessing"]` says and returns softmax probabilities of shape [N, classes].
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import __version__, aoti
from .errors import ExportError
from .imaging import Preprocessing

FORMAT = "choripan.artifact"
FORMAT_VERSION = 1
METADATA_FILE = "choripan.json"
_UNCHECKED = {f"extra/{METADATA_FILE}", ".data/serialization_id"}  # the id hashes the records, metadata included


@dataclass
class Source:
    """Where the weights came from."""

    kind: str  # default | torchvision | fastai | train
    arch: str
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    fastai: bool = False
    pretrained: str | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Metadata:
    name: str
    labels: list[str]
    preprocessing: Preprocessing
    source: Source
    versions: dict = field(default_factory=dict)
    exported_at: str = ""
    checksum: str | None = None
    runtime: dict = field(default_factory=lambda: {"format": "torchscript"})

    def to_json(self) -> dict:
        size = self.preprocessing.crop
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "task": "image-classification",
            "labels": list(self.labels),
            "input": {"shape": [None, 3, size, size], "dtype": "float32", "layout": "NCHW", "colors": "RGB"},
            "output": {"kind": "probabilities", "activation": "softmax", "shape": [None, len(self.labels)]},
            "preprocessing": self.preprocessing.to_json(),
            "source": self.source.to_json(),
            "runtime": self.runtime,
            "versions": self.versions,
            "exported_at": self.exported_at,
            "checksum": {
                "algorithm": "sha256",
                "scope": "every archive record but the metadata and the serialization id",
                "value": self.checksum,
            },
        }


def versions() -> dict:
    import torchvision

    return {"choripan": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _records(archive: zipfile.ZipFile) -> Iterator[tuple[str, zipfile.ZipInfo]]:
    """Archive records keyed without the top folder, whose name torch takes from the file name."""
    for info in archive.infolist():
        yield info.filename.split("/", 1)[-1], info


def checksum(source: Path | io.BytesIO) -> str:
    """sha256 over every record's name and bytes, in name order, leaving out the metadata and what hashes it."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(source) as archive:
        for name, info in sorted(_records(archive), key=lambda item: item[0]):
            if name in _UNCHECKED:
                continue
            digest.update(name.encode() + b"\0")
            digest.update(archive.read(info))
    return digest.hexdigest()


def read_metadata(path: Path) -> dict:
    """The metadata document of an artifact, read from the archive without loading the model."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file", "E_MODEL_LOAD")
    try:
        with zipfile.ZipFile(path) as archive:
            for name, info in _records(archive):
                if name == f"extra/{METADATA_FILE}":
                    return _checked(json.loads(archive.read(info)), path)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ExportError(
            f"{path} is not a choripan artifact (a TorchScript or .pt2 archive): {error}", "E_MODEL_LOAD"
        ) from error
    except json.JSONDecodeError as error:
        raise ExportError(f"{path} has unreadable metadata: {error}", "E_MODEL_LOAD") from error
    raise ExportError(f"{path} has no choripan metadata: export it with `python -m export`", "E_MODEL_LOAD")


def _checked(document, path: Path) -> dict:
    """The metadata document, if it has the shape every reader relies on (the native core checks the same)."""
    problem = None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        problem = f"it is not a {FORMAT} document"
    elif not isinstance(document.get("labels"), list) or not all(isinstance(x, str) for x in document["labels"]):
        problem = "it lacks labels (a list of strings)"
    elif not isinstance(document.get("preprocessing"), dict):
        problem = "it lacks preprocessing"
    else:
        try:
            Preprocessing.from_json(document["preprocessing"])
        except (KeyError, TypeError, ValueError) as error:
            problem = f"its preprocessing is malformed ({type(error).__name__}: {error})"
        except ExportError as error:
            problem = f"its preprocessing is malformed ({error})"
    if problem:
        raise ExportError(f"{path} has unusable metadata: {problem}", "E_MODEL_LOAD")
    return document


def verify_checksum(path: Path) -> tuple[bool, str]:
    """(matches, actual) for the checksum stored in the artifact's metadata."""
    stored = read_metadata(path).get("checksum", {}).get("value")
    try:
        actual = checksum(Path(path))
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ExportError(f"{path} is damaged: {error}", "E_MODEL_LOAD") from error
    return stored == actual, actual


def load(path: Path) -> tuple[torch.jit.ScriptModule | aoti.Package, dict]:
    """The module (or compiled package, called the same way) and its metadata."""
    metadata = read_metadata(path)
    if aoti.is_package(path):
        return aoti.Package(path), metadata
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as error:
        raise ExportError(
            f"{path} does not load as TorchScript: {str(error).splitlines()[0]}", "E_MODEL_LOAD"
        ) from error
    return module.eval(), metadata


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """A temporary path beside `final` that replaces it on success and disappears on failure.

    The temporary file keeps `final`'s name inside a private folder: torch names the archive's top
    folder after the file.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    temporary = folder / final.name
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        temporary.chmod(0o666 & ~umask)  # an ordinary file, not mkdtemp's private mode
        os.replace(temporary, final)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def save(module: torch.jit.ScriptModule, metadata: Metadata, path: Path) -> None:
    """Write the module with its metadata; the checksum covers everything but the metadata."""
    metadata.exported_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    metadata.versions = versions()
    metadata.checksum = None
    draft = io.BytesIO()
    torch.jit.save(module, draft, _extra_files={METADATA_FILE: json.dumps(metadata.to_json())})
    draft.seek(0)
    metadata.checksum = checksum(draft)
    torch.jit.save(module, str(path), _extra_files={METADATA_FILE: json.dumps(metadata.to_json(), indent=1)})
    if checksum(Path(path)) != metadata.checksum:
        raise ExportError("saving the module is not deterministic here; the checksum cannot be trusted", "E_INTERNAL")


def save_package(model: torch.nn.Module, metadata: Metadata, path: Path, example: torch.Tensor) -> torch.nn.Module:
    """Compile `model` into an AOTInductor package at `path` with the metadata inside (see export/aoti.py)."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    metadata.exported_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    metadata.versions = versions()
    metadata.runtime = {
        "format": "aoti",
        "models": {aoti.SINGLE: {"batch": [1, 1]}, aoti.BATCHED: {"batch": [1, aoti.MAX_BATCH]}},
        "device": "cpu",
        "cpu_isa": str(pick_vec_isa()).upper(),
    }
    return aoti.compile_package(model, example, path, metadata.to_json())
