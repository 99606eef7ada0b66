"""fastai's vision_learner models, exported from the files `Learner.save` wrote, without fastai installed.

The checkpoints and fastai's own answers come from a child process that runs real fastai
(tests/python/fastai_checkpoints.py); this process never imports it.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision

from choripan import artifact
from choripan.errors import ExportError
from choripan.sources import fastai
from choripan.tracing import export_classifier

from . import fastai_checkpoints

# A body fastai lists in model_meta (resnet34: cut -2), one it cuts at its last child (densenet121: cut -1,
# which leaves out torchvision's final ReLU), and one it cuts by searching for pooling (mobilenet_v3_small).
ARCHS = ["resnet34", "densenet121", "mobilenet_v3_small"]


class _Opaque:
    """Any Python object a checkpoint might pickle beside the weights."""


@pytest.fixture(scope="session")
def written(tmp_path_factory) -> Iterator[Path]:
    """Checkpoints that fastai wrote, and what fastai's models answered (expected.pt)."""
    out = tmp_path_factory.mktemp("fastai")
    fastai_checkpoints.write(out, ARCHS, fastai_checkpoints.ensure_site())
    yield out
    shutil.rmtree(out, ignore_errors=True)  # about half a gigabyte, mostly Adam's moments


@pytest.fixture(scope="session")
def expected(written) -> dict:
    return torch.load(written / "expected.pt", weights_only=True)


def test_fastai_is_not_importable_here(expected):
    assert importlib.util.find_spec("fastai") is None and "fastai" not in sys.modules
    assert "fastcore" not in sys.modules
    # fastai wrote the checkpoints with this very torch.
    assert expected["versions"]["fastai"] == "2.8.12"
    assert expected["versions"]["torch"] == str(torch.__version__)


@pytest.mark.parametrize("arch", ARCHS)
def test_fastai_answers_depend_on_the_photo(arch, expected):
    """Otherwise agreeing with them would prove little: neither saturated nor the same for every photo."""
    probabilities = expected[arch]["probabilities"]
    assert (probabilities.max(dim=1).values < 0.99).sum() >= len(probabilities) // 2
    assert probabilities.argmax(dim=1).unique().numel() >= 3


@pytest.mark.parametrize("arch", ARCHS)
def test_artifact_answers_like_fastai(arch, written, expected, tmp_path):
    model, metadata = fastai.build(arch, written / f"{arch}.pth", expected["labels"])
    inputs, answers = expected["inputs"], expected[arch]
    with torch.no_grad():
        torch.testing.assert_close(model(inputs), answers["logits"], atol=1e-4, rtol=1e-5)
    loaded, document = artifact.load(export_classifier(model, metadata, tmp_path / f"{arch}.pt"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), answers["probabilities"], atol=1e-4, rtol=0)
    assert document["labels"] == expected["labels"] and document["name"] == arch
    source = document["source"]
    assert (source["kind"], source["arch"], source["fastai"]) == ("fastai", arch, True)
    assert source["checkpoint"] == f"{arch}.pth"
    assert source["checkpoint_sha256"] == artifact.sha256_file(written / f"{arch}.pth")
    preprocessing = document["preprocessing"]
    assert (preprocessing["resize"], preprocessing["crop"]) == (256, 224)
    assert preprocessing["mean"] == [0.485, 0.456, 0.406] and preprocessing["std"] == [0.229, 0.224, 0.225]


@pytest.mark.parametrize("arch", ARCHS)
def test_a_bare_state_dict_loads_too(arch, written, expected):
    """learn.save(name, with_opt=False) writes the model's state_dict alone."""
    model, _ = fastai.build(arch, written / f"{arch}-weights.pth", expected["labels"])
    with torch.no_grad():
        torch.testing.assert_close(model(expected["inputs"]), expected[arch]["logits"], atol=1e-4, rtol=1e-5)


