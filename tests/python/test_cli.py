"""`python -m choripan` as a user runs it: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import CAT_LABELS, ROOT


def run(*args: str):
    return subprocess.run(
        [sys.executable, "-m", "choripan", *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600
    )


def test_predict_json_labels_a_cat(default_artifact, photos):
    result = run("predict", "--model", default_artifact, photos / "chelsea.png", photos / "coffee.png", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(photos / "chelsea.png"), str(photos / "coffee.png")]
    assert lines[0]["label"] in CAT_LABELS and lines[1]["label"] == "espresso"
    assert len(lines[0]["top"]) == 5 and set(lines[0]["top"][0]) == {"label", "probability"}


def test_predict_topk(default_artifact, photos):
    result = run("predict", "--model", default_artifact, photos / "coffee.png", "--json", "--topk", "2")
    assert len(json.loads(result.stdout)["top"]) == 2


def test_inspect(default_artifact):
    result = run("inspect", default_artifact)
    assert result.returncode == 0, result.stderr
    assert "efficientnet-lite0" in result.stdout and "checksum      ok" in result.stdout
    document = json.loads(run("inspect", default_artifact, "--json").stdout)
    assert document["checksum_ok"] is True and len(document["metadata"]["labels"]) == 1000


def test_user_errors_exit_2_with_one_line(tmp_path, photos, default_artifact):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 100)
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("hello")
    for args in [
        ("inspect", tmp_path / "missing.pt"),
        ("inspect", garbage),
        ("predict", "--model", garbage, photos / "coffee.png"),
        ("predict", "--model", default_artifact, not_an_image),
    ]:
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.stderr


def test_usage_errors_exit_2():
    assert run("predict").returncode == 2
    assert run("no-such-command").returncode == 2


def test_export_errors_carry_the_shared_codes():
    """Every code export/ raises is one of native/core/vocabulary.json's."""
    import re

    vocabulary = json.loads((ROOT / "native" / "core" / "vocabulary.json").read_text())
    known = {entry["code"] for entry in vocabulary["errors"]}
    used = set()
    for source in (ROOT / "export").rglob("*.py"):
        used |= set(re.findall(r'"(E_[A-Z_]+)"', source.read_text()))
    assert used and used <= known, used - known
    result = subprocess.run(
        [sys.executable, "-m", "choripan", "predict", "--model", str(ROOT / "missing.pt"), "x.jpg"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2 and result.stderr.rstrip().endswith("(E_MODEL_LOAD)"), result.stderr


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width × height, with no pixel data: a decompression bomb's first bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_huge_declared_images_end_in_one_line_e_too_large(default_artifact, tmp_path):
    for width, height in ((30000, 30000), (12000, 9000)):  # past PIL's own bomb limit, and past choripan's
        bomb = tmp_path / f"bomb-{width}.png"
        bomb.write_bytes(_png_header(width, height))
        result = run("predict", "--model", default_artifact, bomb)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "E_TOO_LARGE" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "document",
    [
        b"[1, 2]",
        b'{"format": "choripan.artifact"}',
        b'{"format": "choripan.artifact", "labels": ["a"], "preprocessing": {}}',
    ],
    ids=["not-an-object", "no-labels", "empty-preprocessing"],
)
def test_malformed_metadata_ends_in_one_line_e_model_load(default_artifact, photos, tmp_path, document):
    import zipfile

    damaged = tmp_path / "damaged.pt"
    with zipfile.ZipFile(default_artifact) as source, zipfile.ZipFile(damaged, "w") as target:
        for info in source.infolist():
            data = document if info.filename.endswith("extra/choripan.json") else source.read(info)
            target.writestr(info.filename.replace("default/", "damaged/", 1), data)
    for command in (["predict", "--model", damaged, photos / "chelsea.png"], ["inspect", damaged]):
        result = run(*command)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, (command, result.stderr)
        assert "E_MODEL_LOAD" in result.stderr and "Traceback" not in result.stderr


def _one_line_usage_error(result, command: str) -> str:
    """A usage error: exit 2, one line on stderr that says where to read more, nothing on stdout."""
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == "", result.stderr
    assert result.stderr.startswith("error: ") and f"see `python -m choripan {command} --help`" in result.stderr
    return result.stderr


def test_usage_errors_are_one_line_of_the_command_meant():
    assert "the following arguments are required: --out" in _one_line_usage_error(run("default"), "default")
    assert "unrecognized arguments: --top 3; see" in _one_line_usage_error(
        run("torchvision", "--arch", "resnet18", "--weights", "w.pth", "--labels", "a", "--out", "x.pt", "--top", "3"),
        "torchvision",
    )
    assert "unrecognized arguments: --jsno (did you mean --json?)" in _one_line_usage_error(
        run("predict", "--model", "m.pt", "a.jpg", "--jsno"), "predict"
    )


@pytest.mark.parametrize("name", ["my model", "../up", ".hidden", "-dash", "a/b", "café", "what?", ""])
def test_a_name_urls_cannot_carry_is_a_usage_error(tmp_path, name):
    out = tmp_path / "m.pt"
    message = _one_line_usage_error(run("default", "--out", out, f"--name={name}"), "default")
    assert f"argument --name: {name!r} cannot be a model's name" in message
    assert "letters, digits, '_', '.' and '-', beginning with a letter or a digit" in message
    assert not out.exists()


def test_the_name_rule_is_what_choripan_serve_takes(tmp_path):
    """`choripan serve --model NAME=PATH` takes the names exported here, and refuses the others."""
    script = (
        "const { modelEntries } = require('./js/server/config');"
        "for (const name of process.argv.slice(1)) {"
        "  try { modelEntries([`${name}=x.pt`], { bare: false }); console.log('ok'); } catch { console.log('no'); } }"
    )
    names = ["cat-or-not", "resnet18.v2", "A_1", "..", ".hidden", "-x", "a/b", "a b", "é"]
    run = subprocess.run(["node", "-e", script, *names], cwd=ROOT, capture_output=True, text=True, check=True)
    from choripan.names import NAME_PATTERN

    assert run.stdout.split() == ["ok" if NAME_PATTERN.fullmatch(name) else "no" for name in names]
    assert run.stdout.split() == ["ok"] * 3 + ["no"] * 6


@pytest.mark.parametrize(
    ("arguments", "wanted"),
    [
        (
            ["--out", "model.onnx"],
            "--out {d}/model.onnx has '.onnx'; its suffix says what to write: "
            "{d}/model.pt for TorchScript or {d}/model.pt2 for an AOTInductor package",
        ),
        (
            ["--out", "model"],
            "--out {d}/model has no suffix; its suffix says what to write: "
            "{d}/model.pt for TorchScript or {d}/model.pt2 for an AOTInductor package",
        ),
        (
            ["--format", "aoti", "--out", "model.pt"],
            "--out {d}/model.pt: --format aoti writes an AOTInductor "
            "package, named *.pt2: name it {d}/model.pt2 (or {d}/model.pt for TorchScript)",
        ),
        (
            ["--format", "torchscript", "--out", "model.pt2"],
            "--out {d}/model.pt2: --format torchscript writes "
            "TorchScript, named *.pt: name it {d}/model.pt (or {d}/model.pt2 for an AOTInductor package)",
        ),
        (
            ["--format", "torchscript", "--out", "model.onnx"],
            "--out {d}/model.onnx: --format torchscript writes "
            "TorchScript, named *.pt: name it {d}/model.pt (or {d}/model.pt2 for an AOTInductor package)",
        ),
    ],
    ids=["onnx", "no-suffix", "aoti-as-pt", "torchscript-as-pt2", "torchscript-as-onnx"],
)
def test_an_out_suffix_of_another_format_is_refused_with_those_that_would_do(tmp_path, arguments, wanted):
    arguments = [str(tmp_path / a) if a.startswith("model") else a for a in arguments]
    result = run("default", *arguments)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr == f"error: {wanted.format(d=tmp_path)} (E_INVALID_ARGUMENT)\n"
    assert not list(tmp_path.iterdir())


def test_the_out_suffix_is_checked_before_the_weights_load(tmp_path):
    result = run(
        "torchvision",
        "--arch",
        "resnet18",
        "--weights",
        tmp_path / "missing.pth",
        "--labels",
        "a,b",
        "--out",
        tmp_path / "m.onnx",
    )
    assert result.returncode == 2 and "m.pt2 for an AOTInductor package" in result.stderr, result.stderr


@pytest.mark.parametrize(
    "command",
    [["inspect", "--json"], ["inspect"], ["predict", "--json"]],
    ids=["inspect-json", "inspect", "predict-json"],
)
def test_a_reader_that_stops_early_ends_it_quietly(default_artifact, photos, command):
    """`python -m choripan inspect --json x | head -c 10`: the reader has gone before the answer is written
    (here, before the command has even started): no BrokenPipeError, no traceback, 128 + SIGPIPE."""
    images = [photos / "coffee.png"] * 3
    arguments = [default_artifact] if command[0] == "inspect" else ["--model", default_artifact, *images]
    process = subprocess.Popen(
        [sys.executable, "-m", "choripan", *command, *map(str, arguments)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=600) == 141 and stderr == "", stderr
