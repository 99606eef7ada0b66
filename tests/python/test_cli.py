"""`python -m export` as a user runs it: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import CAT_LABELS, ROOT


def run(*args: str):
    return subprocess.run(
        [sys.executable, "-m", "export", *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600
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
