"""`python -m choripan torchvision`: checkpoints as torchvision and torch.save write them."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys

import pytest
import torch
import torchvision

from choripan import artifact
from choripan.errors import ExportError
from choripan.imaging import load_batch
from choripan.photos import reference_photos
from choripan.sources import torchvision as source
from choripan.tracing import Probabilities, export_classifier

from .conftest import ROOT, shown_steps

LABELS = "cat,espresso,missile"


def trained(arch: str, classes: int = 3) -> torch.nn.Module:
    """A torchvision model whose BatchNorm statistics have seen real photos, so that eval mode matters."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None, num_classes=classes)
    batch = load_batch(reference_photos()[:4], source.preprocessing_for(arch))
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(batch)
    return model.eval()


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resnet18")
    model = trained("resnet18")
    state = model.state_dict()
    paths = {"plain": folder / "plain.pth", "state_dict": folder / "wrapped.pth", "model": folder / "model.pth"}
    torch.save(state, paths["plain"])
    torch.save({"state_dict": state, "epoch": 3, "best_acc1": 0.9}, paths["state_dict"])
    torch.save({"model": state, "optimizer": {"lr": 0.1}}, paths["model"])
    torch.save(model, folder / "pickled.pth")
    return model, folder, paths


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "choripan", *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=900
    )


def export_torchvision(weights, out, *extra, arch="resnet18", labels=LABELS):
    label_args = ("--labels", labels) if labels else ()
    return run("torchvision", "--arch", arch, "--weights", weights, *label_args, "--out", out, *extra)


def expected_probabilities(model, arch):
    batch = load_batch(reference_photos()[:4], source.preprocessing_for(arch))
    with torch.no_grad():
        return batch, Probabilities(model)(batch)


@pytest.mark.parametrize("form", ["plain", "state_dict", "model"])
def test_state_dict_forms_export_and_equal_eager(resnet18, tmp_path, form):
    model, _, paths = resnet18
    out = tmp_path / "resnet18.pt"
    result = export_torchvision(paths[form], out)
    assert result.returncode == 0, result.stderr
    batch, expected = expected_probabilities(model, "resnet18")
    loaded, metadata = artifact.load(out)
    torch.testing.assert_close(loaded(batch), expected, atol=1e-4, rtol=0)
    assert metadata["labels"] == LABELS.split(",")
    assert metadata["source"]["kind"] == "torchvision" and metadata["source"]["arch"] == "resnet18"
    assert metadata["source"]["checkpoint_sha256"] == artifact.sha256_file(paths[form])
    assert (tmp_path / "resnet18.pt.golden.json").is_file()


def test_a_pickle_is_refused_without_trust_and_leaves_no_file(resnet18, tmp_path):
    _, folder, _ = resnet18
    out = tmp_path / "out" / "model.pt"
    result = export_torchvision(folder / "pickled.pth", out)
    assert result.returncode == 2
    assert "--trust-pickle" in result.stderr and "runs code" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "weights_only" not in result.stderr  # torch's advice to load it anyway is --trust-pickle's to give
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


class _Runs:
    """Pickles as a call of os.system: the weights-only unpickler blocks its module outright."""

    def __reduce__(self):
        import os

        return (os.system, ("true",))


def test_a_pickled_call_is_refused_in_choripans_words(tmp_path):
    checkpoint = tmp_path / "runs.pth"
    torch.save({"state_dict": {}, "hook": _Runs()}, checkpoint)
    result = export_torchvision(checkpoint, tmp_path / "x.pt")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "holds pickled Python objects" in result.stderr and "--trust-pickle" in result.stderr
    assert "weights_only" not in result.stderr and "torch.load" not in result.stderr


def test_a_trusted_pickle_exports(resnet18, tmp_path):
    model, folder, _ = resnet18
    out = tmp_path / "model.pt"
    result = export_torchvision(folder / "pickled.pth", out, "--trust-pickle")
    assert result.returncode == 0, result.stderr
    batch, expected = expected_probabilities(model, "resnet18")
    torch.testing.assert_close(artifact.load(out)[0](batch), expected, atol=1e-4, rtol=0)


