"""Decompression bombs of every format the decode policy takes: small files whose headers declare far more
pixels than may be decoded. Each is a real encoder's output for a 64x64 image with its size fields (and
checksums, where the format has them) rewritten. `python -m tests.python.bombs DIR` writes them for the
Node tests; tests/python/test_imaging.py reads them through `bombs()`.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

from PIL import Image


def _encoded(image_format: str, **options) -> bytearray:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 30)).save(out, image_format, **options)
    return bytearray(out.getvalue())


def _png() -> bytes:
    png = _encoded("PNG")
    png[16:24] = struct.pack(">II", 30000, 30000)  # IHDR width, height, then its CRC
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def _jpeg() -> bytes:
    jpeg = _encoded("JPEG")
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(jpeg)


def gif_frame_offset(gif: bytearray) -> int:
    """Where the first image descriptor (0x2C) starts, past the palette and any extensions."""
    at = 13 + (3 * 2 ** ((gif[10] & 7) + 1) if gif[10] & 0x80 else 0)
    while gif[at] == 0x21:  # an extension: label, then sub-blocks until an empty one
        at += 2
        while gif[at]:
            at += gif[at] + 1
        at += 1
    assert gif[at] == 0x2C
    return at


def _gif_screen() -> bytes:
    gif = _encoded("GIF")
    gif[6:10] = struct.pack("<HH", 65535, 65535)
    frame = gif_frame_offset(gif)
    gif[frame + 5 : frame + 9] = struct.pack("<HH", 65535, 65535)
    return bytes(gif)


def _gif_frame(width: int = 65535, height: int = 65535) -> bytes:
    """A small logical screen whose first frame is huge: the frame enlarges the screen, as decoders read it."""
    gif = _encoded("GIF")
    frame = gif_frame_offset(gif)
    gif[frame + 5 : frame + 9] = struct.pack("<HH", width, height)
    return bytes(gif)


def _tiff() -> bytes:
    tiff = _encoded("TIFF")
    assert tiff[:2] == b"II"
    (ifd,) = struct.unpack_from("<I", tiff, 4)
    (count,) = struct.unpack_from("<H", tiff, ifd)
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, kind = struct.unpack_from("<HH", tiff, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength
            struct.pack_into("<H" if kind == 3 else "<I", tiff, entry + 8, 60000)
    return bytes(tiff)


def _webp() -> bytes:
    webp = _encoded("WEBP", lossless=True)
    assert webp[12:16] == b"VP8L"
    (bits,) = struct.unpack_from("<I", webp, 21)  # 14 bits width - 1, 14 bits height - 1, alpha, version
    struct.pack_into("<I", webp, 21, (bits & 0xF0000000) | 16382 | (16382 << 14))
    return bytes(webp)


def bombs() -> dict[str, bytes]:
    """File name → bytes."""
    return {
        "huge.png": _png(),
        "huge.jpg": _jpeg(),
        "huge-screen.gif": _gif_screen(),
        "huge-frame.gif": _gif_frame(),
        "big-frame.gif": _gif_frame(12000, 9000),  # 108 MP: under the 200 MP at which PIL refuses on its own
        "huge.tiff": _tiff(),
        "huge.webp": _webp(),
    }


if __name__ == "__main__":
    for name, data in bombs().items():
        (Path(sys.argv[1]) / name).write_bytes(data)
