"""AOTInductor packages: padding folded at export, compiled, verified, and run by the native core."""

from __future__ import annotations

import ast
import io
import json
import os
import re
import subprocess
import sys
import time

import choripan_core
import pytest
import torch
from torch import nn

from choripan import aoti, artifact
from choripan.errors import ExportError
from choripan.imaging import Preprocessing, decode, load_batch
from choripan.photos import reference_photos
from choripan.predictor import Predictor
from choripan.tracing import export_classifier, golden_path

from .conftest import CAT_LABELS, ROOT, shown_steps


class SamePadded(nn.Module):
    """TensorFlow-style "same" convolutions: explicit pads before each, some one wider on one side."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(3, 8, 3, stride=2),  # pad (0, 1, 0, 1)
                nn.Conv2d(8, 8, 3, groups=8),  # pad (1, 1, 1, 1)
                nn.Conv2d(8, 8, 5, stride=2, groups=8),  # pad (1, 2, 1, 2)
                nn.Conv2d(8, 4, 3, stride=2),  # pad (1, 0, 0, 1): wider left, wider bottom
            ]
        )
        self.pads = [(0, 1, 0, 1), (1, 1, 1, 1), (1, 2, 1, 2), (1, 0, 0, 1)]

    def forward(self, x):
        for conv, pad in zip(self.convs, self.pads, strict=True):
            x = torch.relu(conv(nn.functional.pad(x, pad)))
        return x


def test_fold_padding_removes_every_pad_and_keeps_the_answers():
    torch.manual_seed(0)
    model = SamePadded().eval()
    x = torch.randn(2, 3, 37, 30)
    program = torch.export.export(model, (x,))
    assert aoti.fold_padding(program.graph_module) == 4
    targets = [node.target for node in program.graph.nodes]
    assert torch.ops.aten.pad.default not in targets
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), atol=1e-6, rtol=0)
        other = torch.randn(2, 3, 37, 30)
        torch.testing.assert_close(program.module()(other), model(other), atol=1e-6, rtol=0)


def test_fold_padding_stores_grown_kernels_in_a_module_whose_graph_reads_its_weights():
    """PT2E quantization works on the module's own graph and needs every convolution's weight a stored
    tensor (to fold BatchNorm into it and observe it), not one computed in the graph."""
    torch.manual_seed(0)
    model = SamePadded().eval()
    x = torch.randn(2, 3, 37, 30)
    module = torch.export.export(model, (x,)).module()
    assert aoti.fold_padding(module) == 4
    convs = [node for node in module.graph.nodes if node.target is torch.ops.aten.conv2d.default]
    assert len(convs) == 4 and all(conv.args[1].op == "get_attr" for conv in convs)
    with torch.no_grad():
        torch.testing.assert_close(module(x), model(x), atol=1e-6, rtol=0)


def test_fold_padding_leaves_pads_it_cannot_fold():
    class Reflect(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3)

        def forward(self, x):
            return self.conv(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")) + self.conv(
                nn.functional.pad(x, (0, 2, 0, 2))  # two wider on one side
            )

    program = torch.export.export(Reflect().eval(), (torch.randn(1, 3, 8, 8),))
    assert aoti.fold_padding(program.graph_module) == 0


def test_package_metadata_checksum_and_golden(default_package):
    metadata = artifact.read_metadata(default_package)
    assert metadata["runtime"]["format"] == "aoti"
    assert metadata["runtime"]["models"]["model"]["batch"] == [1, aoti.MAX_BATCH]
    assert artifact.verify_checksum(default_package)[0]
    golden = json.loads(golden_path(default_package).read_text())
    assert golden["artifact_checksum"] == metadata["checksum"]["value"]
    assert golden["photos"][0]["label"] in CAT_LABELS and golden["photos"][1]["label"] == "espresso"


def test_package_answers_like_the_torchscript_artifact(default_package, default_artifact):
    spec = Predictor(default_artifact).preprocessing
    batch = load_batch(reference_photos()[:4], spec)
    reference = torch.jit.load(str(default_artifact)).eval()
    package = Predictor(default_package).module
    with torch.inference_mode():
        torch.testing.assert_close(package(batch), reference(batch), atol=1e-5, rtol=0)
        torch.testing.assert_close(package(batch[:1]), reference(batch[:1]), atol=1e-5, rtol=0)
        torch.testing.assert_close(package(batch[:2]), reference(batch[:2]), atol=1e-5, rtol=0)


def test_package_links_libtorch_cpu_not_the_cuda_stub(default_package, tmp_path):
    import zipfile

    with zipfile.ZipFile(default_package) as archive:
        libraries = [name for name in archive.namelist() if name.endswith(".so")]
        assert len(libraries) == 3  # the batch-1 and batch-2 models and the dynamic one
        for name in libraries:
            (tmp_path / "lib.so").write_bytes(archive.read(name))
            needed = subprocess.run(["readelf", "-d", str(tmp_path / "lib.so")], capture_output=True, text=True).stdout
            assert "libtorch_cpu.so" in needed and "[libtorch.so]" not in needed, name


@pytest.fixture(scope="module")
def core_package(default_package):
    model = choripan_core.Model(str(default_package), max_batch=4)
    yield model
    model.dispose()


def test_core_runs_the_package_like_python(core_package, default_package, default_artifact):
    spec = Predictor(default_artifact).preprocessing
    batch = load_batch(reference_photos()[:4], spec)
    with torch.inference_mode():
        expected = torch.jit.load(str(default_artifact)).eval()(batch)
    torch.testing.assert_close(core_package.forward(batch), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(core_package.forward(batch[:1]), expected[:1], atol=1e-5, rtol=0)
    predictor = Predictor(default_package)
    for photo in reference_photos()[:3]:
        probabilities = core_package.predict(torch.from_numpy(decode(photo)))
        torch.testing.assert_close(probabilities, predictor.probabilities(photo), atol=1e-6, rtol=0)
    assert core_package.metadata == artifact.read_metadata(default_package)


def test_core_refuses_shapes_the_package_was_not_compiled_for(core_package):
    """A compiled package would read another shape wrongly instead of failing: the core checks first."""
    for batch in (torch.zeros(1, 3, 256, 256), torch.zeros(2, 3, 200, 224)):
        with pytest.raises(choripan_core.Error) as caught:
            core_package.forward(batch)
        assert caught.value.code == "E_INVALID_ARGUMENT" and "[N, 3, 224, 224]" in caught.value.message


def test_a_package_run_where_it_was_compiled_serves_lone_batches_with_its_batch_1_model(core_package, default_package):
    chosen = core_package.lone_batch
    assert chosen["model"] == "batch1" and 0 < chosen["single_ms"] <= 1.5 * chosen["batched_ms"], chosen
    package = artifact.load(default_package)[0]  # Python's own loader, at its first batch of one
    assert package.lone_batch is None
    package(torch.zeros(3, 3, 224, 224))
    assert package.lone_batch is None, "a batch of three runs the any-batch model whatever is chosen"
    package(torch.zeros(2, 3, 224, 224))  # a pair's model follows the batch-1 model's: the choice is made
    chosen = package.lone_batch
    assert chosen["model"] == "batch1" and 0 < chosen["single_ms"] <= 1.5 * chosen["batched_ms"], chosen


_LONE_BATCH_ELSEWHERE = """
import json, sys, torch, choripan_core
from choripan import artifact
model = choripan_core.Model(sys.argv[1], max_batch=2)
package = artifact.load(sys.argv[1])[0]
torch.manual_seed(0)
x = torch.rand(1, 3, 224, 224)
probabilities = model.forward(x)[0].tolist()
python_probabilities = package(x)[0].tolist()
print(json.dumps({"lone_batch": model.lone_batch, "probabilities": probabilities,
                  "python_lone_batch": package.lone_batch, "python_probabilities": python_probabilities}))
