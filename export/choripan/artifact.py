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
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import __version__, aoti, quantize
from .contract import ARTIFACT
from .errors import ExportError, first_line
from .imaging import Preprocessing

FORMAT = ARTIFACT["format"]
FORMAT_VERSION = ARTIFACT["formatVersion"]
METADATA_FILE = ARTIFACT["metadataFile"]
_UNCHECKED = set(ARTIFACT["uncheckedRecords"])  # torch's id of the archive hashes the records, metadata included


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
    raise ExportError(f"{path} has no choripan metadata: export it with `python -m choripan`", "E_MODEL_LOAD")


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


MAX_INFLATION = ARTIFACT["maxInflation"]
"""Deflated code and debug records inflate a few times over; a zip bomb, thousands of times."""
_UNIX = 3
_REGULAR_OR_UNSET = (0, stat.S_IFREG)


def _refused(path: Path, reason: str) -> ExportError:
    """The one shape of a load failure, as the native core words it: "cannot load model PATH: REASON"."""
    return ExportError(f"cannot load model {path}: {reason}", "E_MODEL_LOAD")


def _unsafe(path: Path, what: str) -> ExportError:
    return _refused(path, f"its archive is refused: {what}")


def _malformed(path: Path, what: str) -> ExportError:
    return _refused(path, f"it is not a well-formed TorchScript or .pt2 archive ({what})")


def _quoted(name: str) -> str:
    return f"'{name[:200]}{'…' if len(name) > 200 else ''}'"


def _read_whole(path: Path) -> bytes:
    """The file's bytes, once; a FIFO or a device is refused before it is opened (a FIFO would block)."""
    kinds = {
        stat.S_ISDIR: "it is a directory, not a model file",
        stat.S_ISFIFO: "it is a FIFO, not a regular file",
        stat.S_ISCHR: "it is a character device, not a regular file",
        stat.S_ISBLK: "it is a block device, not a regular file",
        stat.S_ISSOCK: "it is a socket, not a regular file",
    }
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise _refused(path, next((what for test, what in kinds.items() if test(mode)), "it is not a regular file"))
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as error:
        raise _refused(path, "no such file") from error
    except PermissionError as error:
        raise _refused(path, "permission denied") from error
    except OSError as error:
        raise _refused(path, error.strerror or str(error)) from error
    if not data:
        raise _refused(path, "it is empty")
    return data


def _check_name(path: Path, name: str) -> None:
    """A name safe to use as a path below a folder of ours: relative, with no way up and no aliases."""
    quoted = _quoted(name)
    if not name:
        raise _unsafe(path, "an entry has an empty name")
    if "\0" in name:
        raise _unsafe(path, "an entry's name holds a NUL byte")
    if "\\" in name:
        raise _unsafe(path, f"the entry {quoted} has a backslash in its name")
    if name.startswith("/"):
        raise _unsafe(path, f"the entry {quoted} has an absolute path")
    for part in name.split("/"):
        if not part:
            raise _unsafe(path, f"the entry {quoted} has an empty path component (a folder, or '//')")
        if part in (".", ".."):
            raise _unsafe(path, f"the entry {quoted} has a '{part}' component")


