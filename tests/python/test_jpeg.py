"""native/core/jpeg.h: the JPEGs that the core decodes itself (js/decode.js routes the common ones there),
pixel for pixel as PIL decodes them for the Python reference, and refused where PIL refuses them."""

from __future__ import annotations

import io
import random

import choripan_core
import numpy as np
import pytest
import torch
from PIL import Image


def encode(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def frame(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def core(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    width, height = size or frame(data)
    return choripan_core.decode_jpeg(data, width, height).numpy()


def pil(data: bytes) -> np.ndarray:
    pixels = np.asarray(Image.open(io.BytesIO(data)))
    return pixels[..., None] if pixels.ndim == 2 else pixels


@pytest.fixture(scope="module")
def samples(photos) -> dict[str, bytes]:
    """scikit-image's own JPEGs, and the cat written the ways cameras and encoders write JPEGs."""
    shipped = {path.name: path.read_bytes() for path in sorted(photos.glob("*.jpg"))}
    assert len(shipped) >= 3
    cat = Image.open(photos / "chelsea.png").convert("RGB")
    made = {
        "baseline 4:2:0": encode(cat, quality=90),
        "progressive": encode(cat, quality=90, progressive=True),
        "4:4:4": encode(cat, quality=95, subsampling=0),
        "4:2:2": encode(cat, quality=85, subsampling=1),
        "grey": encode(cat.convert("L"), quality=90),
        "odd size": encode(cat.crop((3, 5, 304, 204)), quality=75),
        "restart markers": encode(cat, quality=90, restart_marker_blocks=7),
        "optimised Huffman tables": encode(cat, quality=80, optimize=True),
    }
    return shipped | made


def test_every_sample_decodes_to_the_pixels_pil_decodes(samples):
    for name, data in samples.items():
        pixels = core(data)
        assert pixels.dtype == np.uint8 and pixels.shape[2] in (1, 3), name
        assert np.array_equal(pixels, pil(data)), name


def test_a_jpeg_cut_short_is_e_decode_as_pil_refuses_it(samples):
    for name in ("baseline 4:2:0", "progressive"):
        data = samples[name]
        for cut in (len(data) // 3, len(data) * 2 // 3, len(data) - 64):
            with pytest.raises(choripan_core.Error) as error:
                core(data[:cut], frame(data))
            assert error.value.code == "E_DECODE" and "premature end of JPEG data" in str(error.value)
            with pytest.raises(OSError, match="truncated"):
                pil(data[:cut])


def test_where_the_data_ends_the_core_agrees_with_pil(samples):
    """Cut anywhere in its last bytes (end marker included), a JPEG decodes in both or in neither; bytes
    after the end marker (some cameras pad their files) are ignored by both."""
    padded = samples["baseline 4:2:0"] + bytes(12)
    outcomes = set()
    shipped = [data for name, data in samples.items() if name.endswith(".jpg")]
    for data in (padded, samples["progressive"], samples["grey"], *shipped):
        for cut in range(1, 24):
            try:
                expected = pil(data[:-cut])
            except OSError:
                with pytest.raises(choripan_core.Error, match="premature end of JPEG data"):
                    core(data[:-cut], frame(data))
                outcomes.add("refused")
            else:
                assert np.array_equal(core(data[:-cut], frame(data)), expected), cut
                outcomes.add("decoded")
    assert outcomes == {"refused", "decoded"}


def test_another_frame_size_or_cmyk_is_refused_before_decoding(samples, photos):
    data = samples["baseline 4:2:0"]
    width, height = frame(data)
    with pytest.raises(choripan_core.Error) as error:
        core(data, (width + 1, height))
    assert error.value.code == "E_INVALID_ARGUMENT" and "452x300" in str(error.value)
    cmyk = encode(Image.open(photos / "chelsea.png").convert("CMYK"), quality=90)
    with pytest.raises(choripan_core.Error) as error:
        core(cmyk)
    assert error.value.code == "E_INVALID_ARGUMENT" and "CMYK" in str(error.value)
    for size in ((0, height), (width, -1)):
        with pytest.raises(choripan_core.Error, match="JPEG bytes and the size of its frame"):
            core(data, size)
    with pytest.raises(choripan_core.Error, match="at most 100 megapixels") as error:
        core(data, (20_000, 5_001))  # refused from the size alone, before libjpeg reads a byte
    assert error.value.code == "E_TOO_LARGE"


def test_damaged_jpegs_decode_or_fail_with_a_code_and_never_crash(samples):
    """Bytes overwritten in the headers and in the entropy-coded data, and cuts: each one decodes to an
    image of its frame's size (libjpeg, like PIL, decodes corrupt data it can read past) or raises a coded
    error. A crash would take pytest down with it."""
    rng = random.Random(20261127)
    outcomes = {"decoded": 0, "E_DECODE": 0, "E_INVALID_ARGUMENT": 0}
    for name in ("baseline 4:2:0", "progressive", "grey", "restart markers"):
        data = samples[name]
        width, height = frame(data)
        for _ in range(300):
            damaged = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                at = rng.randrange(2, 700) if rng.random() < 0.5 else rng.randrange(2, len(damaged))
                damaged[at] = rng.randrange(256)
            if rng.random() < 0.2:
                damaged = damaged[: rng.randrange(2, len(damaged))]
            try:
                pixels = core(bytes(damaged), (width, height))
            except choripan_core.Error as error:
                assert error.code in outcomes, str(error)
                outcomes[error.code] += 1
            else:
                assert pixels.shape[:2] == (height, width)
                outcomes["decoded"] += 1
    assert all(count > 0 for count in outcomes.values()), outcomes


@pytest.fixture(scope="module")
def model(default_artifact):
    model = choripan_core.Model(str(default_artifact), workers=1)
    yield model
    model.dispose()


def test_predict_jpeg_answers_as_the_pixels_pil_decodes(model, samples, photos):
    """Through the queue: on the worker for a photo, on the preprocessing thread for one over 4 megapixels
    (kOffWorkerPixels); the same probabilities, to the bit, as the same pixels submitted decoded."""
    big = Image.open(photos / "chelsea.png").convert("RGB").resize((2600, 1730), Image.Resampling.BILINEAR)
    cases = {"baseline 4:2:0": samples["baseline 4:2:0"], "grey": samples["grey"], "over 4 MP": encode(big, quality=85)}
    for name, data in cases.items():
        width, height = frame(data)
        expected = model.predict(torch.from_numpy(pil(data).copy()))
        assert torch.equal(model.predict_jpeg(data, width, height), expected), name


def test_predict_jpeg_answers_a_cut_jpeg_with_e_decode_and_goes_on(model, samples):
    data = samples["progressive"]
    width, height = frame(data)
    before = model.stats()
    with pytest.raises(choripan_core.Error) as error:
        model.predict_jpeg(data[: len(data) // 2], width, height)
    assert error.value.code == "E_DECODE"
    with pytest.raises(choripan_core.Error) as error:
        model.predict_jpeg(b"", width, height)
    assert error.value.code == "E_INVALID_ARGUMENT"
    assert model.predict_jpeg(data, width, height).shape == (1000,)
    after = model.stats()
    assert after["failed"] == before["failed"] + 1 and after["completed"] == before["completed"] + 1
    assert after["pending_bytes"] == 0
