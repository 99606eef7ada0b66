"""The one exception class for user errors (bad arguments, unusable checkpoints or data)."""


class ExportError(Exception):
    """A problem the user can fix. The CLI prints it on one line and exits with status 2."""
