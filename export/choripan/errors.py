"""The one exception class for user errors (bad arguments, unusable checkpoints or data), and how they are worded."""

from __future__ import annotations


class ExportError(Exception):
    """A problem the user can fix. The CLI prints it on one line and exits with status 2.

    `code` is one of the shared error codes (native/core/vocabulary.json), as Node and the core use them.
    """

    def __init__(self, message: str, code: str = "E_INVALID_ARGUMENT"):
        super().__init__(message)
        self.code = code


def first_line(error: BaseException) -> str:
    """The first line of an exception's message: library errors append tracebacks users cannot act on."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def counted(number: int, singular: str, plural: str | None = None) -> str:
    """`1 label`, `2 labels`; `plural` where adding an s is wrong (`class`, `classes`)."""
    return f"{number} {singular if number == 1 else plural or singular + 's'}"