def test_weights_of_another_architecture_name_the_keys(resnet18, tmp_path):
    _, _, paths = resnet18
    result = export_torchvision(paths["plain"], tmp_path / "x.pt", arch="resnet34")
    assert result.returncode == 2
    assert "missing keys: layer1.2." in result.stderr
    assert not (tmp_path / "x.pt").exists()


def test_label_count_must_match_the_classifier(resnet18, tmp_path):
    _, _, paths = resnet18
    result = export_torchvision(paths["plain"], tmp_path / "x.pt", labels="cat,dog")
    assert result.returncode == 2 and "3 classes but 2 labels were given" in result.stderr


@pytest.mark.parametrize(
    ("classes", "labels", "message"),
    [
        (3, ["cat"], "m.pth has 3 classes but 1 label was given"),
        (1, ["cat", "dog"], "m.pth has 1 class but 2 labels were given"),
    ],
)
def test_label_counts_are_worded_in_the_singular_too(classes, labels, message):
    from choripan.labels import check_count

    with pytest.raises(ExportError) as refused:
        check_count(labels, classes, "m.pth")
    assert str(refused.value) == message


def test_labels_file(resnet18, tmp_path):
    _, _, paths = resnet18
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\nespresso\n\nmissile\n")
    out = tmp_path / "m.pt"
    result = export_torchvision(paths["plain"], out, "--labels-file", labels, labels=None)
    assert result.returncode == 0, result.stderr
    assert artifact.read_metadata(out)["labels"] == ["cat", "espresso", "missile"]


@pytest.mark.parametrize(
    "damage",
    [lambda b: b[: len(b) // 2], lambda b: b"\x00" * 256, lambda b: pickle.dumps({"weights": [1, 2]})],
    ids=["truncated", "garbage", "not-torch-save"],
)
def test_corrupt_checkpoints(resnet18, tmp_path, damage):
    """Said in choripan's words: torch's are advice to load with weights_only=False, a request to file an
    issue, its zip reader's internals, and a warning about pickle protocols."""
    _, _, paths = resnet18
    broken = tmp_path / "broken.pth"
    broken.write_bytes(damage(paths["plain"].read_bytes()))
    result = export_torchvision(broken, tmp_path / "x.pt")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (
        f"error: {broken} is not a readable PyTorch checkpoint: it is truncated or corrupt, or torch.save did not "
        "write it (E_INVALID_ARGUMENT)\n"
    )


def test_unknown_architecture_suggests_close_names(tmp_path):
    result = export_torchvision(tmp_path / "w.pth", tmp_path / "x.pt", arch="resnet19", labels="a,b")
    assert result.returncode == 2
    assert "unknown architecture 'resnet19'" in result.stderr and "resnet18" in result.stderr


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "squeezenet1_1", "densenet121"])
def test_other_families(arch, tmp_path):
    """A Linear classifier under another name, a convolutional one, a plain one."""
    model = trained(arch, classes=4)
    weights = tmp_path / f"{arch}.pth"
    torch.save(model.state_dict(), weights)
    built, metadata = source.build(arch, weights, ["a", "b", "c", "d"])
    out = export_classifier(built, metadata, tmp_path / f"{arch}.pt")
    batch, expected = expected_probabilities(model, arch)
    torch.testing.assert_close(artifact.load(out)[0](batch), expected, atol=1e-4, rtol=0)


