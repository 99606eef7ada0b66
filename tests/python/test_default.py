"""The default model's export: real photos, trace parity, metadata, checksum, atomic writes."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

from choripan import artifact
from choripan.errors import ExportError
from choripan.imaging import TF_STYLE, load_batch
from choripan.photos import reference_photos
from choripan.predictor import Predictor
from choripan.sources import default
from choripan.tracing import Probabilities, export_classifier, golden_path, trace_classifier

from .conftest import CAT_LABELS


def test_labels_of_real_photos(default_artifact, photos):
    predictor = Predictor(default_artifact)
    assert predictor.predict(photos / "chelsea.png")["label"] in CAT_LABELS
    assert predictor.predict(photos / "coffee.png")["label"] == "espresso"
    assert predictor.predict(photos / "rocket.jpg")["label"] == "missile"


def test_the_weights_expect_tensorflow_style_normalisation(photos):
    """(x·255 − 127)/128 gives the right classes more probability than ImageNet's mean/std."""
    truth = {
        "chelsea.png": ("tiger cat", "Egyptian cat", "tabby"),
        "coffee.png": ("espresso",),
        "rocket.jpg": ("missile",),
        "motorcycle_left.png": ("moped",),
    }
    scores = {}
    for name, normalisation in [
        ("tf", TF_STYLE),
        ("imagenet", {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}),
    ]:
        model, metadata = default.build(normalisation)
        labels = metadata.labels
        batch = load_batch([photos / f for f in truth], metadata.preprocessing)
        with torch.no_grad():
            probabilities = Probabilities(model)(batch)
        scores[name] = sum(
            sum(probabilities[i, labels.index(label)].item() for label in truth[f]) for i, f in enumerate(truth)
        )
    assert scores["tf"] > scores["imagenet"] + 0.2, scores


def test_artifact_matches_eager_at_batch_1_and_4(default_artifact):
    model, metadata = default.build()
    eager = Probabilities(model).eval()
    loaded, _ = artifact.load(default_artifact)
    batch = load_batch(reference_photos()[:4], metadata.preprocessing)
    with torch.no_grad():
        for x in (batch[:1], batch):
            torch.testing.assert_close(loaded(x), eager(x), atol=1e-4, rtol=0)
            assert torch.allclose(loaded(x).sum(dim=1), torch.ones(len(x)), atol=1e-5)


def test_metadata_round_trip(default_artifact):
    metadata = artifact.read_metadata(default_artifact)
    assert metadata["format"] == "choripan.artifact" and metadata["format_version"] == 1
    assert metadata["name"] == "efficientnet-lite0"
    assert len(metadata["labels"]) == 1000 and metadata["labels"][281] == "tabby"
    assert metadata["input"] == {"shape": [None, 3, 224, 224], "dtype": "float32", "layout": "NCHW", "colors": "RGB"}
    assert metadata["output"]["kind"] == "probabilities"
    pre = metadata["preprocessing"]
    assert (pre["resize"], pre["crop"], pre["interpolation"], pre["antialias"]) == (256, 224, "bilinear", True)
    assert pre["mean"] == [127 / 255] * 3 and pre["std"] == [128 / 255] * 3
    assert pre["decode"]["icc_profile"] == "ignore" and pre["decode"]["exif_orientation"] == "apply"
    assert metadata["source"]["kind"] == "default" and len(metadata["source"]["checkpoint_sha256"]) == 64
    assert metadata["versions"]["torch"] == torch.__version__
    # The same document is what libtorch reads back.
    extra = {"choripan.json": ""}
    torch.jit.load(str(default_artifact), _extra_files=extra)
    assert json.loads(extra["choripan.json"]) == metadata


def test_checksum_detects_a_changed_weight(artifact_copy, tmp_path):
    assert artifact.verify_checksum(artifact_copy)[0]
    tampered = tmp_path / "tampered.pt"
    with zipfile.ZipFile(artifact_copy) as source, zipfile.ZipFile(tampered, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("/constants/0"):
                data = bytes([data[0] ^ 1]) + data[1:]
            target.writestr(info, data)
    assert not artifact.verify_checksum(tampered)[0]


def test_golden_file_beside_the_artifact(default_artifact):
    golden = json.loads(golden_path(default_artifact).read_text())
    assert golden["artifact_checksum"] == artifact.read_metadata(default_artifact)["checksum"]["value"]
    names = [entry["file"] for entry in golden["photos"]]
    assert names[:3] == ["chelsea.png", "coffee.png", "rocket.jpg"]
    assert golden["photos"][1]["label"] == "espresso"
    assert all(len(entry["top"]) == 5 for entry in golden["photos"])


class DataDependent(torch.nn.Module):
    def forward(self, x):
        if x.mean() > 0:  # a branch the trace would freeze
            return x.flatten(1)[:, :10]
        return -x.flatten(1)[:, :10]


def test_data_dependent_control_flow_is_an_error_that_suggests_scripting():
    with pytest.raises(ExportError, match="--script"):
        trace_classifier(Probabilities(DataDependent()), torch.randn(1, 3, 8, 8))


def test_a_failed_export_leaves_no_file(tmp_path):
    model, metadata = default.build()
    metadata.labels = metadata.labels[:10]  # 1000 outputs, 10 labels
    out = tmp_path / "bad.pt"
    with pytest.raises(ExportError, match="1000.*10 labels"):
        export_classifier(model, metadata, out)
    assert list(tmp_path.iterdir()) == []


def test_a_verification_failure_leaves_no_file(tmp_path, monkeypatch):
    model, metadata = default.build()
    from choripan import tracing

    def broken_verify(eager, candidates, batches):
        raise ExportError("simulated mismatch")

    monkeypatch.setattr(tracing, "verify", broken_verify)
    with pytest.raises(ExportError, match="simulated"):
        export_classifier(model, metadata, tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []
