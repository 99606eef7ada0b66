"""The one exception class for user errors (bad arguments, unusable checkpoints or data)."""


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
