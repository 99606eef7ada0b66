"""int8 packages: calibrated on photos, checked against float32 on others, refused past a bound, served."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys

import choripan_core
import pytest
import torch

from choripan import artifact, quantize
from choripan.errors import ExportError
from choripan.imaging import load_batch
from choripan.photos import data_dir, reference_photos
from choripan.sources import default
from choripan.tracing import Probabilities, golden_path

from .conftest import ROOT

# A labelled folder of scikit-image's photos whose ImageNet class is not in doubt.
# Not chelsea.png: float32 names it a tiger cat by 0.379 against an Egyptian cat's 0.376.
LABELLED = {"espresso": "coffee.png", "missile": "rocket.jpg", "tripod": "camera.png"}


def _choripan(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    """`python -m choripan ARGS`, with `prelude` run first in the same interpreter."""
    code = f"{prelude}\nimport sys\nfrom choripan.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="session")
def labelled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labelled")
    for label, photo in LABELLED.items():
        (folder / label).mkdir()
        (folder / label / photo).symlink_to(data_dir() / photo)
    return folder


# Where float32's first class leads its second by this much or more, int8 must name the same. Most of
# scikit-image's data are not photos of ImageNet's classes (microscopy, text, textures, a chessboard), where
# float32 itself hesitates between classes under 0.2 each and int8's rounding may pick another; and the cat is
# a tiger cat by 0.003 over an Egyptian cat.
CLEAR = 0.1


def _clear(probabilities: torch.Tensor) -> torch.Tensor:
    """Which rows name their first class by CLEAR or more over their second."""
    first, second = probabilities.topk(2, dim=1).values.unbind(1)
    return first - second >= CLEAR


@pytest.fixture(scope="session")
def int8_package(tmp_path_factory, labelled):
    """The default model exported to int8 by the command line, calibrated on scikit-image's photos, with
    bounds those photos allow: no agreement bound (see CLEAR), a probability difference of at most 0.5."""
    out = tmp_path_factory.mktemp("int8") / "default-int8.pt2"
    run = _choripan(
        "default", "--out", str(out), "--quantize", "int8", "--calibration", str(data_dir()),
        "--min-agreement", "0", "--max-prob-diff", "0.5", "--accuracy-data", str(labelled), "--max-accuracy-drop", "0",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stderr == "", "an export that succeeds says nothing on stderr but progress, here off"
    return out


@pytest.fixture(scope="module")
def fp32():
    model, metadata = default.build()
    return Probabilities(model).eval(), metadata.preprocessing


def test_the_photos_are_split_in_two_disjoint_sets_the_same_way_each_time():
    config = quantize.Quantization(data_dir(), calibration_images=20, check_fraction=0.25)
    calibration, check = quantize.split(config)
    assert (len(calibration), len(check)) == (15, 5)
    assert not set(calibration) & set(check)
    assert (calibration, check) == quantize.split(config)
    assert quantize.split(quantize.Quantization(data_dir(), seed=1)) != quantize.split(
        quantize.Quantization(data_dir())
    )


def test_bias_correction_gives_each_convolution_float32s_mean_output_and_int8_agrees_more(fp32):
    """Rounding the weights to int8 moves each convolution's mean output; the correction moves it back, on the
    photos it measures, and int8 then names float32's class on more of scikit-image's photos."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    model, preprocessing = fp32
    calibration, _ = quantize.split(quantize.Quantization(data_dir()))
    prepared = quantize.prepare(model, load_batch(calibration[:2], preprocessing), calibration, preprocessing)
    batch = quantize.bias_correction_batch(calibration, preprocessing)
    expected = quantize.convolution_means(prepared, batch)
    plain = convert_pt2e(copy.deepcopy(prepared))
    corrected = convert_pt2e(prepared)
    assert quantize.correct_biases(corrected, batch, expected) == 49

    def worst(graph):  # the largest distance of a convolution's mean output from float32's, relative to it
        means = quantize.convolution_means(graph, batch)
        return max(
            ((m - e).abs().max() / e.abs().max().clamp(min=1e-3)).item() for m, e in zip(means, expected, strict=True)
        )

    # Not exactly 0: the corrected graph rounds its outputs to uint8 again, a little differently.
    assert worst(corrected) < 0.05 < 0.5 < worst(plain)
    photos = load_batch(quantize.photos_in(data_dir()), preprocessing)
    with torch.no_grad():
        truth = model(photos).argmax(1)
        agreement = {name: (graph(photos).argmax(1) == truth).float().mean().item() for name, graph in
                     (("plain", plain), ("corrected", corrected))}  # fmt: skip
    assert agreement["corrected"] > agreement["plain"] + 0.05, agreement


