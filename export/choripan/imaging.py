"""Decode policy and preprocessing: the Python half of the contract that native/core implements in C++.

Both halves use the same libtorch operations in the same order, so the same pixels give the same tensor
to the bit. The decode policy matches what sharp does with ``rotate().keepIccProfile()`` (js/decode.js).
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, TiffImagePlugin, UnidentifiedImageError

from .contract import ARTIFACT, FORMATS, LIMIT_REFUSALS, MAX_ASPECT_RATIO, MAX_PIXELS
from .errors import ExportError

SUPPORTED_FORMATS = tuple(f["policy"] for f in FORMATS)  # as PIL names them
INTERPOLATIONS = tuple(ARTIFACT["interpolations"])  # both antialiased, as torchvision's Resize(antialias=True)
# Larger images are refused before decoding, as js/decode.js does: 100 MP of RGBA is 400 MB decoded.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # PIL's own bomb check, at the same size (it errs at twice this)
COMPOSITE_BAND_PIXELS = 1 << 18
"""Longer side over shorter side. Beyond it the resized image alone would take hundreds of megabytes."""


@dataclass(frozen=True)
class DecodePolicy:
    """How encoded bytes become RGB pixels, identically in Python (PIL) and Node (sharp).

    Where PIL and libvips part ways by themselves, these rules choose; no field records them, so every
    artifact follows them, those exported before them too (docs/export.md says why each):

    - A GIF's first frame that reaches past the logical screen enlarges it, as PIL, libvips and browsers
      do, and the size limit counts the enlarged screen; where the first frame leaves the screen uncovered,
      the screen is transparent, whatever background colour the GIF names.
    - A grey or RGB PNG's colour key (tRNS) is transparency, matched against the samples as stored, as
      libpng matches it; a 16-bit RGB PNG with a colour key is refused (E_UNSUPPORTED_FORMAT).
    - TIFF samples are unsigned integers of at most 16 bits; others are refused (E_UNSUPPORTED_FORMAT).
    - No bytes at all are E_INVALID_ARGUMENT (nothing was sent), as in Node and over HTTP.
    """

    formats: tuple[str, ...] = SUPPORTED_FORMATS
    exif_orientation: str = "apply"  # rotate/flip as the EXIF Orientation tag says
    icc_profile: str = "ignore"  # pixel values as stored, no colour conversion (as PIL and training did)
    # Over `background`; the alpha channel is then dropped. A palette's transparency and a PNG's colour
    # key are alpha too.
    alpha: str = "composite"
    background: tuple[int, int, int] = (255, 255, 255)
    grayscale: str = "replicate"  # one grey channel copied to R, G and B
    high_bit_depth: str = "high_byte"  # 16-bit samples keep their most significant byte
    palette: str = "expand"  # to RGB, or RGBA when the palette has transparency
    # CMYK JPEGs: their samples as stored, converted to RGB with PIL's integer formula, which the native
    # core repeats (libvips would convert through an ICC profile instead). "reject" refuses them.
    cmyk: str = "convert"
    animation: str = "first_frame"  # GIF: the first frame, on its logical screen; TIFF: the first page

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side, centre-crop, scale to [0, 1], normalise per channel."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = INTERPOLATIONS[0]  # or any other of INTERPOLATIONS
    antialias: bool = True
    resize_rounding: str = "floor"  # longer side = floor(resize * long / short), as torchvision
    crop_offset: str = "round_half_even"  # top = round((height - crop) / 2), as torchvision's CenterCrop
    decode: DecodePolicy = field(default_factory=DecodePolicy)

    def __post_init__(self):
        if self.crop < 1 or self.resize < self.crop:
            raise ExportError(f"preprocessing needs 1 <= crop <= resize, got resize={self.resize} crop={self.crop}")
        if self.interpolation not in INTERPOLATIONS:
            raise ExportError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ExportError("preprocessing needs three means and three positive standard deviations")

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["mean"], doc["std"] = list(self.mean), list(self.std)
        doc["decode"] = self.decode.to_json()
        doc["decode"]["background"] = list(self.decode.background)
        doc["decode"]["formats"] = list(self.decode.formats)
        return doc

    @classmethod
    def from_json(cls, doc: dict) -> Preprocessing:
        # An artifact exported before its metadata named formats or CMYK keeps the policy it had then, as
        # in Node (js/decode.js).
        decode = {**ARTIFACT["decodeBeforePolicy"], **doc.get("decode", {})}
        if "background" in decode:
            decode["background"] = tuple(decode["background"])
        decode["formats"] = tuple(decode["formats"])
        fields = {k: v for k, v in doc.items() if k != "decode"}
        fields["mean"], fields["std"] = tuple(fields["mean"]), tuple(fields["std"])
        return cls(**fields, decode=DecodePolicy(**decode))


TF_STYLE = {"mean": (127 / 255,) * 3, "std": (128 / 255,) * 3}
"""(x·255 − 127) / 128 written as (x − mean) / std: what TensorFlow-trained EfficientNet-Lite weights expect."""


def decode(source: bytes | str | Path, policy: DecodePolicy | None = None) -> np.ndarray:
    """Encoded image → uint8 array of shape (height, width, 3 or 4), following `policy`."""
    policy = policy or DecodePolicy()
    name = str(source) if isinstance(source, (str, Path)) else "image"
    try:
        data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    except OSError as error:
        raise ExportError(f"cannot read {name}: {error.strerror}", "E_DECODE") from error
    if not data:
        raise ExportError(f"{name} is empty: there are no image bytes", "E_INVALID_ARGUMENT")
    try:
        _refuse_tiff_samples(data, name)  # before PIL, which cannot open float RGB at all
        with warnings.catch_warnings():  # past MAX_PIXELS PIL warns; the check below refuses it instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        if image.format not in policy.formats:
            raise ExportError(
                f"{name} is {image.format}; supported formats are {', '.join(policy.formats)}", "E_UNSUPPORTED_FORMAT"
            )
        if image.mode == "CMYK" and (policy.cmyk != "convert" or image.format != "JPEG"):
            raise ExportError(f"{name} is a CMYK {image.format}; convert it to RGB first", "E_UNSUPPORTED_FORMAT")
        key_bits = _colour_key_bits(image, data, name)
        # PIL has already enlarged a GIF's screen to hold its first frame; the frame is the first tile.
        frame = image.tile[0][1] if image.format == "GIF" and image.tile else None
        if frame is not None and not (frame[2] > frame[0] and frame[3] > frame[1]):
            raise ExportError(f"{name}: the GIF's first frame is empty", "E_DECODE")
        if image.width * image.height > MAX_PIXELS:
            raise ExportError(
                f"{name} is {image.width}x{image.height}; {LIMIT_REFUSALS['maxPixels']}",
                "E_TOO_LARGE",
            )
        image.load()
        if policy.exif_orientation == "apply":
            image = ImageOps.exif_transpose(image)  # keeps info, the colour key with it; a GIF carries no EXIF
        pixels = _keyed(image, key_bits) if key_bits else _to_rgb_or_rgba(image)
        return _transparent_around(pixels, frame) if frame is not None else pixels
    except ExportError:
        raise
    except Image.DecompressionBombError as error:
        raise ExportError(f"{name} is too large to decode; {LIMIT_REFUSALS['maxPixels']}", "E_TOO_LARGE") from error
    except UnidentifiedImageError as error:  # PIL's message names its own stream object: say what it means
        known = f"a known format ({', '.join(policy.formats)})"
        raise ExportError(f"{name} does not decode: it is not an image of {known}", "E_DECODE") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ExportError(f"{name} does not decode as an image: {_reason(error)}", "E_DECODE") from error


_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _reason(error: BaseException) -> str:
    """PIL's message without the reprs of its own objects (`<_io.BytesIO object at 0x…>`), which say nothing."""
    return _OBJECT_REPR.sub("", str(error)).strip() or "it is damaged"


