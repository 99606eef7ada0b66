"""Class names from the command line or a file."""

from __future__ import annotations

from pathlib import Path

from .errors import ExportError, counted


def parse_labels(labels: str | None = None, labels_file: Path | None = None) -> list[str]:
    """`a,b,c` or a file with one label per line (blank lines ignored)."""
    if (labels is None) == (labels_file is None):
        raise ExportError("give the class names with exactly one of --labels a,b,… or --labels-file FILE")
    if labels_file is not None:
        try:
            text = Path(labels_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
            raise ExportError(f"cannot read labels from {labels_file}: {reason}") from error
        names = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        names = [name.strip() for name in labels.split(",")]
    if not names or any(not name for name in names):
        raise ExportError("labels must be non-empty names")
    return names


def check_count(labels: list[str], classes: int, where: str) -> None:
    if len(labels) != classes:
        given = f"{counted(len(labels), 'label')} {'was' if len(labels) == 1 else 'were'} given"
        raise ExportError(f"{where} has {counted(classes, 'class', 'classes')} but {given}")
