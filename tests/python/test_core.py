"""choripan_core: the native core (native/core) driven from Python through pybind11."""

from __future__ import annotations

import faulthandler
import json
import os
import subprocess
import sys
import threading
import time

import choripan_core
import pytest
import torch

from choripan import artifact
from choripan.imaging import decode, load_batch, preprocess
from choripan.photos import reference_photos
from choripan.predictor import Predictor

from .conftest import CAT_LABELS


@pytest.fixture(scope="module")
def core(default_artifact):
    model = choripan_core.Model(str(default_artifact))
    yield model
    model.dispose()


@pytest.fixture(scope="module")
def spec(default_artifact):
    return Predictor(default_artifact).preprocessing


def test_forward_equals_torch_jit_load(core, default_artifact, spec):
    reference = torch.jit.load(str(default_artifact)).eval()
    batch = load_batch(reference_photos()[:4], spec)
    with torch.inference_mode():
        expected = reference(batch)
    torch.testing.assert_close(core.forward(batch), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(core.forward(batch[:1]), expected[:1], atol=1e-5, rtol=0)
    other_size = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(core.forward(other_size), reference(other_size), atol=1e-5, rtol=0)


def test_preprocess_is_bit_identical_to_python(core, spec):
    for photo in reference_photos():
        pixels = decode(photo)
        assert torch.equal(core.preprocess(torch.from_numpy(pixels)), preprocess(pixels, spec)), photo.name


def test_preprocess_handles_one_and_two_channel_pixels(core, spec):
    grey = torch.from_numpy(decode(reference_photos()[0]))[..., :1].contiguous()
    grey_alpha = torch.cat([grey, torch.full_like(grey, 200)], dim=2)
    for pixels in (grey, grey_alpha):
        assert torch.equal(core.preprocess(pixels), preprocess(pixels, spec))


def test_predict_labels_real_photos_like_the_python_predictor(core, default_artifact):
    predictor = Predictor(default_artifact)
    labels = core.labels
    for photo in reference_photos()[:3]:
        probabilities = core.predict(torch.from_numpy(decode(photo)))
        torch.testing.assert_close(probabilities, predictor.probabilities(photo), atol=1e-6, rtol=0)
    cat = core.predict(torch.from_numpy(decode(reference_photos()[0])))
    assert labels[int(cat.argmax())] in CAT_LABELS


def test_concurrent_requests_are_batched(default_artifact, spec):
    model = choripan_core.Model(str(default_artifact), max_batch=4, max_delay_ms=50)
    inputs = list(load_batch(reference_photos()[:4], spec)) * 3
    results = model.predict_many(inputs)
    stats = model.stats()
    model.dispose()
    assert len(results) == 12 and stats["requests"] == 12 and stats["completed"] == 12
    assert stats["mean_batch_size"] > 1.5, stats
    expected = torch.jit.load(str(default_artifact))(torch.stack(inputs[:4]))
    torch.testing.assert_close(torch.stack(results[:4]), expected, atol=1e-5, rtol=0)


def test_threads_calling_predict_at_once(core, spec):
    x = load_batch(reference_photos()[1:2], spec)[0]
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(core.predict_preprocessed(x))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 8 and all(core.labels[int(a.argmax())] == "espresso" for a in answers)


def test_queue_full(default_artifact, spec):
    model = choripan_core.Model(str(default_artifact), max_batch=1, max_queue=2, max_delay_ms=0)
    x = load_batch(reference_photos()[:1], spec)[0]
    with pytest.raises(choripan_core.Error) as caught:
        model.predict_many([x] * 50)
    assert caught.value.code == "E_QUEUE_FULL" and type(caught.value) is choripan_core.Error
    assert caught.value.message.endswith("see max_queue)"), "the option, as Python spells it"
    assert model.stats()["rejected"] >= 1
    model.dispose()


def test_a_deadline_that_passes_in_the_queue_expires_it_there(default_artifact, spec):
    model = choripan_core.Model(str(default_artifact), max_batch=1, max_delay_ms=0, workers=1)
    x = load_batch(reference_photos()[:1], spec)[0]
    ahead = threading.Thread(target=model.predict_many, args=([x] * 6,))
    ahead.start()
    while model.stats()["queued"] < 3:
        time.sleep(0.001)
    with pytest.raises(choripan_core.Error) as caught:
        model.predict_preprocessed(x, timeout_ms=1)
    ahead.join()
    assert caught.value.code == "E_TIMEOUT"
    assert model.stats()["batches"] == 6, "the expired request never reached a forward pass"
    model.dispose()


def test_a_huge_image_does_not_hold_up_small_ones(default_artifact):
    """With one worker, small requests are answered while a 100-megapixel image is being preprocessed."""
    model = choripan_core.Model(str(default_artifact), workers=1)
    huge = torch.zeros(10000, 10000, 4, dtype=torch.uint8)  # transparent: composited, then resized
    small = torch.from_numpy(decode(reference_photos()[0]))
    answered = []
    large = threading.Thread(target=lambda: answered.append(("huge", model.predict(huge))))
    large.start()
    while model.stats()["requests"] < 1:
        time.sleep(0.001)
    for _ in range(3):
        answered.append(("small", model.predict(small)))
    large.join()
    assert [name for name, _ in answered] == ["small", "small", "small", "huge"]
    model.dispose()


def test_the_automatic_schedule_counts_the_cores_this_process_may_use(default_package, default_artifact):
    """Affinity counts, not the machine's cores: a package gets one single-threaded worker per core,
    TorchScript one worker with a thread per core (two of its passes side by side are slower than one
    on both cores)."""
    schedules = {default_package: lambda cores: [cores, 1], default_artifact: lambda cores: [1, cores]}
    for path, schedule in schedules.items():
        script = (
            f"import json, choripan_core; m = choripan_core.Model({str(path)!r}, warmup=False); s = m.stats();"
            "print(json.dumps([s['workers'], s['intra_op_threads']])); m.dispose()"
        )
        for command, cores in ((["taskset", "-c", "0"], 1), ([], len(os.sched_getaffinity(0)))):
            run = subprocess.run([*command, sys.executable, "-c", script], capture_output=True, text=True, check=True)
            assert json.loads(run.stdout) == schedule(cores), (path.name, command)


def test_each_worker_keeps_its_own_thread_count(default_artifact):
    """Two single-threaded workers, the first widening to two threads when alone, add exactly one
    OpenMP thread. A worker that picked up the other's count opened a team of its own: more OpenMP
    threads than cores, where GNU OpenMP sleeps between parallel regions (a lone forward pass went from
    7.5 to 11 ms). That race went wrong in about half of the loads, so six loads each count."""
    script = f"""
import json, os, time, numpy, torch, choripan_core
def threads():
    return len(os.listdir("/proc/self/task"))
image = torch.from_numpy(numpy.zeros((3, 224, 224), numpy.float32))  # no parallel fill on this thread
added = []
for _ in range(7):  # the first load also starts threads that libtorch keeps for the process
    before = threads()
    model = choripan_core.Model({str(default_artifact)!r}, workers=2, intra_op_threads=1)
    for _ in range(3):
        model.predict_preprocessed(image)
    added.append(threads() - before)
    model.dispose()
    deadline = time.monotonic() + 10
    while threads() > before and time.monotonic() < deadline:
        time.sleep(0.05)
print(json.dumps(added[1:]))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    # Per load: 2 workers, the preprocessing thread and worker 0's second OpenMP thread.
    assert json.loads(run.stdout) == [4] * 6


def test_workers_default_to_the_cgroup_cpu_quota(default_package, cpu_quota_cgroup):
    """A container's CPU limit (cgroup v1 cfs quota here, v2 cpu.max elsewhere) caps a package's workers."""
    script = (
        f"import json, choripan_core; m = choripan_core.Model({str(default_package)!r}, warmup=False);"
        "print(json.dumps(m.stats()['workers'])); m.dispose()"
    )
    run = subprocess.run([*cpu_quota_cgroup, sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(run.stdout) == 1


def test_dispose_then_calls_fail_with_e_disposed(default_artifact, spec):
    model = choripan_core.Model(str(default_artifact), warmup=False)
    model.dispose()
    model.dispose()
    x = load_batch(reference_photos()[:1], spec)
    for call in (lambda: model.forward(x), lambda: model.predict_preprocessed(x[0])):
        with pytest.raises(choripan_core.Error) as caught:
            call()
        assert caught.value.code == "E_DISPOSED"


def test_metadata_is_the_artifact_document(core, default_artifact):
    assert core.metadata == artifact.read_metadata(default_artifact)
    assert len(core.labels) == 1000


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d, a: d / "missing.pt", "no such file"),
        (lambda d, a: _write(d / "random.pt", bytes(range(256)) * 64), "not a well-formed"),
        (lambda d, a: _write(d / "truncated.pt", a.read_bytes()[: a.stat().st_size // 2]), "truncated.pt"),
        (lambda d, a: _plain_torchscript(d / "plain.pt"), "no choripan metadata"),
    ],
    ids=["missing", "random-bytes", "truncated", "no-metadata"],
)
def test_bad_model_files_raise_e_model_load(tmp_path, default_artifact, make, reason):
    path = make(tmp_path, default_artifact)
    with pytest.raises(choripan_core.Error) as caught:
        choripan_core.Model(str(path))
    assert caught.value.code == "E_MODEL_LOAD"
    assert str(path) in str(caught.value) and reason in str(caught.value)


def test_bad_inputs_raise_e_invalid_argument(core):
    for call in (
        lambda: core.forward(torch.zeros(3, 224, 224)),
        lambda: core.forward(torch.zeros(1, 3, 4, 4)),  # too small for the artifact's convolutions
        lambda: core.predict(torch.zeros(10, 10, 3)),  # float pixels
        lambda: core.predict_preprocessed(torch.zeros(3, 100, 100)),
        lambda: core.preprocess(torch.zeros(2, 500, 3, dtype=torch.uint8)),  # 250:1
    ):
        with pytest.raises(choripan_core.Error) as caught:
            call()
        assert caught.value.code == "E_INVALID_ARGUMENT"


# A bad call is Python's TypeError (a value of another type, name or form) or ValueError (of the right
# type, out of its range), and a choripan_core.Error with its code all the same.
BAD_TYPE = (choripan_core.ChoripanTypeError, TypeError)
BAD_VALUE = (choripan_core.ChoripanValueError, ValueError)


def _assert_bad_call(error, kind, message):
    own, builtin = kind
    assert type(error) is own, f"{type(error).__name__}: {error}"
    assert isinstance(error, builtin) and isinstance(error, choripan_core.Error)
    assert not isinstance(error, (BAD_VALUE if kind is BAD_TYPE else BAD_TYPE)[1])
    assert error.code == "E_INVALID_ARGUMENT"
    assert error.message.startswith(message), error.message
    assert str(error) == f"E_INVALID_ARGUMENT: {error.message}"


def test_options_are_checked(default_artifact):
    """The core reads and checks the options for both bindings: Node's messages, in Python's words."""
    between = "Expected an integer between 1 and 1024 for max_batch but received"
    for options, kind, message in (
        ({"max_batch": 0}, BAD_VALUE, f"{between} 0 of type int"),
        ({"max_batch": 2.5}, BAD_VALUE, f"{between} 2.5 of type float"),
        ({"max_batch": "2"}, BAD_TYPE, f"{between} '2' of type str"),
        ({"device": "tpu"}, BAD_TYPE, "Expected 'cpu' or 'cuda' for device but received 'tpu' of type str"),
        ({"warmup": 1}, BAD_TYPE, "Expected a boolean for warmup but received 1 of type int"),
        ({"maxBatch": 4}, BAD_TYPE, "Unknown option 'maxBatch' for Model(). Did you mean 'max_batch'? Known options: "),
    ):
        with pytest.raises(choripan_core.Error) as caught:
            choripan_core.Model(str(default_artifact), **options)
        _assert_bad_call(caught.value, kind, message)


def test_the_bindings_own_bad_calls_are_type_and_value_errors(core):
    pixels = torch.zeros(10, 10, 3, dtype=torch.uint8)
    for call, kind, message in (
        (lambda: core.predict(pixels.float()), BAD_TYPE, "expected uint8 CPU pixels"),
        (lambda: core.predict(pixels, timeout_ms=0), BAD_VALUE, "timeout_ms must be positive"),
    ):
        with pytest.raises(choripan_core.Error) as caught:
            call()
        _assert_bad_call(caught.value, kind, message)


def test_what_is_not_a_bad_call_stays_an_error_proper(core):
    """An image's own E_INVALID_ARGUMENT (an aspect ratio past the limit) is no TypeError or ValueError."""
    with pytest.raises(choripan_core.Error) as caught:
        core.preprocess(torch.zeros(2, 500, 3, dtype=torch.uint8))
    assert type(caught.value) is choripan_core.Error and caught.value.code == "E_INVALID_ARGUMENT"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: test_gpu.py covers it")
def test_cuda_without_a_gpu_raises_e_device(default_artifact):
    with pytest.raises(choripan_core.Error) as caught:
        choripan_core.Model(str(default_artifact), device="cuda")
    assert caught.value.code == "E_DEVICE"


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _plain_torchscript(path):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    return path


def test_bicubic_preprocessing_matches_python(tmp_path):
    """An artifact that asks for bicubic resizing gets it in the core too, to the bit."""
    import torchvision

    from choripan.sources import torchvision as source
    from choripan.tracing import export_classifier

    torch.manual_seed(0)
    weights = tmp_path / "squeezenet.pth"
    torch.save(torchvision.models.squeezenet1_1(num_classes=2).state_dict(), weights)
    model, metadata = source.build("squeezenet1_1", weights, ["a", "b"])
    metadata.preprocessing = source.preprocessing_for("efficientnet_b3")  # 320 → 300, bicubic
    assert metadata.preprocessing.interpolation == "bicubic"
    out = export_classifier(model, metadata, tmp_path / "bicubic.pt")
    core = choripan_core.Model(str(out), max_batch=1)
    predictor = Predictor(out)
    for photo in reference_photos()[:3]:
        pixels = decode(photo)
        assert torch.equal(core.preprocess(torch.from_numpy(pixels)), preprocess(pixels, predictor.preprocessing))
        torch.testing.assert_close(
            core.predict(torch.from_numpy(pixels)), predictor.probabilities(photo), atol=1e-5, rtol=0
        )
    core.dispose()


def test_transparent_images_match_python(core, spec):
    """Compositing over the background is integer arithmetic on both sides: equal to the bit."""
    cat = torch.from_numpy(decode(reference_photos()[0]))
    big = torch.nn.functional.interpolate(cat.permute(2, 0, 1)[None].float(), size=(900, 1353)).round()
    big = big[0].permute(1, 2, 0).to(torch.uint8)
    alpha = torch.linspace(0, 255, 1353).round().to(torch.uint8).expand(900, 1353)[..., None]
    for pixels in (torch.cat([big, alpha], 2), torch.cat([big[..., :1], alpha], 2)):  # RGBA, grey + alpha
        assert torch.equal(core.preprocess(pixels.contiguous()), preprocess(pixels.contiguous(), spec))


def test_large_images_preprocessed_off_the_worker_give_the_same_answer(core, spec):
    """Past 4 megapixels pixels go through the preprocessing thread first; the answer is the same."""
    cat = torch.from_numpy(decode(reference_photos()[0])).permute(2, 0, 1)[None].float()
    large = torch.nn.functional.interpolate(cat, size=(2000, 3000)).round()[0].permute(1, 2, 0).to(torch.uint8)
    assert large.shape[0] * large.shape[1] > 2**22
    expected = core.forward(preprocess(large.numpy(), spec)[None])[0]
    torch.testing.assert_close(core.predict(large.contiguous()), expected, atol=1e-6, rtol=0)
    stats = core.stats()
    assert stats["queued"] == stats["inflight"] == stats["pending_bytes"] == 0, stats


def test_inputs_must_live_on_the_cpu(core):
    for call in (
        lambda: core.predict(torch.empty(10, 10, 3, dtype=torch.uint8, device="meta")),
        lambda: core.preprocess(torch.empty(10, 10, 3, dtype=torch.uint8, device="meta")),
        lambda: core.predict_preprocessed(torch.empty(3, 224, 224, device="meta")),
    ):
        with pytest.raises(choripan_core.Error) as caught:
            call()
        assert caught.value.code == "E_INVALID_ARGUMENT"


def test_timeouts_too_long_to_matter_mean_no_deadline(core, spec):
    x = load_batch(reference_photos()[1:2], spec)[0]
    for timeout in (float("inf"), 1e300, 60_000.0):
        assert core.labels[int(core.predict_preprocessed(x, timeout_ms=timeout).argmax())] == "espresso"
    with pytest.raises(choripan_core.Error) as caught:
        core.predict_preprocessed(x, timeout_ms=0)
    assert caught.value.code == "E_INVALID_ARGUMENT"


def test_dropping_a_model_right_after_predicting_does_not_hang(default_artifact):
    """The last reference goes with the GIL held while a worker may still hold the input tensor."""
    faulthandler.dump_traceback_later(120, exit=True)  # a deadlock fails the run instead of stalling it
    try:
        for _ in range(15):
            model = choripan_core.Model(str(default_artifact), warmup=False, max_batch=1, max_delay_ms=0)
            for _ in range(3):
                model.predict_preprocessed(torch.zeros(3, 224, 224))
            del model
    finally:
        faulthandler.cancel_dump_traceback_later()
