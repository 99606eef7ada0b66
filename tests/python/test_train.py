"""`python -m choripan train`: transfer learning on a folder of real photos, then export."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from choripan.artifact import read_metadata
from choripan.errors import ExportError
from choripan.predictor import Predictor
from choripan.tracing import golden_path
from choripan.train import TrainConfig, scan_image_folder, split, train

from .conftest import ROOT

# (left, top, right, bottom) as fractions of the photo, and whether to mirror: eight training views
# and three held-out ones per photo.
TRAINING_VIEWS = [
    ((0.0, 0.0, 0.7, 0.8), False),
    ((0.3, 0.2, 1.0, 1.0), False),
    ((0.1, 0.1, 0.9, 0.9), True),
    ((0.0, 0.2, 0.6, 1.0), True),
    ((0.2, 0.0, 0.9, 0.7), False),
    ((0.05, 0.05, 0.95, 0.95), False),
    ((0.25, 0.15, 0.85, 0.95), True),
    ((0.0, 0.0, 1.0, 1.0), False),
]
HELD_OUT_VIEWS = [((0.15, 0.05, 0.75, 0.85), False), ((0.35, 0.3, 0.95, 0.95), True), ((0.1, 0.25, 0.8, 1.0), False)]


def views(photo: Image.Image, specs, folder, stem):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, ((left, top, right, bottom), mirror) in enumerate(specs):
        w, h = photo.size
        view = photo.crop((int(left * w), int(top * h), int(right * w), int(bottom * h)))
        if mirror:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"{stem}-{index}.jpg"
        view.save(path, quality=90)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, photos):
    """Real photos of two kinds: the cat (chelsea.png) and the espresso (coffee.png), seen through
    different crops and mirrorings; held-out crops live outside the training folder."""
    root = tmp_path_factory.mktemp("folder")
    held_out = {}
    for label, name in (("cat", "chelsea.png"), ("espresso", "coffee.png")):
        photo = Image.open(photos / name).convert("RGB")
        views(photo, TRAINING_VIEWS, root / "data" / label, label)
        held_out[label] = views(photo, HELD_OUT_VIEWS, root / "held-out" / label, label)
    return root / "data", held_out


@pytest.fixture(scope="module")
def trained(photo_folder, tmp_path_factory):
    data, _ = photo_folder
    out = tmp_path_factory.mktemp("model") / "cat-or-espresso.pt"
    return train(TrainConfig(data=data, out=out, epochs=5, seed=7)), out


def test_it_learns_full_training_accuracy_in_a_few_epochs(trained):
    report, _ = trained
    assert report.labels == ["cat", "espresso"]
    assert report.train_images == 12 and report.val_images == 4
    assert len(report.history) == 5
    assert report.best.train_accuracy == 1.0 and report.best.val_accuracy == 1.0
    assert report.history[-1].train_loss < report.history[0].train_loss


def test_held_out_photos_are_labelled_correctly(trained, photo_folder, photos):
    _, out = trained
    _, held_out = photo_folder
    predictor = Predictor(out)
    for label, paths in held_out.items():
        for path in paths:
            assert predictor.predict(path)["label"] == label, path.name
    assert predictor.predict(photos / "chelsea.png")["label"] == "cat"
    assert predictor.predict(photos / "coffee.png")["label"] == "espresso"


def test_the_artifact_describes_its_training(trained):
    _, out = trained
    metadata = Predictor(out).metadata
    assert metadata["labels"] == ["cat", "espresso"]
    assert metadata["source"]["kind"] == "train" and metadata["source"]["arch"] == "efficientnet-lite0"
    assert metadata["output"]["shape"] == [None, 2]
    assert golden_path(out).is_file()


def test_the_same_seed_gives_the_same_model(trained, photo_folder, tmp_path):
    _, first = trained
    data, _ = photo_folder
    second = tmp_path / "again.pt"
    train(TrainConfig(data=data, out=second, epochs=5, seed=7))
    golden = [json.loads(golden_path(p).read_text())["photos"] for p in (first, second)]
    assert golden[0] == golden[1]


def test_split_is_stratified_and_keeps_training_images(photo_folder):
    samples, labels = scan_image_folder(photo_folder[0])
    train_part, val_part = split(samples, 0.25, seed=1)
    assert sorted(i for _, i in val_part) == [0, 0, 1, 1]
    assert {i for _, i in train_part} == {0, 1}
    assert split(samples, 0.25, seed=1) == (train_part, val_part)


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "choripan", *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=900
    )


def test_the_command_prints_epochs_and_writes_the_artifact(photo_folder, tmp_path):
    data, _ = photo_folder
    out = tmp_path / "m.pt"
    result = run("train", "--data", data, "--out", out, "--epochs", "2", "--val-fraction", "0", "--name", "cat-or-not")
    assert result.returncode == 0, result.stderr
    assert "head epoch 1/2  train loss" in result.stderr and "head epoch 2/2" in result.stderr
    assert result.stdout == f"wrote {out} (2 classes: cat, espresso, served as cat-or-not)\n"
    assert read_metadata(out)["name"] == "cat-or-not"


def test_the_out_suffix_and_the_name_are_checked_before_training(tmp_path):
    with pytest.raises(ExportError, match="m.pt2 for an AOTInductor package"):
        TrainConfig(data=tmp_path, out=tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="cannot be a model's name"):
        TrainConfig(data=tmp_path, out=tmp_path / "m.pt", name="cat or not")


def test_bad_folders_exit_2_with_one_line(tmp_path, photo_folder):
    one_label = tmp_path / "one"
    (one_label / "cat").mkdir(parents=True)
    (one_label / "cat" / "a.jpg").write_bytes(next((photo_folder[0] / "cat").iterdir()).read_bytes())
    empty_label = tmp_path / "empty"
    (empty_label / "cat").mkdir(parents=True)
    (empty_label / "dog").mkdir(parents=True)
    (empty_label / "cat" / "a.jpg").write_bytes((one_label / "cat" / "a.jpg").read_bytes())
    broken = tmp_path / "broken"
    for label in ("cat", "dog"):
        (broken / label).mkdir(parents=True)
        (broken / label / "a.jpg").write_bytes((one_label / "cat" / "a.jpg").read_bytes())
    (broken / "dog" / "b.jpg").write_text("this is not a photo")
    cases = [
        (tmp_path / "missing", "is not a folder"),
        (one_label, "not an image folder"),
        (empty_label, "holds no images"),
        (broken, "b.jpg"),
    ]
    for folder, message in cases:
        result = run("train", "--data", folder, "--out", tmp_path / "x.pt", "--epochs", "1")
        assert result.returncode == 2, (folder, result.stderr)
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last and "Traceback" not in result.stderr
        assert not (tmp_path / "x.pt").exists()