class CheckedArchive:
    """A model file read once into memory and checked there before anything in it is used.

    A model file is code: TorchScript, or compiled libraries in a `.pt2` whose constructors run when
    they are mapped. The checks are the native core's (native/core/archive.cc): the file's SHA-256 when
    one is pinned; every entry a stored or deflated regular file under one top folder, with no absolute
    path, `..`, `.` or empty component, backslash, link, duplicate or encryption; local headers that
    agree with the central directory and entries that do not overlap; no more than MAX_INFLATION times
    the file once inflated. `load()` then checks the metadata's checksum over the records.
    """

    def __init__(self, path: Path, sha256: str | None = None):
        self.path = Path(path)
        self.data = _read_whole(self.path)
        if sha256 is not None and (actual := hashlib.sha256(self.data).hexdigest()) != sha256.lower():
            raise _refused(self.path, f"its SHA-256 is {actual}, not the {sha256.lower()} it must have")
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(self.data))
            infos = self.zip.infolist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
            raise _malformed(self.path, str(error)) from error
        if not infos:
            raise _malformed(self.path, "it holds no records")
        # zipfile cuts names at a NUL byte: the checks read them as stored (orig_filename).
        top = infos[0].orig_filename.split("/", 1)[0]
        self.records: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            self._check_entry(info)
            if not info.orig_filename.startswith(top + "/"):
                raise _unsafe(
                    self.path,
                    f"the entry {_quoted(info.orig_filename)} is outside the top folder '{top}/'",
                )
            name = info.orig_filename[len(top) + 1 :]
            if name in self.records:
                raise _unsafe(self.path, f"the entry {_quoted(info.orig_filename)} appears twice")
            self.records[name] = info
        self._check_layout(infos)
        inflated = sum(info.file_size for info in infos)
        if inflated > MAX_INFLATION * len(self.data):
            raise _unsafe(
                self.path,
                f"its records would inflate to {inflated} bytes, more than {MAX_INFLATION} times the file",
            )

    def _check_entry(self, info: zipfile.ZipInfo) -> None:
        _check_name(self.path, info.orig_filename)
        quoted = _quoted(info.orig_filename)
        if info.flag_bits & 1:
            raise _unsafe(self.path, f"the entry {quoted} is encrypted")
        kind = stat.S_IFMT(info.external_attr >> 16)
        if info.create_system == _UNIX and kind not in _REGULAR_OR_UNSET:
            what = "is a symbolic link" if kind == stat.S_IFLNK else "is not a regular file"
            raise _unsafe(self.path, f"the entry {quoted} {what}")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _malformed(self.path, f"the entry {quoted} uses compression method {info.compress_type}")

    def _check_layout(self, infos: list[zipfile.ZipInfo]) -> None:
        """Each local header names its entry and no two entries share bytes (how zip bombs and archives
        that two readers see differently are made)."""
        spans = []
        for info in infos:
            start = info.header_offset
            header = self.data[start : start + 30]
            if len(header) < 30 or header[:4] != b"PK\x03\x04":
                raise _malformed(self.path, f"the entry {_quoted(info.orig_filename)} has no local header")
            (method,) = struct.unpack("<H", header[8:10])
            name_length, extra_length = struct.unpack("<HH", header[26:30])
            local_name = self.data[start + 30 : start + 30 + name_length]
            encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
            if local_name != info.orig_filename.encode(encoding) or method != info.compress_type:
                raise _unsafe(
                    self.path,
                    f"the entry {_quoted(info.orig_filename)} is described differently in its local header",
                )
            spans.append((start, start + 30 + name_length + extra_length + info.compress_size, info.orig_filename))
        spans.sort()
        for (_, end, before), (start, _, after) in zip(spans, spans[1:], strict=False):
            if start < end:
                raise _unsafe(self.path, f"the entries {_quoted(before)} and {_quoted(after)} overlap")

    def read(self, name: str) -> bytes:
        try:
            return self.zip.read(self.records[name])
        except KeyError as error:
            raise _refused(self.path, f"it has no record {_quoted(name)}") from error
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
            raise _refused(self.path, f"its record {_quoted(name)} does not read back: {error}") from error

    def records_checksum(self) -> str:
        """The artifact checksum (see `checksum`) of these records."""
        digest = hashlib.sha256()
        for name in sorted(self.records):
            if name in _UNCHECKED:
                continue
            digest.update(name.encode() + b"\0")
            digest.update(self.read(name))
        return digest.hexdigest()

    def extract(self, prefix: str, folder: Path) -> None:
        """Writes the records whose names start with `prefix` below `folder` (checked names stay below it)."""
        for name in self.records:
            if name.startswith(prefix):
                target = Path(folder, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "xb") as f:
                    f.write(self.read(name))

    def metadata(self) -> dict:
        """The metadata document, checked; torch.save checkpoints and foreign archives said to be what they are."""
        name = f"extra/{METADATA_FILE}"
        if name not in self.records:
            if "constants.pkl" not in self.records and "data.pkl" in self.records:
                raise _refused(
                    self.path,
                    "it is a checkpoint saved with torch.save (weights or a pickled model), not a choripan artifact; "
                    "export it first, e.g. `python -m choripan torchvision --arch ARCH --weights "
                    f"{self.path} --labels … --out model.pt`",
                )
            raise _refused(self.path, f"it has no choripan metadata ({name}); export it with `python -m choripan`")
        try:
            return _checked(json.loads(self.read(name)), self.path)
        except json.JSONDecodeError as error:
            raise _refused(self.path, f"its metadata is not JSON: {error}") from error


