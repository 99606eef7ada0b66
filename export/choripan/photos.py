"""Real photos shipped by scikit-image: the fixed set that verification and golden files use."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}  # the photos a folder holds, for training and calibration

REFERENCE_PHOTOS = (
    "chelsea.png",  # a cat; RGB with an ICC profile and EXIF
    "coffee.png",  # an espresso
    "rocket.jpg",  # a missile; JPEG with an ICC profile
    "motorcycle_left.png",
    "astronaut.png",
    "hubble_deep_field.jpg",
    "camera.png",  # greyscale
    "horse.png",  # RGBA: exercises alpha compositing
)


def data_dir() -> Path:
    return Path(str(resources.files("skimage") / "data"))


def reference_photos() -> list[Path]:
    return [data_dir() / name for name in REFERENCE_PHOTOS]
