"""The decode policy and preprocessing that native/core mirrors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from choripan.errors import ExportError
from choripan.imaging import DecodePolicy, Preprocessing, decode, preprocess

from .bombs import bombs
from .policy_images import most_common, policy_images

SPEC = Preprocessing(resize=256, crop=224)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cat(photos) -> Image.Image:
    return Image.open(photos / "chelsea.png").convert("RGB")


def test_rgb_png_decodes_to_its_pixels(photos, cat):
    pixels = decode(photos / "chelsea.png")
    assert pixels.shape == (300, 451, 3) and pixels.dtype == np.uint8
    assert np.array_equal(pixels, np.asarray(cat))


def test_greyscale_is_replicated_into_three_channels(photos):
    pixels = decode(photos / "camera.png")
    assert pixels.shape == (512, 512, 3)
    assert np.array_equal(pixels[..., 0], pixels[..., 2])


def test_rgba_keeps_alpha_until_preprocessing(photos):
    assert decode(photos / "horse.png").shape[2] == 4


def test_palette_with_transparency_becomes_rgba(cat):
    palette = cat.quantize(32)
    assert decode(encode(palette, "PNG")).shape[2] == 3
    assert decode(encode(palette, "PNG", transparency=0)).shape[2] == 4


def test_16_bit_greyscale_keeps_the_high_byte(cat):
    grey = np.asarray(cat.convert("L")).astype(np.uint16) * 257 + 3
    pixels = decode(encode(Image.fromarray(grey), "PNG"))
    assert np.array_equal(pixels[..., 0], (grey >> 8).astype(np.uint8))


def test_exif_orientation_is_applied(cat):
    stored = cat.transpose(Image.Transpose.ROTATE_270)  # rotated 90° clockwise
    exif = Image.Exif()
    exif[0x0112] = 8  # display rotated 90° counter-clockwise
    pixels = decode(encode(stored, "PNG", exif=exif.tobytes()))
    assert pixels.shape == (300, 451, 3)
    assert np.array_equal(pixels, np.asarray(cat))


@pytest.mark.parametrize(
    ("make", "message", "code"),
    [
        (lambda cat: b"", "empty", "E_INVALID_ARGUMENT"),  # nothing was sent, as Node and HTTP say
        (lambda cat: b"not an image at all", "does not decode", "E_DECODE"),
        (lambda cat: encode(cat, "JPEG")[:2000], "does not decode", "E_DECODE"),
        (lambda cat: encode(cat, "BMP"), "BMP", "E_UNSUPPORTED_FORMAT"),
        (lambda cat: encode(cat.convert("CMYK"), "TIFF"), "CMYK TIFF", "E_UNSUPPORTED_FORMAT"),
        (lambda cat: policy_images()["float.tiff"], "float", "E_UNSUPPORTED_FORMAT"),
        (lambda cat: encode(cat.convert("F"), "TIFF"), "float", "E_UNSUPPORTED_FORMAT"),  # grey: PIL opens it
        (lambda cat: encode(cat.convert("I"), "TIFF"), "32-bit", "E_UNSUPPORTED_FORMAT"),
        (lambda cat: policy_images()["key-rgb16.png"], "colour key", "E_UNSUPPORTED_FORMAT"),
    ],
    ids=[
        "empty",
        "garbage",
        "truncated-jpeg",
        "bmp",
        "cmyk-tiff",
        "float-tiff",
        "float-grey-tiff",
        "int32-tiff",
        "rgb16-colour-key",
    ],
)
def test_bad_images_are_refused(cat, make, message, code):
    with pytest.raises(ExportError, match=message) as refused:
        decode(make(cat))
    assert refused.value.code == code
    assert " object at 0x" not in str(refused.value)  # PIL names its stream (<_io.BytesIO object at 0x…>)


def test_bytes_in_no_known_format_are_said_to_be_so():
    with pytest.raises(ExportError) as refused:
        decode(b"not an image at all")
    known = "a known format (JPEG, PNG, WEBP, GIF, TIFF, AVIF)"
    assert str(refused.value) == f"image does not decode: it is not an image of {known}"


@pytest.mark.parametrize(
    ("name", "photo"), [("key-rgb.png", "astronaut.png"), ("key-grey.png", "camera.png")], ids=["rgb", "grey"]
)
def test_a_colour_key_is_transparency(photos, name, photo):
    """Transparent exactly where the photo holds the key (its most common colour); opaque and unchanged
    elsewhere."""
    stored = np.asarray(Image.open(photos / photo).convert("RGB" if name == "key-rgb.png" else "L"))
    keyed = (stored == most_common(stored)).all(axis=-1) if stored.ndim == 3 else stored == most_common(stored)[0]
    pixels = decode(policy_images()[name])
    assert pixels.shape == (*stored.shape[:2], 4)
    assert np.array_equal(pixels[..., 3] == 0, keyed) and keyed.sum() > 1000
    assert np.array_equal(pixels[..., 0], stored[..., 0] if stored.ndim == 3 else stored)


def test_a_colour_key_matches_every_bit_of_16_bit_grey_and_4_bit_grey_before_scaling():
    sixteen = Image.open(io.BytesIO(policy_images()["key-grey16.png"]))
    samples, key = np.asarray(sixteen), sixteen.info["transparency"]
    pixels = decode(policy_images()["key-grey16.png"])
    assert np.array_equal(pixels[..., 3] == 0, samples == key)
    assert ((samples >> 8 == key >> 8) & (samples != key)).any()  # the high byte alone would match these too
    four = decode(policy_images()["key-grey4.png"])
    levels = np.asarray(Image.open(io.BytesIO(policy_images()["key-grey4.png"])))  # scaled by PIL: 0, 17, …, 255
    key = most_common(levels)[0]
    assert np.array_equal(four[..., 3] == 0, levels == key) and (levels == key).any() and key > 15


def test_a_gif_screen_that_its_first_frame_leaves_uncovered_is_transparent(cat):
    """Not the background colour the GIF names (a light one here), not PIL's palette entry 0."""
    gif = Image.open(io.BytesIO(policy_images()["small-frame.gif"]))
    assert gif.size == (640, 420) and gif.info["background"] != 0
    pixels = decode(policy_images()["small-frame.gif"])
    frame = np.s_[70:370, 120:571]
    assert pixels.shape == (420, 640, 4)
    assert np.array_equal(pixels[frame][..., :3], np.asarray(cat.convert("P", palette=Image.ADAPTIVE).convert("RGB")))
    assert (pixels[frame][..., 3] == 255).all() and (pixels[..., 3] == 0).sum() == 640 * 420 - 451 * 300