@pytest.mark.parametrize(
    ("cap", "flags", "bits"),
    [
        (None, {"avx2", "avx512f", "avx512_vnni"}, 8),
        ("AVX512_CORE_VNNI", {"avx512_vnni"}, 8),  # choripan's own cap, on a CPU with VNNI
        ("AVX512_CORE_AMX", {"avx512_vnni", "amx_tile"}, 8),
        ("AVX512_CORE_VNNI", {"avx2", "fma"}, 7),  # choripan's own cap, on an AVX2-only CPU
        ("AVX512_CORE", {"avx512_vnni"}, 7),
        ("AVX2", {"avx512_vnni", "avx_vnni"}, 7),
        ("AVX2_VNNI", {"avx_vnni"}, 8),
        ("AVX512_CORE_VNNI", {"avx_vnni"}, 7),
        ("A_NAME_ONEDNN_MAY_ADD", {"avx512_vnni"}, 7),
    ],
)
def test_activations_get_7_bits_where_onednn_multiplies_without_vnni(monkeypatch, cap, flags, bits):
    from choripan import aoti

    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    monkeypatch.setattr(aoti, "_cpu_flags", lambda: flags)
    assert quantize.activation_bits() == bits


def test_the_quantizer_observes_7_bit_activations_where_onednn_has_no_vnni(monkeypatch, fp32):
    """Held to AVX2 kernels, int8 products are summed in 16 bits that 8-bit activations saturate."""
    from torchao.quantization.pt2e.observer import ObserverBase

    model, preprocessing = fp32
    photos = quantize.photos_in(data_dir())[:4]
    example = load_batch(photos[:2], preprocessing)
    with torch.no_grad():
        model(example)  # oneDNN reads its cap at its first use: not the one this test sets, alone or not
    ranges = {}
    for cap in ("AVX2", "AVX512_CORE_VNNI"):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        prepared = quantize.prepare(model, example, photos, preprocessing)
        observers = [m for m in prepared.modules() if isinstance(m, ObserverBase)]
        ranges[cap] = {(m.quant_min, m.quant_max) for m in observers if m.qscheme == torch.per_tensor_affine}
        assert {(m.quant_min, m.quant_max) for m in observers if m.qscheme != torch.per_tensor_affine} == {(-128, 127)}
    assert ranges["AVX2"] == {(0, 127)}
    assert ranges["AVX512_CORE_VNNI"] == ({(0, 255)} if quantize.activation_bits() == 8 else {(0, 127)})


def test_the_metadata_records_what_int8_cost_and_inspect_shows_it(int8_package, fp32):
    photos = len(quantize.photos_in(data_dir()))
    shown = json.loads(_choripan("inspect", "--json", str(int8_package)).stdout)
    assert shown["checksum_ok"]
    q = shown["metadata"]["quantization"]
    assert q["scheme"] == "int8-static-x86"
    assert q["calibration_images"] + q["checked_images"] == photos and q["checked_images"] == round(photos / 4)
    assert q["bias_correction_images"] == min(q["calibration_images"], quantize.BIAS_CORRECTION_IMAGES)
    assert q["activation_bits"] == quantize.activation_bits()
    # The numbers are the package's, as served, on the held-out photos: measured again here, they agree.
    model, preprocessing = fp32
    held_out = quantize.split(quantize.Quantization(data_dir()))[1]
    again = quantize.measure(model, artifact.load(int8_package)[0], held_out, preprocessing)
    assert q["top1_agreement"] == pytest.approx(again["top1_agreement"], abs=1e-6)  # recorded to 6 places
    assert q["max_prob_diff"] == pytest.approx(again["max_prob_diff"], abs=1e-5)
    assert 0 < q["max_prob_diff"] <= 0.5  # int8 is not float32; and the bound held
    assert q["accuracy"] == q["fp32_accuracy"] == 1.0  # --max-accuracy-drop 0 held
    assert shown["metadata"]["runtime"]["format"] == "aoti"
    text = _choripan("inspect", str(int8_package)).stdout
    assert f"quantization  int8-static-x86: top-1 agreement {q['top1_agreement']:.4f} with float32" in text


