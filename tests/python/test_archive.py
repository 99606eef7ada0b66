"""A model file is code: both loaders (the native core, for Node and choripan_core; choripan.artifact, for
`python -m choripan predict`) check it before anything in it reaches libtorch, and refuse the same files
for the same reasons. The hostile files are made from the real default artifacts."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import choripan_core
import pytest
import torch

from choripan import artifact
from choripan.errors import ExportError


def _rewrite(source: Path, target: Path, entries) -> Path:
    """`target`: `source`'s records as `entries(records)` returns them — [(ZipInfo or name, bytes)] — with
    the metadata's checksum computed again over them, so that only the archive's shape is wrong (anyone
    can recompute a checksum)."""
    with zipfile.ZipFile(source) as archive:
        records = [(info, archive.read(info)) for info in archive.infolist()]
    records = entries(records)
    metadata_at = next(i for i, (info, _) in enumerate(records) if str(_name(info)).endswith("/extra/choripan.json"))
    document = json.loads(records[metadata_at][1])
    draft = io.BytesIO()
    _write(draft, records)
    digest = hashlib.sha256()
    safe = [(n.split("/", 1)[-1], d) for n, d in ((str(_name(i)), d) for i, d in records)]
    for name, data in sorted(safe, key=lambda item: item[0]):
        if name not in ("extra/choripan.json", ".data/serialization_id"):
            digest.update(name.encode() + b"\0" + data)
    document["checksum"]["value"] = digest.hexdigest()
    records[metadata_at] = (records[metadata_at][0], json.dumps(document).encode())
    with open(target, "wb") as f:
        _write(f, records)
    return target


def _name(info) -> str:
    return info.filename if isinstance(info, zipfile.ZipInfo) else info


def _write(out, records) -> None:
    with zipfile.ZipFile(out, "w") as archive:
        for info, data in records:
            archive.writestr(info, data)


def _both_refuse(path: Path, phrase: str, **options) -> None:
    """The native core and the Python loader each refuse `path` with E_MODEL_LOAD and `phrase`."""
    with pytest.raises(choripan_core.Error) as native:
        choripan_core.Model(str(path), workers=1, warmup=False, **options)
    assert native.value.code == "E_MODEL_LOAD", native.value
    assert f"cannot load model {path}: " in str(native.value) and phrase in str(native.value), native.value
    with pytest.raises(ExportError) as python:
        artifact.load(path, **options)
    assert python.value.code == "E_MODEL_LOAD", python.value
    assert str(python.value).startswith(f"cannot load model {path}: ") and phrase in str(python.value), python.value


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """TMPDIR for both loaders, to see what they leave behind."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr("tempfile.tempdir", str(folder))
    yield folder
    assert list(folder.iterdir()) == [], "a loader left files in TMPDIR"


@pytest.fixture(params=["pt", "pt2"])
def source(request, default_artifact, default_package) -> Path:
    return default_artifact if request.param == "pt" else default_package


def _top(records) -> str:
    return _name(records[0][0]).split("/", 1)[0]


def test_the_core_hashes_as_hashlib_does():
    for size in [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4096, 100_003, 1 << 20]:
        data = os.urandom(size)
        expected = hashlib.sha256(data).hexdigest()
        assert choripan_core._sha256(data) == expected, size
        assert choripan_core._sha256(data, portable=True) == expected, size


def test_traversal_writes_nothing_outside_and_is_refused(source, tmp_path, private_tmp):
    escaped = tmp_path / "escaped"
    climb = "../" * 12 + str(escaped).lstrip("/") + "/x"

    def add(records):
        return [*records, (f"{_top(records)}/data/aotinductor/model/{climb}", b"written outside")]

    hostile = _rewrite(source, tmp_path / f"traversal{source.suffix}", add)
    _both_refuse(hostile, "has a '..' component")
    assert not escaped.exists()


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("/etc/evil", "has an absolute path"),
        ("{top}/a//b", "has an empty path component"),
        ("{top}/./b", "has a '.' component"),
        ("{top}/a\\..\\b", "has a backslash in its name"),
        ("elsewhere/x", "is outside the top folder"),
        ("{top}/data/\0hidden", "holds a NUL byte"),
    ],
)
def test_unsafe_names_are_refused(default_package, tmp_path, private_tmp, name, phrase):
    # zipfile cuts a name at a NUL byte when it writes one: that byte goes in afterwards, in place.
    placeholder = name.replace("\0", "\1")

    def add(records):
        return [*records, (placeholder.format(top=_top(records)), b"x")]

    hostile = _rewrite(default_package, tmp_path / "named.pt2", add)
    with zipfile.ZipFile(default_package) as archive:
        top = archive.namelist()[0].split("/", 1)[0]
    hostile.write_bytes(
        hostile.read_bytes().replace(placeholder.format(top=top).encode(), name.format(top=top).encode())
    )
    _both_refuse(hostile, phrase)


def test_links_and_duplicates_are_refused(source, tmp_path, private_tmp):
    def link(records):
        info = zipfile.ZipInfo(f"{_top(records)}/data/link")
        info.create_system = 3
        info.external_attr = 0o120777 << 16
        return [*records, (info, b"/etc/passwd")]

    def twice(records):
        return [*records, (_name(records[1][0]), records[1][1])]

    _both_refuse(_rewrite(source, tmp_path / f"link{source.suffix}", link), "is a symbolic link")
    with pytest.warns(UserWarning, match="Duplicate name"):
        duplicated = _rewrite(source, tmp_path / f"twice{source.suffix}", twice)
    _both_refuse(duplicated, "appears twice")