def test_a_gif_first_frame_larger_than_its_screen_enlarges_it():
    pixels = decode(policy_images()["large-frame.gif"])  # 451x300 at (30, 20) on a 200x100 screen
    assert pixels.shape == (320, 481, 4)
    assert (pixels[:20, :, 3] == 0).all() and (pixels[:, :30, 3] == 0).all() and (pixels[20:, 30:, 3] == 255).all()


def test_gif_tiff_avif_and_cmyk_jpeg_decode_under_the_policy(cat):
    """The first frame, the first page; CMYK JPEG samples converted with PIL's own formula."""
    for data in (encode(cat, "GIF"), encode(cat, "TIFF"), encode(cat, "AVIF")):
        assert decode(data).shape == (300, 451, 3)
    cmyk = cat.convert("CMYK")
    assert np.array_equal(
        decode(encode(cmyk, "JPEG", quality=100)),
        np.asarray(Image.open(io.BytesIO(encode(cmyk, "JPEG", quality=100))).convert("RGB")),
    )


@pytest.mark.parametrize("name", sorted(bombs()))
def test_bombs_of_every_format_are_refused_before_decoding(name):
    with pytest.raises(ExportError, match="at most 100 megapixels") as refused:
        decode(bombs()[name])
    assert refused.value.code == "E_TOO_LARGE"


def test_an_older_policy_refuses_what_it_did_not_list(cat):
    old = DecodePolicy(formats=("JPEG", "PNG", "WEBP"), cmyk="reject")
    for data, message in ((encode(cat, "GIF"), "GIF"), (encode(cat.convert("CMYK"), "JPEG"), "CMYK")):
        with pytest.raises(ExportError, match=message) as caught:
            decode(data, old)
        assert caught.value.code == "E_UNSUPPORTED_FORMAT"


def test_preprocess_shape_and_normalisation(photos):
    x = preprocess(decode(photos / "coffee.png"), SPEC)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert x.min() > -2.5 and x.max() < 2.7


@pytest.mark.parametrize("name", ["motorcycle_left.png", "rocket.jpg", "chelsea.png"])
def test_preprocess_equals_torchvision_resize_and_centre_crop(photos, name):
    """Exactly torchvision's Resize(256, antialias=True) + CenterCrop(224) on uint8 tensors."""
    from torchvision.transforms.v2 import functional as TF

    pixels = decode(photos / name)
    chw = torch.from_numpy(pixels).permute(2, 0, 1)
    reference = TF.center_crop(TF.resize(chw, [256], antialias=True), [224])
    ours = preprocess(pixels, Preprocessing(resize=256, crop=224, mean=(0, 0, 0), std=(1 / 255,) * 3))
    assert torch.equal(ours.round(), reference.float())


def test_alpha_is_composited_over_white(cat):
    rgba = np.asarray(cat.convert("RGBA")).copy()
    rgba[:, :200] = 0  # left part: transparent black
    x = preprocess(rgba, Preprocessing(resize=300, crop=300, mean=(0, 0, 0), std=(1 / 255,) * 3))
    assert torch.all(x[:, :, :100].round() == 255)  # source columns 76-175 after the centre crop
    opaque = preprocess(
        np.asarray(cat)[:, 200:].copy(), Preprocessing(resize=250, crop=250, mean=(0, 0, 0), std=(1 / 255,) * 3)
    )
    assert opaque.mean() < 200  # the photo itself is not white


def test_extreme_aspect_ratio_is_refused():
    with pytest.raises(ExportError, match="aspect ratio"):
        preprocess(np.zeros((2, 500, 3), np.uint8), SPEC)


def test_an_artifact_from_before_the_decode_policy_keeps_the_one_it_had_as_in_node():
    """js/decode.js reads such metadata the same way: JPEG, PNG and WebP; CMYK refused."""
    old = Preprocessing(resize=300, crop=260, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2)).to_json()
    del old["decode"]
    assert Preprocessing.from_json(old).decode.formats == ("JPEG", "PNG", "WEBP")
    assert Preprocessing.from_json(old).decode.cmyk == "reject"
    partial = {**old, "decode": {"formats": ["PNG"]}}
    assert (Preprocessing.from_json(partial).decode.formats, Preprocessing.from_json(partial).decode.cmyk) == (
        ("PNG",),
        "reject",
    )


def test_policy_round_trips_through_json():
    spec = Preprocessing(resize=300, crop=260, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    assert Preprocessing.from_json(spec.to_json()) == spec
    assert spec.to_json()["decode"] == {
        **DecodePolicy().to_json(),
        "background": [255, 255, 255],
        "formats": ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "AVIF"],
    }


def test_crop_larger_than_resize_is_refused():
    with pytest.raises(ExportError, match="crop"):
        Preprocessing(resize=200, crop=224)
