"""The served model's name, which the artifact's metadata carries: Node serves the model under it, in URL
paths (/v2/models/NAME) and in answers ("model": NAME). Plain Python: the command line checks it before torch
is imported."""

from __future__ import annotations

import re
from pathlib import Path

from .contract import VOCABULARY
from .errors import ExportError

NAME_RULE = VOCABULARY["modelName"]["rule"]
"""What a name may hold: what a URL path carries as it is, and what `choripan serve --model NAME=PATH`
takes (the vocabulary's modelName, which js/server/config.js reads too)."""
NAME_PATTERN = re.compile(VOCABULARY["modelName"]["pattern"])


def check_name(name: str) -> str:
    """`name`, if a served model can have it (NAME_RULE); an ExportError that says why not otherwise."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ExportError(f"{name!r} cannot be a model's name, which URLs carry (/v2/models/NAME): use {NAME_RULE}")
    return name


def name_from(path: Path | str) -> str:
    """A name from a file's: its stem, each run of other characters as one '-' (`my model.pt`: `my-model`);
    `model` when nothing is left."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(path).stem).lstrip("_.-").rstrip("-") or "model"