def test_the_gate_refuses_past_a_bound_with_the_measured_numbers(int8_package):
    recorded = artifact.read_metadata(int8_package)["quantization"]
    strict = quantize.Quantization(data_dir(), min_agreement=0, max_prob_diff=recorded["max_prob_diff"] / 2)
    with pytest.raises(ExportError) as caught:
        quantize.check_gate(recorded, strict)
    assert caught.value.code == "E_QUANTIZATION_GATE"
    assert f"largest probability difference {recorded['max_prob_diff']:.4g} > --max-prob-diff" in str(caught.value)
    quantize.check_gate(
        recorded, quantize.Quantization(data_dir(), min_agreement=0, max_prob_diff=recorded["max_prob_diff"])
    )


def test_every_convolution_but_the_first_runs_in_int8(int8_package):
    """Each compiled model calls oneDNN's int8 convolution for every convolution of the model but the first, which
    sees the photo and stays float32 (a quantizer that found no convolutions would leave them all float32)."""
    model, _ = default.build()
    convolutions = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    checked = artifact.CheckedArchive(int8_package)
    wrappers = [name for name in checked.records if name.endswith(".wrapper.cpp")]
    assert len(wrappers) == 3  # batch 1, batch 2, any batch
    for name in wrappers:
        code = checked.read(name).decode()
        calls = re.findall(r"aoti_torch_cpu_(\w+?)\(", code)
        assert sum("qconv" in call for call in calls) == convolutions - 1 == 48, name
        assert [call for call in calls if "convolution" in call] == ["mkldnn__convolution_pointwise"], name


def test_the_first_convolution_is_the_one_that_sees_the_photo(fp32):
    model, preprocessing = fp32
    photos = quantize.photos_in(data_dir())[:2]
    prepared = quantize.prepare(model, load_batch(photos, preprocessing), photos, preprocessing)
    assert quantize.first_convolution(prepared) == "classifier._conv_stem"
    first, second = quantize._convolutions(prepared)[:2]
    assert first.args[0].op == "placeholder"  # the photo itself, not observed: it stays float32
    assert second.args[0].op == "call_module"  # an observer of the activations int8 takes


def test_the_core_serves_the_int8_package_with_float32s_answers(int8_package, fp32):
    model, preprocessing = fp32
    batch = load_batch(reference_photos(), preprocessing)
    with torch.no_grad():
        expected = model(batch)
    core = choripan_core.Model(str(int8_package), max_batch=8)
    try:
        served = core.forward(batch)
    finally:
        core.dispose()
    clear = _clear(expected)
    assert clear.sum() >= 5  # the espresso, the missile, the moped, the tripod, the dog
    assert torch.equal(served.argmax(1)[clear], expected.argmax(1)[clear])
    assert (served - expected).abs().max() < 0.5


