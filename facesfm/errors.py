"""Errors that the CLI reports as one line naming the culprit (no traceback), and warnings
reported the same way (:func:`warn`)."""

import warnings


class FacesfmError(Exception):
    """A user-facing error: bad input, missing data, an unusable file."""


class InputError(FacesfmError):
    """A file, folder or option given by the user cannot be used."""


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM): raised like KeyboardInterrupt for SIGINT, so
    that every atomic write on the way out removes its temporary files."""


def warn(echo, msg: str) -> None:
    """A warning line through ``echo`` (the CLI's: ``warning: ...``), else a Python warning."""
    if echo is not None:
        echo(f"warning: {msg}")
    else:
        warnings.warn(msg, stacklevel=3)
