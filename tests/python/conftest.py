from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import pytest

from choripan.photos import data_dir
from choripan.sources import default
from choripan.tracing import export_classifier

ROOT = Path(__file__).resolve().parents[2]
CAT_LABELS = {"tiger cat", "Egyptian cat", "tabby"}


# `npm run test:fast` runs `pytest -m "not slow"`: every test that needs a compiled package is slow (a
# compile takes a minute or more), and so are the modules that export torchvision and fastai models or
# train one (each test a minute or more; fastai's first installs fastai).
SLOW_FIXTURES = {"default_package", "int8_package"}
SLOW_MODULES = {"test_fastai", "test_torchvision", "test_train"}


def pytest_collection_modifyitems(items):
    for item in items:
        module = item.module.__name__.rpartition(".")[2]
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


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


@pytest.fixture
def cpu_quota_cgroup():
    """A command prefix that runs a process in a new cgroup limited to one CPU (cgroup v1's cpu
    controller, as on this machine, or v2's cpu.max); skips where cgroups cannot be made (not root)."""
    v1 = Path("/sys/fs/cgroup/cpu")
    v2 = Path("/sys/fs/cgroup")
    group = None
    try:
        if (v1 / "cpu.cfs_quota_us").exists():
            group = v1 / f"choripan-test-{uuid.uuid4().hex[:8]}"
            group.mkdir()
            (group / "cpu.cfs_period_us").write_text("100000")
            (group / "cpu.cfs_quota_us").write_text("100000")
        elif "cpu" in (v2 / "cgroup.controllers").read_text().split():
            group = v2 / f"choripan-test-{uuid.uuid4().hex[:8]}"
            group.mkdir()
            (group / "cpu.max").write_text("100000 100000")
        else:
            pytest.skip("no cgroup cpu controller here")
    except OSError as error:
        if group is not None and group.exists():
            group.rmdir()
        pytest.skip(f"cannot make a cgroup here ({error.strerror}); it needs root")
    yield ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh"]
    group.rmdir()


def shown_steps(output: str) -> list[str]:
    """The steps an export's progress line (choripan.progress) showed on a terminal, in order, from what it wrote
    there: each redraw begins with a carriage return, `exporting 2/5: tracing (00:03)` shows `exporting 2/5:
    tracing`."""
    steps = []
    for line in output.split("\r"):
        shown = re.fullmatch(r"(exporting \d+/\d+: .+) \(\d\d:\d\d\) *", line)
        if shown and shown[1] not in steps:
            steps.append(shown[1])
    return steps