def _refuse_tiff_samples(data: bytes, name: str) -> None:
    """A TIFF's first page must hold unsigned integer samples of 16 bits at most, as js/decode.js checks."""
    if data[:4] not in (b"II*\0", b"MM\0*"):
        return
    try:
        directory = TiffImagePlugin.ImageFileDirectory_v2(data[:8])
        stream = io.BytesIO(data)
        stream.seek(directory.next)
        directory.load(stream)
    except (OSError, SyntaxError, ValueError, IndexError, KeyError, TypeError, struct.error):
        return  # PIL's own reading of the file says what is wrong with it

    def first(tag: int, default: int) -> int:  # libtiff takes the first value for every sample
        values = directory.get(tag, (default,))
        values = values if isinstance(values, tuple) else (values,)
        return values[0] if values else default

    if first(339, 1) != 1 or first(258, 1) > 16:  # SampleFormat (1: unsigned), BitsPerSample
        raise ExportError(
            f"{name} is a TIFF of float, signed or 32-bit samples; convert it to 8 or 16 bits", "E_UNSUPPORTED_FORMAT"
        )


def _colour_key_bits(image: Image.Image, data: bytes, name: str) -> int:
    """The bit depth of a grey or RGB PNG with a colour key (tRNS); 0 for every other image."""
    if image.format != "PNG" or image.mode not in ("1", "L", "I", "I;16", "RGB") or "transparency" not in image.info:
        return 0
    bits = data[24]  # IHDR, the first chunk: width, height, then the bit depth
    if image.mode == "RGB" and bits == 16:
        raise ExportError(
            f"{name} is a 16-bit RGB PNG with a colour key (tRNS), which PIL reads at 8 bits, where the key cannot"
            " be matched; convert it to RGBA",
            "E_UNSUPPORTED_FORMAT",
        )
    return bits