print("a pair", flush=True)
model.forward(torch.rand(2, 3, 224, 224))
print("the same pair in Python", flush=True)
package(torch.rand(2, 3, 224, 224))
model.dispose()
"""


def _reorders(verbose: list[str]) -> list[str]:
    """The source layouts of the reorders oneDNN ran (ONEDNN_VERBOSE lines): plain ones (`abcd`, `acdb`)
    where a model packs its weights at the call, blocked ones (`Acdb16a`) where they were packed for other
    kernels."""
    return [re.search(r"src:f32::blocked:(\w+)", line)[1] for line in verbose if ",exec,cpu,reorder," in line]


@pytest.mark.skipif(
    not {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= aoti._cpu_flags(),
    reason="packs weights for AVX-512 kernels, then serves them with oneDNN held to AVX2: needs AVX-512",
)
def test_a_package_packed_for_other_kernels_serves_lone_batches_with_its_any_batch_model(core_package, default_package):
    """Weights packed for AVX-512 kernels and served by oneDNN's AVX2 ones are repacked on every call of
    the batch-1 model (3-4x slower): the warm-up times it, and lone batches run the any-batch model, and so
    do batches of two, whose model's weights were packed the same way."""
    held = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ONEDNN_VERBOSE": "1"}
    ran = subprocess.run(
        [sys.executable, "-c", _LONE_BATCH_ELSEWHERE, str(default_package)],
        env=held,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    before, core_pair = ran.stdout.split("a pair\n", 1)
    core_pair, python_pair = core_pair.split("the same pair in Python\n", 1)
    answer = json.loads(next(line for line in before.splitlines() if line.startswith("{")))
    for pair in (core_pair, python_pair):
        sources = _reorders(pair.splitlines())
        assert len(sources) >= 49 and not [s for s in sources if re.search(r"\d", s)], sorted(set(sources))
    torch.manual_seed(0)
    expected = core_package.forward(torch.rand(1, 3, 224, 224))[0]
    for loader in ("", "python_"):  # the core, and Python's own loader (artifact.load)
        chosen = answer[f"{loader}lone_batch"]
        assert chosen["model"] == "model" and chosen["single_ms"] > 1.5 * chosen["batched_ms"], chosen
        torch.testing.assert_close(torch.tensor(answer[f"{loader}probabilities"]), expected, atol=1e-4, rtol=0)


_PAIR_PRIMITIVES = """
import sys, torch, choripan_core
model = choripan_core.Model(sys.argv[1], max_batch=2, workers=1)
pair = torch.rand(2, 3, 224, 224)
model.forward(pair)
print("measured", flush=True)
model.forward(pair)
model.dispose()
"""


def test_a_batch_of_two_runs_the_model_packed_for_it(core_package, default_package, default_artifact):
    """Under load with the default max_batch, most batches are of two: they run a model compiled for that
    size, its weights packed once, where the any-batch model reorders every weight on every call; each photo
    gets the answers it gets alone, from the core and from Python's loader."""
    assert artifact.read_metadata(default_package)["runtime"]["models"]["batch2"] == {"batch": [2, 2]}
    photos = load_batch(reference_photos()[:2], Predictor(default_artifact).preprocessing)
    pair = core_package.forward(photos)
    alone = torch.cat([core_package.forward(photos[i : i + 1]) for i in range(2)])
    assert pair[0].argmax() != pair[1].argmax()
    torch.testing.assert_close(pair, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(artifact.load(default_package)[0](photos), pair, atol=1e-5, rtol=0)
    run = subprocess.run(
        [sys.executable, "-c", _PAIR_PRIMITIVES, str(default_package)],
        env={**os.environ, "ONEDNN_VERBOSE": "1"}, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    measured = run.stdout.split("measured\n", 1)[1].splitlines()
    kinds = [line.split(",exec,", 1)[1].split(",")[1] for line in measured if ",exec," in line]
    assert kinds.count("convolution") == 49 and "reorder" not in kinds, sorted(set(kinds))


_MAPPED_MODELS = """
import sys, choripan_core
model = choripan_core.Model(sys.argv[1], max_batch=int(sys.argv[2]), workers=1)
folder = sys.argv[3]
print(sorted({line.split(folder, 1)[1].split("/", 1)[0] for line in open("/proc/self/maps") if folder in line}))
model.dispose()
"""


def test_with_max_batch_1_the_batch_2_model_is_not_loaded(default_package):
    """No batch of two forms with max_batch 1, so the batch-2 model's library and packed weights (21 MB)
    are never mapped; with max_batch 2 they are."""

    def mapped(max_batch: int) -> list[str]:
        ran = subprocess.run(
            [sys.executable, "-c", _MAPPED_MODELS, str(default_package), str(max_batch), f"/{aoti.COMPILED_FOLDER}"],
            capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
        return ast.literal_eval(ran.stdout)

    assert mapped(1) == sorted([aoti.BATCHED, aoti.SINGLE])
    assert mapped(2) == sorted([aoti.BATCHED, aoti.SINGLE, aoti.PAIR])


@pytest.fixture(scope="module")
def baseline_package(tmp_path_factory):
    """The default model compiled for the x86-64-v3 baseline, as the prebuilt platform package carries it."""
    from choripan.sources import default

    out = tmp_path_factory.mktemp("baseline") / "default.pt2"
    model, metadata = default.build()
    return export_classifier(model, metadata, out, target_cpu="x86-64-v3")


def test_only_a_baseline_package_compiled_with_avx512_is_packed_for_avx2_too(monkeypatch):
    has_avx512 = "avx512f" in aoti._cpu_flags()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert aoti.packs_for_avx2("x86-64-v3") == has_avx512
    assert not aoti.packs_for_avx2("native") and not aoti.packs_for_avx2("x86-64-v4")
    for cap, packs in (
        ("AVX512_CORE_VNNI", has_avx512),
        ("avx512_core", has_avx512),
        ("AVX2", False),
        ("SSE41", False),
    ):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)  # where oneDNN is held to AVX2, the first packing is AVX2's
        assert aoti.packs_for_avx2("x86-64-v3") == packs, cap


def test_a_compilation_that_fails_in_the_child_process_says_why():
    program = torch.export.export(nn.Linear(4, 2).eval(), (torch.rand(1, 4),))
    with pytest.raises(ExportError) as caught:
        aoti._compile_elsewhere({"batch1": program}, {"no_such_inductor_option": 1}, {"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert caught.value.code == "E_INTERNAL" and "under ONEDNN_MAX_CPU_ISA=AVX2" in str(caught.value)
    assert "no_such_inductor_option" in str(caught.value), str(caught.value)


_PACKINGS = """
import json, sys, torch, choripan_core
from choripan import artifact
folder = sys.argv[2]
model = choripan_core.Model(sys.argv[1], max_batch=2, workers=1)
mapped = sorted({line.split(folder, 1)[1].split("/", 1)[0] for line in open("/proc/self/maps") if folder in line})
package = artifact.load(sys.argv[1])[0]
torch.manual_seed(0)
photos = torch.rand(2, 3, 224, 224)
package(photos[:1])
print(json.dumps({"lone_batch": model.lone_batch, "python_lone_batch": package.lone_batch, "mapped": mapped,
                  "python": package(photos).tolist()}))
print("measured", flush=True)
print(json.dumps({"alone": model.forward(photos[:1]).tolist(), "pair": model.forward(photos).tolist()}))
model.dispose()
"""


@pytest.mark.skipif(
    not {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= aoti._cpu_flags(),
    reason="a baseline package is packed for AVX2 kernels beside AVX-512 ones only where it is compiled with AVX-512",
)
def test_a_baseline_package_runs_weights_packed_for_the_kernels_of_the_cpu_serving_it(baseline_package):
    """The prebuilt package is compiled on a build machine with AVX-512 and served on CPUs with or without
    it: its batch-1 and batch-2 models come packed for both oneDNN kernel sets, the loader takes the
    packing for the kernels oneDNN picks here and never maps the other, the warm-up keeps it for lone
    batches, and lone requests and pairs run packed models with no weight reordered at the call, in the
    core and in Python's loader."""
    runtime = artifact.read_metadata(baseline_package)["runtime"]
    assert runtime["cpu_isa"] == "AVX2"
    for name, size in (("batch1_avx2", 1), ("batch2_avx2", 2)):
        assert runtime["models"][name] == {"batch": [size, size], "onednn_max_cpu_isa": "AVX2"}, runtime["models"]
    inspected = subprocess.run(
        [sys.executable, "-m", "choripan", "inspect", str(baseline_package)], capture_output=True, text=True
    )
    expected = "aoti compiled for AVX2, batch1_avx2 and batch2_avx2 packed for oneDNN's AVX2 kernels"
    assert inspected.returncode == 0 and f"runtime       {expected}\n" in inspected.stdout, inspected.stdout
    answers = {}
    for cap, single, pair in ((None, aoti.SINGLE, aoti.PAIR), ("AVX2", "batch1_avx2", "batch2_avx2")):
        environment = {**os.environ, "ONEDNN_VERBOSE": "1"}
        environment.pop("ONEDNN_MAX_CPU_ISA", None)
        environment.update({"ONEDNN_MAX_CPU_ISA": cap} if cap else {})
        ran = subprocess.run(
            [sys.executable, "-c", _PACKINGS, str(baseline_package), f"/{aoti.COMPILED_FOLDER}"],
            env=environment, capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
        before, after = ran.stdout.split("measured\n", 1)
        chosen = json.loads(next(line for line in before.splitlines() if line.startswith("{")))
        for loader in ("", "python_"):
            assert chosen[f"{loader}lone_batch"]["model"] == single, (cap, chosen)
        assert chosen["mapped"] == sorted([aoti.BATCHED, single, pair]), (cap, chosen["mapped"])
        kinds = [line.split(",exec,", 1)[1].split(",")[1] for line in after.splitlines() if ",exec," in line]
        assert kinds.count("convolution") == 2 * 49 and "reorder" not in kinds, (cap, sorted(set(kinds)))
        answers[cap] = json.loads(next(line for line in after.splitlines() if line.startswith("{")))
        torch.testing.assert_close(
            torch.tensor(chosen["python"]), torch.tensor(answers[cap]["pair"]), atol=1e-5, rtol=0
        )
    for form in ("alone", "pair"):
        torch.testing.assert_close(
            torch.tensor(answers["AVX2"][form]), torch.tensor(answers[None][form]), atol=1e-4, rtol=0
        )


def test_a_package_from_before_the_batch_2_model_runs_pairs_with_its_any_batch_model(default_package, tmp_path):
    """Packages exported before the batch-2 model load as before, in the core and in Python, and give a
    batch of two the any-batch model's answers (which pack the weights at the call)."""
    import zipfile

    older = tmp_path / "older.pt2"

    def write(document: dict | None) -> None:
        with zipfile.ZipFile(default_package) as source, zipfile.ZipFile(older, "w") as target:
            for info in source.infolist():
                if f"/{aoti.COMPILED_FOLDER}{aoti.PAIR}/" in info.filename:
                    continue
                data = source.read(info)
                if info.filename.endswith("extra/choripan.json") and document is not None:
                    data = json.dumps(document).encode()
                target.writestr(info, data)

    document = artifact.read_metadata(default_package)
    del document["runtime"]["models"][aoti.PAIR]
    write(None)
    document["checksum"]["value"] = artifact.checksum(older)  # as export records it, over the records left
    write(document)
    photos = load_batch(reference_photos()[:2], Preprocessing())
    core = choripan_core.Model(str(older), max_batch=2)
    try:
        pair = core.forward(photos)
        assert core.lone_batch["model"] == "batch1"
    finally:
        core.dispose()
    package = artifact.load(older)[0]
    assert aoti.PAIR not in package.models
    torch.testing.assert_close(package(photos), pair, atol=1e-5, rtol=0)
    torch.testing.assert_close(package.models[aoti.BATCHED](photos), pair, atol=1e-5, rtol=0)
    run = subprocess.run(
        [sys.executable, "-c", _PAIR_PRIMITIVES, str(older)],
        env={**os.environ, "ONEDNN_VERBOSE": "1"}, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    sources = _reorders(run.stdout.split("measured\n", 1)[1].splitlines())
    assert len(sources) >= 49 and not [s for s in sources if re.search(r"\d", s)], sorted(set(sources))


def test_without_a_warm_up_nothing_is_timed(default_package, default_artifact):
    for path in (default_package, default_artifact):
        model = choripan_core.Model(str(path), warmup=False)
        assert model.lone_batch is None
        model.dispose()
    traced = choripan_core.Model(str(default_artifact))
    assert traced.lone_batch is None, "TorchScript has one model"
    traced.dispose()


def test_a_max_batch_past_the_package_is_a_value_error_in_pythons_words(default_package, tmp_path):
    """The same refusal as Node's, naming the option as Python spells it, as a ValueError."""
    import zipfile

    # The package, its metadata saying it runs batches of at most 4 (the checksum leaves the metadata out).
    small = tmp_path / "default.pt2"
    with zipfile.ZipFile(default_package) as source, zipfile.ZipFile(small, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("extra/choripan.json"):
                document = json.loads(data)
                document["runtime"]["models"]["model"]["batch"] = [1, 4]
                data = json.dumps(document).encode()
            target.writestr(info, data)
    with pytest.raises(ValueError) as caught:
        choripan_core.Model(str(small), max_batch=8, warmup=False)
    assert type(caught.value) is choripan_core.ChoripanValueError and caught.value.code == "E_INVALID_ARGUMENT"
    assert caught.value.message == f"max_batch is 8 but {small} runs batches of at most 4"


def test_a_lone_request_does_not_wait_for_company(default_artifact, default_package):
    """max_delay_ms holds a batch open only while other requests are queued or announced."""
    for path in (default_artifact, default_package):
        model = choripan_core.Model(str(path), max_batch=8, max_delay_ms=5000)
        x = torch.zeros(3, 224, 224)
        started = time.perf_counter()
        for _ in range(3):
            model.predict_preprocessed(x)
        elapsed = time.perf_counter() - started
        model.dispose()
        assert elapsed < 5, f"{path.name}: three lone requests took {elapsed:.1f} s: they waited for company"


def test_announced_requests_are_waited_for(default_package, default_artifact):
    spec = Predictor(default_artifact).preprocessing
    model = choripan_core.Model(str(default_package), max_batch=4, max_delay_ms=200)
    results = model.predict_many(list(load_batch(reference_photos()[:4], spec)))
    stats = model.stats()
    model.dispose()
    assert len(results) == 4 and stats["batches"] == 1 and stats["mean_batch_size"] == 4, stats


def test_a_training_checkpoint_is_named_as_such(tmp_path):
    checkpoint = tmp_path / "best.pth"
    torch.save(nn.Linear(2, 2).state_dict(), checkpoint)
    with pytest.raises(choripan_core.Error) as caught:
        choripan_core.Model(str(checkpoint))
    assert caught.value.code == "E_MODEL_LOAD"
    assert "checkpoint" in caught.value.message and "python -m choripan" in caught.value.message


def test_compiling_shows_its_steps_on_a_terminal(monkeypatch, tmp_path):
    """Each compilation takes up to half a minute: a terminal is told which one runs, and for how long."""

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no compiler here")

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(torch._inductor, "aot_compile", no_compiler)
    tiny = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    metadata = artifact.Metadata(
        name="tiny", labels=["a", "b"], preprocessing=Preprocessing(), source=artifact.Source(kind="custom", arch="t")
    )
    with pytest.raises(ExportError, match="AOTInductor could not compile the model: no compiler here"):
        export_classifier(tiny, metadata, tmp_path / "tiny.pt2")
    assert shown_steps(terminal.getvalue()) == [
        "exporting 1/9: checking the model on photos",
        "exporting 2/9: capturing the batch-1 model",
        "exporting 3/9: capturing the batch-2 model",
        "exporting 4/9: capturing the any-batch model",
        "exporting 5/9: compiling the batch-1 model",
    ]
    assert list(tmp_path.iterdir()) == []


def test_inspect_names_the_runtime(default_package):
    run = subprocess.run(
        [sys.executable, "-m", "choripan", "inspect", str(default_package)], capture_output=True, text=True, cwd=ROOT
    )
    assert run.returncode == 0 and "runtime       aoti compiled for" in run.stdout
