from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from export.photos import data_dir
from export.sources import default
from export.tracing import export_classifier

ROOT = Path(__file__).resolve().parents[2]
CAT_LABELS = {"tiger cat", "Egyptian cat", "tabby"}


@pytest.fixture(scope="session")
def photos() -> Path:
    return data_dir()


@pytest.fixture(scope="session")
def default_artifact(tmp_path_factory) -> Path:
    """The default model exported by this test session (not the one setup wrote), so export is tested."""
    out = tmp_path_factory.mktemp("artifact") / "default.pt"
    model, metadata = default.build()
    return export_classifier(model, metadata, out)


@pytest.fixture
def artifact_copy(default_artifact, tmp_path) -> Path:
    """A private copy, for tests that damage it."""
    copy = tmp_path / "model.pt"
    shutil.copy(default_artifact, copy)
    return copy


@pytest.fixture(scope="session")
def default_package(tmp_path_factory) -> Path:
    """The default model compiled into an AOTInductor package by this test session."""
    out = tmp_path_factory.mktemp("package") / "default.pt2"
    model, metadata = default.build()
    return export_classifier(model, metadata, out)