def test_the_state_dict_keys_are_fastais(written):
    fastais = torch.load(written / "resnet34-weights.pth", weights_only=True)
    model = torch.nn.Sequential(fastai.body("resnet34", torchvision.models.resnet34()), fastai.head(512, 6))
    assert list(model.state_dict()) == list(fastais)


def test_another_bodys_checkpoint_is_refused_by_key(written, expected):
    with pytest.raises(ExportError) as refused:
        fastai.build("resnet18", written / "resnet34.pth", expected["labels"])
    message = str(refused.value)
    assert "do not fit fastai's vision_learner on resnet18" in message
    assert "unexpected keys: 0.4.2.conv1.weight" in message  # resnet34's third block, which resnet18 lacks
    with pytest.raises(
        ExportError, match=r"shape mismatches \(checkpoint vs model\): .*1\.2\.weight \(1024,\) vs \(2048,\)"
    ):
        fastai.build("densenet121", written / "resnet34-weights.pth", expected["labels"])


def test_label_count_must_match_the_checkpoint(written, expected):
    with pytest.raises(ExportError, match=r"resnet34.pth \(fastai resnet34\) has 6 classes but 5 labels were given"):
        fastai.build("resnet34", written / "resnet34.pth", expected["labels"][:5])


@pytest.mark.parametrize(
    "damage",
    [lambda data: data[: len(data) // 2], lambda data: b"\x00" * 100, lambda data: b""],
    ids=["truncated", "zeros", "empty"],
)
def test_a_damaged_checkpoint_is_refused(damage, written, expected, tmp_path):
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(damage((written / "mobilenet_v3_small-weights.pth").read_bytes()))
    with pytest.raises(ExportError, match="not a readable PyTorch checkpoint"):
        fastai.build("mobilenet_v3_small", damaged, expected["labels"])


def test_a_checkpoint_without_fastais_head_is_refused(tmp_path):
    weights = tmp_path / "plain.pth"
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), weights)
    with pytest.raises(ExportError, match=r"not from fastai's vision_learner with the default head: 1\.8\.weight"):
        fastai.build("resnet18", weights, ["a", "b"])


def test_an_unknown_architecture_suggests_names(written):
    with pytest.raises(ExportError, match="unknown architecture 'resnet343'; did you mean resnet34"):
        fastai.build("resnet343", written / "resnet34.pth", [])


def test_other_pickled_objects_need_trust(written, expected, tmp_path):
    weights = torch.load(written / "mobilenet_v3_small-weights.pth", weights_only=True)
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": weights, "learner": _Opaque()}, pickled)
    with pytest.raises(ExportError, match="--trust-pickle"):
        fastai.build("mobilenet_v3_small", pickled, expected["labels"])
    model, _ = fastai.build("mobilenet_v3_small", pickled, expected["labels"], trust_pickle=True)
    with torch.no_grad():
        torch.testing.assert_close(model(expected["inputs"]), expected["mobilenet_v3_small"]["logits"])


def test_a_pickle_of_a_missing_module_names_it(written, expected, tmp_path, monkeypatch):
    """torch.save(learn) needs fastai to unpickle: without it, the error names the missing module."""
    missing = types.ModuleType("choripan_missing_module")
    opaque = type("Learner", (), {"__module__": missing.__name__})
    missing.Learner = opaque
    monkeypatch.setitem(sys.modules, missing.__name__, missing)
    pickled = tmp_path / "learner.pth"
    torch.save({"model": {}, "learner": opaque()}, pickled)
    monkeypatch.delitem(sys.modules, missing.__name__)
    with pytest.raises(ExportError, match="pickles objects of choripan_missing_module, which is not installed"):
        fastai.build("mobilenet_v3_small", pickled, expected["labels"], trust_pickle=True)


def test_a_body_fastai_cannot_cut_is_refused(written, expected):
    with pytest.raises(ExportError, match="fastai cannot cut mobilenet_v2 into a body either: none of its children"):
        fastai.build("mobilenet_v2", written / "mobilenet_v3_small-weights.pth", expected["labels"])