def test_preprocessing_follows_the_architecture_and_can_be_overridden(resnet18, tmp_path):
    assert source.preprocessing_for("efficientnet_b3").interpolation == "bicubic"
    assert (source.preprocessing_for("inception_v3").resize, source.preprocessing_for("inception_v3").crop) == (
        342,
        299,
    )
    _, _, paths = resnet18
    out = tmp_path / "m.pt"
    result = export_torchvision(
        paths["plain"],
        out,
        "--resize",
        "240",
        "--crop",
        "200",
        "--mean",
        "0.5,0.5,0.5",
        "--std",
        "0.25,0.25,0.25",
        "--interpolation",
        "bicubic",
    )
    assert result.returncode == 0, result.stderr
    pre = artifact.read_metadata(out)["preprocessing"]
    assert (pre["resize"], pre["crop"], pre["mean"], pre["std"], pre["interpolation"]) == (
        240,
        200,
        [0.5] * 3,
        [0.25] * 3,
        "bicubic",
    )
    predicted = run("predict", "--model", out, reference_photos()[1], "--json")
    assert json.loads(predicted.stdout)["label"] in LABELS.split(",")


class Branchy(torch.nn.Module):
    """A forward with Python control flow on a tensor's value."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        if bool(pooled.mean() > 0):
            return self.fc(pooled)
        return self.fc(pooled * 3)


def test_data_dependent_control_flow_is_refused_and_scripting_keeps_it(tmp_path):
    from choripan.artifact import Metadata, Source
    from choripan.imaging import Preprocessing

    torch.manual_seed(0)
    eager = Branchy().eval()
    metadata = Metadata(
        name="branchy", labels=["a", "b"], preprocessing=Preprocessing(), source=Source(kind="custom", arch="branchy")
    )
    with pytest.raises(ExportError, match="--script"):
        export_classifier(eager, metadata, tmp_path / "traced.pt")
    assert list(tmp_path.iterdir()) == []
    module = artifact.load(export_classifier(eager, metadata, tmp_path / "scripted.pt", script=True))[0]
    x = torch.randn(2, 3, 8, 8).abs()
    with torch.no_grad():
        for sample in (x, -x):  # one input per branch
            torch.testing.assert_close(module(sample), Probabilities(eager)(sample))
        assert not torch.allclose(module(x), module(-x))


@pytest.fixture(scope="module")
def squeezenet(tmp_path_factory):
    """A small model's weights, saved under the name trainers give them."""
    weights = tmp_path_factory.mktemp("squeezenet") / "best.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.squeezenet1_1(num_classes=2).state_dict(), weights)
    return weights


@pytest.mark.parametrize(
    ("out", "extra", "name"),
    [("cat or not.pt", [], "cat-or-not"), ("m.pt", ["--name", "choripan-v2.1"], "choripan-v2.1")],
    ids=["after-out", "given"],
)
def test_the_served_name_is_the_out_files_or_the_one_given(squeezenet, tmp_path, out, extra, name):
    """Not the weights file's (best.pth would serve as /v2/models/best)."""
    result = export_torchvision(squeezenet, tmp_path / out, *extra, arch="squeezenet1_1", labels="cat,not")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {tmp_path / out} (squeezenet1_1, 2 classes, served as {name})\n"
    assert artifact.read_metadata(tmp_path / out)["name"] == name


def test_progress_shows_on_a_terminal_and_nowhere_else(squeezenet, tmp_path):
    arguments = ["--arch", "squeezenet1_1", "--weights", squeezenet, "--labels", "cat,not", "--out", tmp_path / "m.pt"]
    command = [sys.executable, "-m", "choripan", "torchvision", *map(str, arguments)]
    # An unsized pseudo-terminal (0x0), as a container's can be: tqdm by itself would print nothing there.
    terminal, stderr = os.openpty()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT)
    os.close(stderr)
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # EIO: the command has closed its end
            break
        if not chunk:
            break
        shown += chunk
    os.close(terminal)
    assert process.wait(timeout=900) == 0 and b"wrote" in process.stdout.read()
    assert shown_steps(shown.decode()) == [
        "exporting 1/5: checking the model on photos",
        "exporting 2/5: tracing",
        "exporting 3/5: saving",
        "exporting 4/5: verifying",
        "exporting 5/5: writing the golden answers",
    ]
    assert re.search(r"\r +\r$", shown.decode()), shown  # the line is cleared at the end

    quiet = run("torchvision", *arguments)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