def verify_checksum(path: Path) -> tuple[bool, str]:
    """(matches, actual) for the checksum stored in the artifact's metadata."""
    checked = CheckedArchive(path)
    return checked.metadata().get("checksum", {}).get("value") == (actual := checked.records_checksum()), actual


def load(path: Path, sha256: str | None = None) -> tuple[torch.jit.ScriptModule | aoti.Package, dict]:
    """The module (or compiled package, called the same way) and its metadata, from a checked archive.

    Nothing in the file reaches torch before the archive passed its checks (CheckedArchive), its metadata
    was read and the records matched the checksum the metadata records; with `sha256`, before the file
    had that digest.
    """
    checked = CheckedArchive(path, sha256)
    metadata = checked.metadata()
    stored = metadata.get("checksum", {}).get("value") if isinstance(metadata.get("checksum"), dict) else None
    if not isinstance(stored, str):
        raise _refused(checked.path, "metadata records no checksum; export the model again")
    package = "archive_format" in checked.records and checked.read("archive_format") == b"pt2"
    runtime = metadata.get("runtime", {"format": "torchscript"}).get("format")
    if package != (runtime == "aoti"):
        holds = "an AOTInductor package" if package else "TorchScript"
        raise _refused(checked.path, f"its metadata says runtime format '{runtime}' but it holds {holds}")
    if checked.records_checksum() != stored:
        raise _refused(
            checked.path,
            "its records do not match the checksum recorded at export: it was changed after export, or damaged",
        )
    quantize.require_vnni_for(checked.path, metadata)
    if package:
        return aoti.Package(checked), metadata
    try:
        module = torch.jit.load(io.BytesIO(checked.data), map_location="cpu")
    except RuntimeError as error:
        raise _refused(checked.path, f"it does not load as TorchScript: {first_line(error)}") from error
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


def save_package(
    model: torch.nn.Module,
    metadata: Metadata,
    path: Path,
    example: torch.Tensor,
    target_cpu: str = "native",
    step: Callable[[str], None] = lambda name: None,
    check: Callable[[Path], dict] | None = None,
    avx2_packing: bool = False,
) -> torch.nn.Module:
    """Compile `model` for `target_cpu` into an AOTInductor package at `path` with the metadata inside
    (see export/choripan/aoti.py); `step(name)` is told as each step begins; `check(path)` measures the
    compiled package and returns metadata fields; `avx2_packing` (aoti.packs_for_avx2) adds the packed
    models packed for oneDNN's AVX2 kernels (aoti.compile_package)."""
    metadata.exported_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    metadata.versions = versions()
    avx2 = {name: mirrored for name, mirrored in aoti.AVX2_PACKED.items() if avx2_packing}
    metadata.runtime = {
        "format": "aoti",
        "models": {
            **{name: {"batch": [size, size]} for name, size in aoti.PACKED.items()},
            **{
                name: {
                    "batch": [aoti.PACKED[mirrored]] * 2,
                    "onednn_max_cpu_isa": ARTIFACT["avx2Packing"]["ONEDNN_MAX_CPU_ISA"],
                }
                for name, mirrored in avx2.items()
            },
            aoti.BATCHED: {"batch": [1, aoti.MAX_BATCH]},
        },
        "device": "cpu",
        "cpu_target": target_cpu,
    }
    return aoti.compile_package(model, example, path, metadata.to_json(), target_cpu, step, check, avx2_packing)