def _keyed(image: Image.Image, bits: int) -> np.ndarray:
    """A grey or RGB PNG's pixels with alpha from its colour key, matched as libpng matches it: against the
    samples as stored. PIL has scaled 1- to 4-bit grey to 8 bits, so the key is scaled alike."""
    key = image.info["transparency"]
    if image.mode == "1":
        image = image.convert("L")  # PIL has already made the key 0 or 255
    elif image.mode == "L":
        key *= 255 // ((1 << bits) - 1)
    samples = np.asarray(image)
    if samples.ndim == 2:
        opaque = samples != key
        grey = (samples.astype(np.uint32) >> 8).astype(np.uint8) if bits == 16 else samples
        colour = np.repeat(grey[..., None], 3, axis=2)
    else:
        opaque = (samples != np.asarray(key)).any(axis=2)
        colour = samples
    return np.dstack([colour, opaque.astype(np.uint8) * 255])


def _transparent_around(pixels: np.ndarray, frame: tuple[int, int, int, int]) -> np.ndarray:
    """Transparent wherever a GIF's first frame (left, top, right, bottom) leaves its screen uncovered."""
    height, width = pixels.shape[:2]
    left, top, right, bottom = frame
    if (left, top, right, bottom) == (0, 0, width, height):
        return pixels
    if pixels.shape[2] == 3:
        pixels = np.dstack([pixels, np.full((height, width), 255, np.uint8)])
    alpha = pixels[..., 3]  # a view: writing it writes the pixels
    alpha[:top] = alpha[bottom:] = 0
    alpha[:, :left] = alpha[:, right:] = 0
    return pixels


def _to_rgb_or_rgba(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        grey = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)  # a fresh, writable array
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
    elif mode not in ("RGB", "RGBA"):
        image = image.convert("RGB")
    return np.array(image)  # a writable copy: torch.from_numpy shares it


def preprocess(pixels: np.ndarray | torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """uint8 (height, width, channels) → float32 (3, crop, crop). Mirrors native/core/preprocess.cc."""
    if isinstance(pixels, np.ndarray):
        x = torch.from_numpy(pixels if pixels.flags.writeable else pixels.copy())
    else:
        x = pixels
    if x.dtype != torch.uint8 or x.dim() != 3 or x.shape[2] not in (1, 2, 3, 4):
        raise ExportError(f"expected uint8 pixels of shape (height, width, 1-4), got {tuple(x.shape)} {x.dtype}")
    height, width, channels = x.shape
    if height == 0 or width == 0:
        raise ExportError("the image has no pixels")
    short, long = min(height, width), max(height, width)
    if long > MAX_ASPECT_RATIO * short:
        raise ExportError(f"the image is {width}x{height}: {LIMIT_REFUSALS['maxAspectRatio']}")
    colours = 1 if channels <= 2 else 3
    if channels in (1, 3):
        x = x.expand(height, width, 3)
    else:
        # Over the background, a band of rows at a time, as native/core does (memory, not numbers).
        pixels, x = x, torch.empty(height, width, 3, dtype=torch.uint8)
        background = torch.tensor(spec.decode.background, dtype=torch.int32)
        band = max(1, COMPOSITE_BAND_PIXELS // width)
        for row in range(0, height, band):
            chunk = pixels[row : row + band]
            colour = chunk[..., :colours].expand(len(chunk), width, 3).to(torch.int32)
            alpha = chunk[..., colours:].to(torch.int32)
            x[row : row + band] = (colour * alpha + background * (255 - alpha) + 127).div(255, rounding_mode="floor")
    x = x.contiguous().permute(2, 0, 1).unsqueeze(0)

    new_long = int(spec.resize * long / short)
    size = (spec.resize, new_long) if height <= width else (new_long, spec.resize)
    x = F.interpolate(x, size=size, mode=spec.interpolation, align_corners=False, antialias=True)
    top, left = round((size[0] - spec.crop) / 2), round((size[1] - spec.crop) / 2)
    x = x[0, :, top : top + spec.crop, left : left + spec.crop]

    mean = torch.tensor(spec.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(3, 1, 1)
    return x.to(torch.float32).div(255).sub(mean).div(std).contiguous()


def load_batch(paths: list[Path], spec: Preprocessing) -> torch.Tensor:
    """Decode and preprocess files into one float32 NCHW batch."""
    return torch.stack([preprocess(decode(path, spec.decode), spec) for path in paths])
