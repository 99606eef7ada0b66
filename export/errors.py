"""The one exception class for user errors (bad arguments, unusable checkpoints or data)."""


class ExportError(Exception):
    """A problem the user can fix. The CLI prints it on one line and exits with status 2."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message: library errors append tracebacks users cannot act on."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
