"""Images for the decode policy's finer rules, made from scikit-image's photos: PNG colour keys (tRNS) on RGB
and grey photos at the bit depths PNG allows, GIFs whose first frame is smaller or larger than the logical
screen, a TIFF of float samples, and empty input. `python -m tests.python.policy_images DIR` writes them for
the Node tests (tests/js/formats.test.js); tests/python/test_imaging.py reads them through `policy_images()`.
"""

from __future__ import annotations

import functools
import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from choripan.photos import data_dir

from .bombs import gif_frame_offset


def _photo(name: str, mode: str) -> Image.Image:
    return Image.open(data_dir() / name).convert(mode)


def _encoded(image: Image.Image, image_format: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, image_format, **options)
    return out.getvalue()


def most_common(pixels: np.ndarray) -> tuple[int, ...]:
    """The value a photo holds most often (per pixel, all channels): a colour key that matters."""
    flat = pixels.reshape(pixels.shape[0] * pixels.shape[1], -1)
    values, counts = np.unique(flat, axis=0, return_counts=True)
    return tuple(int(v) for v in values[counts.argmax()])


def png(samples: np.ndarray, bits: int, key: tuple[int, ...]) -> bytes:
    """A grey (2-D) or RGB PNG at a bit depth PIL cannot write (4 or 16), with a colour key: each row
    unfiltered, samples packed big-endian as the PNG specification packs them."""
    height, width = samples.shape[:2]
    if bits == 16:
        rows = samples.astype(">u2").reshape(height, -1).view(np.uint8)
    elif bits == 4:
        rows = (samples[:, 0::2] << 4 | samples[:, 1::2]).astype(np.uint8)  # an even width
    else:
        raise ValueError(f"{bits}-bit samples are written by PIL")
    raw = np.hstack([np.zeros((height, 1), np.uint8), rows]).tobytes()  # filter type 0 before each row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, bits, 0 if samples.ndim == 2 else 2, 0, 0, 0)
    trns = struct.pack(f">{len(key)}H", *key)
    chunks = ((b"IHDR", header), (b"tRNS", trns), (b"IDAT", zlib.compress(raw)), (b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunk(kind, body) for kind, body in chunks)


def key_rgb() -> bytes:
    """The astronaut's black backdrop as an RGB PNG's colour key: a tenth of the photo is transparent."""
    astronaut = _photo("astronaut.png", "RGB")
    return _encoded(astronaut, "PNG", transparency=most_common(np.asarray(astronaut)))


def key_grey() -> bytes:
    camera = _photo("camera.png", "L")
    return _encoded(camera, "PNG", transparency=most_common(np.asarray(camera))[0])


def key_grey16() -> bytes:
    """16 bits a sample, resized so that samples differ in their low byte: the key matches all 16 bits."""
    camera = _photo("camera.png", "L")
    sixteen = Image.fromarray(np.asarray(camera).astype(np.uint16) * 257).resize((400, 400), Image.BILINEAR)
    return _encoded(sixteen, "PNG", transparency=most_common(np.asarray(sixteen))[0])


def key_grey4() -> bytes:
    """4 bits a sample: libpng compares the key with the samples as stored, before they are scaled."""
    levels = np.asarray(_photo("camera.png", "L")) >> 4
    return png(levels, 4, most_common(levels))


def key_rgb16() -> bytes:
    """16-bit RGB with a colour key, which PIL reads at 8 bits, dropping what the key compares."""
    sixteen = np.asarray(_photo("astronaut.png", "RGB")).astype(np.uint16) * 257
    return png(sixteen, 16, most_common(sixteen))


def _gif(image: Image.Image, screen: tuple[int, int], at: tuple[int, int], background: int | None = None) -> bytes:
    """`image` as the only frame of a GIF, at `at` on a logical screen of size `screen`."""
    gif = bytearray(_encoded(image, "GIF"))
    frame = gif_frame_offset(gif)
    gif[6:10] = struct.pack("<HH", *screen)
    gif[frame + 1 : frame + 5] = struct.pack("<HH", *at)
    if background is not None:
        gif[11] = background
    return bytes(gif)


def gif_small_frame() -> bytes:
    """The cat inside a larger screen whose background colour is a light one of its palette (not black, not
    the first entry, which PIL would paint)."""
    cat = _photo("chelsea.png", "RGB").convert("P", palette=Image.ADAPTIVE)
    palette = cat.getpalette()
    light = max(range(1, len(palette) // 3), key=lambda i: sum(palette[3 * i : 3 * i + 3]))
    return _gif(cat, (640, 420), (120, 70), background=light)


def gif_large_frame() -> bytes:
    """The cat, 451x300 at (30, 20), on a 200x100 screen: the first frame enlarges it to 481x320."""
    return _gif(_photo("chelsea.png", "RGB").convert("P", palette=Image.ADAPTIVE), (200, 100), (30, 20))


def gif_frame_beyond_screen(side: int, screen: int) -> bytes:
    """A side x side frame of the cat (stretched) at (0, 0), its header saying the screen is screen x screen."""
    cat = _photo("chelsea.png", "RGB").convert("P", palette=Image.ADAPTIVE).resize((side, side), Image.NEAREST)
    return _gif(cat, (screen, screen), (0, 0))


def float_tiff(dtype: type = np.float32) -> bytes:
    """RGB of float samples in [0, 1]: libvips reads them as linear scRGB, PIL cannot open them."""
    out = io.BytesIO()
    tifffile.imwrite(out, (np.asarray(_photo("chelsea.png", "RGB"), np.float32) / 255).astype(dtype), photometric="rgb")
    return out.getvalue()


@functools.cache
def policy_images() -> dict[str, bytes]:
    """File name → bytes."""
    return {
        "key-rgb.png": key_rgb(),
        "key-grey.png": key_grey(),
        "key-grey16.png": key_grey16(),
        "key-grey4.png": key_grey4(),
        "key-rgb16.png": key_rgb16(),
        "small-frame.gif": gif_small_frame(),
        "large-frame.gif": gif_large_frame(),
        "float.tiff": float_tiff(),
        "half-float.tiff": float_tiff(np.float16),  # 16 bits a sample: only SampleFormat says float
        "empty.png": b"",
    }


if __name__ == "__main__":
    for name, data in policy_images().items():
        (Path(sys.argv[1]) / name).write_bytes(data)