def test_node_classifies_real_photos_with_the_int8_package_as_float32_does(int8_package, fp32):
    model, preprocessing = fp32
    with torch.no_grad():
        probabilities = model(load_batch(reference_photos(), preprocessing))
    clear = _clear(probabilities).tolist()
    photos = [photo for photo, c in zip(reference_photos(), clear, strict=True) if c]
    expected = [p.argmax().item() for p, c in zip(probabilities, clear, strict=True) if c]
    assert len(photos) >= 5
    labels = artifact.read_metadata(int8_package)["labels"]
    script = """
    const fs = require('node:fs');
    const [artifact, ...photos] = process.argv.slice(1);
    require('.').load(artifact).then(async (model) => {
      const answers = await Promise.all(photos.map((photo) => model.predict(fs.readFileSync(photo))));
      console.log(JSON.stringify({ labels: answers.map((a) => a.label), quantization: model.metadata.quantization }));
      await model.dispose();
    });
    """
    run = subprocess.run(
        ["node", "-e", script, str(int8_package), *map(str, photos)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "ONEDNN_VERBOSE": "1"},
    )
    assert run.returncode == 0, run.stderr
    *verbose, last = run.stdout.splitlines()
    answer = json.loads(last)
    assert answer["labels"] == [labels[i] for i in expected]
    # Served with the instructions it was exported with (js/binding.js and the export cap oneDNN alike): on a
    # CPU with AMX, oneDNN's AMX kernels would repack the int8 weights on every call.
    executed = [line for line in verbose if line.startswith("onednn_verbose") and ",exec," in line]
    assert sum(",convolution," in line for line in executed) >= 49 * len(photos) / 8
    assert not [line for line in executed if "amx" in line]
    assert answer["quantization"] == artifact.read_metadata(int8_package)["quantization"]
    assert json.loads(golden_path(int8_package).read_text())["photos"][1]["label"] == "espresso"


_LOAD_EVERYWHERE = """
import json, sys
import choripan_core
from choripan import artifact
from choripan.errors import ExportError
for path in sys.argv[1:]:
    outcome = {}
    try:
        choripan_core.Model(path, warmup=False).dispose()
        outcome["core"] = "loaded"
    except choripan_core.Error as error:
        outcome["core"] = [error.code, error.message]
    try:
        artifact.load(path)
        outcome["python"] = "loaded"
    except ExportError as error:
        outcome["python"] = [error.code, str(error)]
    print(json.dumps(outcome))
"""