def test_overlapping_entries_are_refused(default_artifact, tmp_path, private_tmp):
    """A central-directory entry whose local header hides inside another entry's data."""
    inner = b"default/inner"
    crc = zipfile.crc32(b"!")
    hidden = b"PK\x03\x04" + struct.pack("<5H3L2H", 20, 0, 0, 0, 0, crc, 1, 1, len(inner), 0) + inner + b"!"
    carrier = _rewrite(
        default_artifact, tmp_path / "carrier.pt", lambda records: [*records, (f"{_top(records)}/carrier", hidden)]
    )
    data = bytearray(carrier.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    count, size, offset = struct.unpack("<HLL", data[end + 10 : end + 20])
    fields = (20, 20, 0, 0, 0, 0, crc, 1, 1, len(inner), 0, 0, 0, 0, 0, data.index(hidden))
    entry = b"PK\x01\x02" + struct.pack("<6H3L5H2L", *fields) + inner
    data[end:end] = entry
    struct.pack_into("<HHLL", data, end + len(entry) + 8, count + 1, count + 1, size + len(entry), offset)
    carrier.write_bytes(bytes(data))
    _both_refuse(carrier, "overlap")


def test_an_inflation_bomb_is_refused(default_artifact, tmp_path, private_tmp):
    def add(records):
        info = zipfile.ZipInfo(f"{_top(records)}/padding")
        info.compress_type = zipfile.ZIP_DEFLATED
        return [*records, (info, bytes(400 << 20))]

    _both_refuse(_rewrite(default_artifact, tmp_path / "bomb.pt", add), "would inflate to")


def _constructor_library(tmp_path: Path, marker: Path) -> bytes:
    """A shared library whose constructor writes `marker`: what a swapped .so in a package runs when mapped."""
    source = tmp_path / "evil.c"
    source.write_text(
        f'#include <stdio.h>\n__attribute__((constructor)) static void run(void) {{ FILE* f = fopen("{marker}", "w");'
        " if (f) fclose(f); }\n"
    )
    library = tmp_path / "evil.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", library, source], check=True)
    return library.read_bytes()


def test_a_swapped_library_is_refused_before_it_is_mapped(default_package, tmp_path, private_tmp):
    marker = tmp_path / "constructor-ran"
    evil = _constructor_library(tmp_path, marker)
    swapped = tmp_path / "swapped.pt2"
    with zipfile.ZipFile(default_package) as source, zipfile.ZipFile(swapped, "w") as target:
        for info in source.infolist():
            target.writestr(info, evil if info.filename.endswith(".wrapper.so") else source.read(info))
    _both_refuse(swapped, "do not match the checksum recorded at export")
    assert not marker.exists()

    # With the checksum computed again, only a pinned digest (a signature's) stops it.
    resealed = _rewrite(
        default_package,
        tmp_path / "resealed.pt2",
        lambda records: [(i, evil if _name(i).endswith(".wrapper.so") else d) for i, d in records],
    )
    genuine = hashlib.sha256(default_package.read_bytes()).hexdigest()
    _both_refuse(resealed, "its SHA-256 is", sha256=genuine)
    assert not marker.exists()


def test_a_pinned_digest_loads_the_genuine_file(source, private_tmp):
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    model = choripan_core.Model(str(source), workers=1, warmup=False, sha256=digest.upper())
    model.dispose()
    artifact.load(source, sha256=digest)
    with pytest.raises(choripan_core.Error, match="Expected 64 hexadecimal digits for sha256"):
        choripan_core.Model(str(source), sha256="abc")


def test_load_errors_name_the_real_reason(tmp_path, private_tmp):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    empty = tmp_path / "empty.pt"
    empty.touch()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    checkpoint = tmp_path / "weights.pth"
    torch.save({"weight": torch.zeros(3)}, checkpoint)
    cases = [
        (tmp_path / "missing.pt", "no such file"),
        (tmp_path, "it is a directory, not a model file"),
        (Path("/dev/zero"), "it is a character device, not a regular file"),
        (fifo, "it is a FIFO, not a regular file"),
        (empty, "it is empty"),
        (junk, "it is not a well-formed TorchScript or .pt2 archive"),
        (checkpoint, "it is a checkpoint saved with torch.save"),
    ]
    for path, phrase in cases:
        _both_refuse(path, phrase)


def test_metadata_that_misnames_the_runtime_is_refused(default_artifact, tmp_path, private_tmp):
    def relabel(records):
        out = []
        for info, data in records:
            if _name(info).endswith("/extra/choripan.json"):
                document = json.loads(data)
                document["runtime"] = {"format": "aoti", "models": {"model": {"batch": [1, 8]}}}
                data = json.dumps(document).encode()
            out.append((info, data))
        return out

    _both_refuse(_rewrite(default_artifact, tmp_path / "misnamed.pt", relabel), "holds TorchScript")


def test_a_genuine_package_leaves_no_files_behind(default_package, private_tmp):
    model = choripan_core.Model(str(default_package), workers=1)
    assert list(private_tmp.iterdir()) == []  # removed once the libraries are mapped
    model.dispose()
    module, _ = artifact.load(default_package)
    assert module(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
    shutil.rmtree(private_tmp, ignore_errors=True)
    private_tmp.mkdir()
