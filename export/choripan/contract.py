"""The facts choripan's layers share, as native/core/vocabulary.json states them.

The wheel cannot reach native/, so it carries a copy as package data (choripan/vocabulary.json, written
by scripts/vocabulary.js and checked against its source by `npm test`).
"""

from __future__ import annotations

import json
from importlib import resources

VOCABULARY = json.loads(resources.files(__package__).joinpath("vocabulary.json").read_text(encoding="utf-8"))

ARTIFACT = VOCABULARY["artifact"]
FORMATS = VOCABULARY["formats"]
ERROR_CODES = frozenset(error["code"] for error in VOCABULARY["errors"])
LIMITS = {limit["name"]: limit["value"] for limit in VOCABULARY["limits"]}
LIMIT_REFUSALS = {limit["name"]: limit["refusal"] for limit in VOCABULARY["limits"]}  # "at most 100 megapixels …"
OPTIONS = {option["name"]: option for option in VOCABULARY["options"]}
PREDICT_OPTIONS = {option["name"]: option for option in VOCABULARY["predictOptions"]}

MAX_PIXELS: int = LIMITS["maxPixels"]
MAX_ASPECT_RATIO: int = LIMITS["maxAspectRatio"]
MAX_BATCH: int = OPTIONS["maxBatch"]["max"]  # the largest maxBatch the runtime accepts