def test_8_bit_activations_are_refused_where_onednn_would_saturate_them(int8_package, tmp_path):
    """Below VNNI, oneDNN sums pairs of int8 products in 16 bits that 8-bit activations saturate: there the core
    (Node's and Python's binding) and Python's own loader refuse such a package before anything runs, and load
    one whose activations have 7 bits. An int8 package exported before the field was recorded had 8."""
    import zipfile

    packages = {}
    for bits in (8, 7, None):
        packages[bits] = tmp_path / f"int8-{bits}.pt2"
        with zipfile.ZipFile(int8_package) as source, zipfile.ZipFile(packages[bits], "w") as target:
            for info in source.infolist():
                data = source.read(info)
                if info.filename.endswith("extra/choripan.json"):  # outside the checksum
                    document = json.loads(data)
                    document["quantization"].pop("activation_bits")
                    if bits is not None:
                        document["quantization"]["activation_bits"] = bits
                    data = json.dumps(document).encode()
                target.writestr(info, data)
    held = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    run = subprocess.run(
        [sys.executable, "-c", _LOAD_EVERYWHERE, *map(str, packages.values())],
        capture_output=True, text=True, cwd=ROOT, env=held,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    outcomes = dict(zip(packages, map(json.loads, run.stdout.splitlines()), strict=True))
    assert outcomes[7] == {"core": "loaded", "python": "loaded"}
    for bits in (8, None):
        for loader in ("core", "python"):
            code, message = outcomes[bits][loader]
            assert code == "E_MODEL_LOAD", message
            assert message.startswith(f"cannot load model {packages[bits]}: its int8 activations have 8 bits")
            assert "export it again on this machine" in message
    script = "require('.').load(process.argv[1]).then(() => console.log('loaded'), (e) => console.log(e.code))"
    node = subprocess.run(["node", "-e", script, str(packages[8])], capture_output=True, text=True, cwd=ROOT, env=held)
    assert node.stdout.strip() == "E_MODEL_LOAD", node.stderr


@pytest.mark.parametrize(
    ("quantization", "field"), [("int8", "quantization"), ({"activation_bits": "8"}, "quantization.activation_bits")]
)
def test_a_malformed_quantization_is_refused_alike_by_the_core_and_python(
    default_package, tmp_path, quantization, field
):
    import zipfile

    damaged = tmp_path / "damaged.pt2"
    with zipfile.ZipFile(default_package) as source, zipfile.ZipFile(damaged, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("extra/choripan.json"):  # outside the checksum
                data = json.dumps({**json.loads(data), "quantization": quantization}).encode()
            target.writestr(info, data)
    expected = f"cannot load model {damaged}: metadata has a malformed {field}"
    with pytest.raises(choripan_core.Error) as core:
        choripan_core.Model(str(damaged), warmup=False)
    assert core.value.code == "E_MODEL_LOAD" and core.value.message == expected
    with pytest.raises(ExportError) as python:
        artifact.load(damaged)
    assert python.value.code == "E_MODEL_LOAD" and str(python.value) == expected


@pytest.mark.slow
def test_a_bound_int8_cannot_meet_refuses_it_and_nothing_is_written(tmp_path):
    """int8 never gives float32's probabilities exactly: a bound of 0 refuses it, with the numbers."""
    out = tmp_path / "out" / "refused.pt2"
    run = _choripan(
        "default", "--out", str(out), "--quantize", "int8", "--calibration", str(data_dir()), "--max-prob-diff", "0"
    )
    assert run.returncode == 2
    assert len(run.stderr.splitlines()) == 1
    refusal = re.fullmatch(
        r"error: the int8 model is refused, nothing was written: (?:top-1 agreement \S+ < --min-agreement 0.99; )?"
        r"largest probability difference (\S+) > --max-prob-diff 0.0 \(on 6 held-out photos\) "
        r"\(E_QUANTIZATION_GATE\)\n",
        run.stderr,
    )
    assert refusal, run.stderr
    assert float(refusal[1]) > 0
    assert list((tmp_path / "out").iterdir()) == []  # no artifact, no golden file, no partial folder


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--min-agreement", "0.9"], "error: --min-agreement: only for an int8 export (--quantize int8)"),
        (["--quantize", "int8"], "error: --quantize int8 needs --calibration DIR"),
        (["--quantize", "int8", "--calibration", "{photos}", "--min-agreement", "1.01"], "must be in [0, 1], not 1.01"),
        (["--quantize", "int8", "--calibration", "{photos}", "--max-accuracy-drop", "0"], "give the folder too"),
        (["--quantize", "int8", "--calibration", "{empty}"], "holds 0 photos (.jpeg, .jpg, .png, .webp); int8 needs"),
        (["--quantize", "int8", "--calibration", "{photos}", "--format", "torchscript"], "compiles an AOTInductor"),
    ],
)
def test_int8_flags_that_cannot_work_are_refused_before_anything_loads(tmp_path, flags, message):
    flags = [flag.format(photos=data_dir(), empty=tmp_path) for flag in flags]
    out = tmp_path / ("m.pt" if "torchscript" in flags else "m.pt2")
    run = _choripan("default", "--out", str(out), *flags)
    assert run.returncode == 2 and message in run.stderr and "(E_INVALID_ARGUMENT)" in run.stderr, run.stderr
    assert len(run.stderr.splitlines()) == 1 and not out.exists()


def test_int8_without_torchao_says_how_to_install_it(tmp_path):
    run = _choripan(
        "default", "--out", str(tmp_path / "m.pt2"), "--quantize", "int8", "--calibration", str(data_dir()),
        prelude="import sys; sys.modules['torchao'] = None  # as where torchao is not installed",
    )  # fmt: skip
    assert run.returncode == 2
    assert "--quantize int8 needs the torchao package" in run.stderr
    assert run.stderr.rstrip().endswith("pip install 'choripan[int8]' (E_INVALID_ARGUMENT)")


def test_train_calibrates_on_its_training_folder_unless_told(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "chelsea.png").symlink_to(data_dir() / "chelsea.png")
    run = _choripan("train", "--data", str(tmp_path), "--out", str(tmp_path / "m.pt2"), "--quantize", "int8")
    assert run.returncode == 2, run.stderr
    assert f"the calibration photos' folder {tmp_path} holds 1 photo (.jpeg, .jpg, .png, .webp)" in run.stderr
