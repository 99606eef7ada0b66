"""Images for the decode policy's finer rules, made from scikit-image's photos: GIFs whose first frame is
smaller or larger than the logical screen. `python -m tests.python.policy_images DIR` writes them for
the Node tests (tests/js/formats.test.js); tests/python/test_imaging.py reads them through `policy_images()`.
"""

from __future__ import annotations

import functools
import io
import struct
import sys
from pathlib import Path

from PIL import Image

from export.photos import data_dir

from .bombs import gif_frame_offset


def _photo(name: str, mode: str) -> Image.Image:
    return Image.open(data_dir() / name).convert(mode)


def _encoded(image: Image.Image, image_format: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, image_format, **options)
    return out.getvalue()


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


@functools.cache
def policy_images() -> dict[str, bytes]:
    """File name → bytes."""
    return {
        "small-frame.gif": gif_small_frame(),
        "large-frame.gif": gif_large_frame(),
    }


if __name__ == "__main__":
    for name, data in policy_images().items():
        (Path(sys.argv[1]) / name).write_bytes(data)
